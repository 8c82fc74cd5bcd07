// The twin of emotion/faces/__init__.py: the faces of a grey picture, largest first.
import { find } from "./blazeface.js";

export const MIN_IMAGE_SIDE = 8; // pixels; no face is sought in a smaller picture

export async function detectFaces(model, gray, settings) {
  if (Math.min(gray.width, gray.height) < MIN_IMAGE_SIDE) return [];
  const detections = await find(model, gray, settings);
  return detections.sort(
    (a, b) => b.box[2] * b.box[3] - a.box[2] * a.box[3] || a.box[1] - b.box[1] || a.box[0] - b.box[0],
  );
}
