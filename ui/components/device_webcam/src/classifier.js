// The twin of emotion/classifier.py: probabilities over EMOTIONS for 48x48 grey crops, with the
// emotion runtime the server loaded (its batch-1 copy), the model rescaling the 0-255 values itself.
import { FACE_SIZE } from "./labels.js";

export class EmotionClassifier {
  constructor(model) {
    this.model = model;
  }

  // crops: [{data: Uint8Array(48 * 48)}] -> [Float32Array(7)], each summing to 1.
  async predictProba(crops) {
    const rows = [];
    for (const crop of crops) {
      const [output] = await this.model.run(Float32Array.from(crop.data), [1, FACE_SIZE, FACE_SIZE, 1]);
      const probabilities = Float32Array.from(output);
      const total = probabilities.reduce((a, b) => a + b, 0);
      rows.push(probabilities.map((value) => value / total));
    }
    return rows;
  }
}
