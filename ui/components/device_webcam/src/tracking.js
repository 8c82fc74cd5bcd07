// The twin of emotion/tracking.py: faces followed through the frames with stable ids. The face
// finder searches the whole frame on every Nth frame; in between each face is followed by
// matching its last detected picture near its box; probabilities and boxes are smoothed.
import { cropFaces, blockAverage, region } from "./faces/common.js";

export const TEMPLATE_SIDE = 32;
export const TRACK_SEARCH_SCALE = 2.0;
export const MIN_TEMPLATE_CONTRAST = 2.0;
export const TRACK_MIN_MATCH = 0.6;
export const MAX_UNCONFIRMED_DETECTIONS = 3;

export function iou(a, b) {
  const left = Math.max(a[0], b[0]);
  const top = Math.max(a[1], b[1]);
  const right = Math.min(a[0] + a[2], b[0] + b[2]);
  const bottom = Math.min(a[1] + a[3], b[1] + b[3]);
  const intersection = Math.max(right - left, 0) * Math.max(bottom - top, 0);
  const union = a[2] * a[3] + b[2] * b[3] - intersection;
  return union > 0 ? intersection / union : 0;
}

// Greedy one-to-one matching, best overlap first: [[track index, detection index]].
export function matchBoxes(trackBoxes, detections, threshold) {
  const overlaps = trackBoxes.map((track) => detections.map((detection) => iou(track, detection)));
  const pairs = [];
  for (;;) {
    let best = -1;
    let at = null;
    overlaps.forEach((row, t) => row.forEach((value, d) => {
      if (value > best) [best, at] = [value, [t, d]];
    }));
    if (at === null || best < threshold) return pairs;
    pairs.push(at);
    overlaps[at[0]].fill(-1);
    overlaps.forEach((row) => { row[at[1]] = -1; });
  }
}

function std(image) {
  let sum = 0;
  let squares = 0;
  for (const value of image.data) {
    sum += value;
    squares += value * value;
  }
  const mean = sum / image.data.length;
  return Math.sqrt(Math.max(squares / image.data.length - mean * mean, 0));
}

// OpenCV's matchTemplate(TM_CCOEFF_NORMED) followed by minMaxLoc's maximum: [score, x, y].
export function bestMatch(search, template) {
  const tw = template.width;
  const th = template.height;
  const n = tw * th;
  let templateSum = 0;
  for (const value of template.data) templateSum += value;
  const templateMean = templateSum / n;
  const centred = new Float64Array(n);
  let templateNorm = 0;
  template.data.forEach((value, index) => {
    centred[index] = value - templateMean;
    templateNorm += centred[index] * centred[index];
  });
  let best = [-Infinity, 0, 0];
  for (let y = 0; y <= search.height - th; y += 1) {
    for (let x = 0; x <= search.width - tw; x += 1) {
      let sum = 0;
      let squares = 0;
      let cross = 0;
      for (let row = 0; row < th; row += 1) {
        const offset = (y + row) * search.width + x;
        const templateOffset = row * tw;
        for (let column = 0; column < tw; column += 1) {
          const value = search.data[offset + column];
          sum += value;
          squares += value * value;
          cross += value * centred[templateOffset + column];
        }
      }
      const windowNorm = squares - (sum * sum) / n;
      const denominator = Math.sqrt(Math.max(windowNorm, 0) * templateNorm);
      const score = denominator > 1e-6 ? cross / denominator : 0;
      if (score > best[0]) best = [score, x, y];
    }
  }
  return best;
}

export class FaceTracker {
  constructor(classifier, settings, detector, timer = { time: async (_stage, work) => work() }) {
    this.classifier = classifier;
    this.settings = settings;
    this.detector = detector; // grey picture -> [{box, angle}], largest first
    this.timer = timer;
    this.reset();
  }

  reset() {
    this.tracks = [];
    this.nextId = 1;
    this.frameIndex = 0;
    this.frameShape = "";
  }

  // The next grey frame -> the faces in view, ordered by id: [{id, box, probabilities}].
  async update(gray) {
    const shape = `${gray.width}x${gray.height}`;
    if (shape !== this.frameShape) {
      this.tracks = [];
      this.frameShape = shape;
    }
    const faces = await this.track(gray);
    this.frameIndex += 1;
    return faces;
  }

  async track(gray) {
    const settings = this.settings;
    let found;
    if (this.frameIndex % settings.detectEvery === 0) {
      const detections = (await this.timer.time("detect", () => this.detector(gray))).slice(0, settings.maxFaces);
      this.updateTracks(gray, detections);
      found = this.tracks.filter((track) => track.lastDetected === this.frameIndex);
    } else {
      found = await this.timer.time("follow", () => this.tracks.filter((track) => this.follow(gray, track)));
      this.dropLostTracks();
    }
    const reading = this.frameIndex % settings.classifyEvery === 0;
    const read = found.filter((track) => reading || track.probabilities === null);
    if (read.length) {
      const detections = read.map((track) => ({ box: roundedBox(track, gray.width, gray.height), angle: track.angle }));
      const crops = await this.timer.time("crop", () => cropFaces(gray, detections));
      const probabilities = await this.timer.time("classify", () => this.classifier.predictProba(crops));
      const kept = settings.smoothing ** settings.classifyEvery;
      read.forEach((track, index) => {
        const fresh = probabilities[index];
        track.probabilities = track.probabilities === null
          ? Float32Array.from(fresh)
          : track.probabilities.map((old, k) => kept * old + (1 - kept) * fresh[k]);
      });
    }
    return this.tracks
      .filter((track) => track.probabilities !== null)
      .map((track) => ({ id: track.id, box: roundedBox(track, gray.width, gray.height), probabilities: track.probabilities }));
  }

  follow(gray, track) {
    if (track.template === null) return false;
    const [x, y, w, h] = track.box;
    const margin = ((TRACK_SEARCH_SCALE - 1) / 2) * Math.max(w, h);
    const left = Math.trunc(Math.max(0, x - margin));
    const top = Math.trunc(Math.max(0, y - margin));
    const right = Math.trunc(Math.min(gray.width, x + w + margin));
    const bottom = Math.trunc(Math.min(gray.height, y + h + margin));
    if (right <= left || bottom <= top) return false;
    const block = track.templateBlock;
    const search = blockAverage(region(gray, left, top, right, bottom), block);
    if (search.height < track.template.height || search.width < track.template.width) return false;
    const [score, bestX, bestY] = bestMatch(search, track.template);
    if (score < TRACK_MIN_MATCH) return false;
    const side = track.templateSide;
    this.move(track, [left + bestX * block, top + bestY * block, side, side]);
    return true;
  }

  move(track, box) {
    const kept = this.settings.boxSmoothing;
    track.box = track.box.map((value, index) => kept * value + (1 - kept) * box[index]);
    track.lastSeen = this.frameIndex;
  }

  detected(track, gray, detection) {
    this.move(track, detection.box);
    const kept = this.settings.boxSmoothing;
    const turn = ((((detection.angle - track.angle + 180) % 360) + 360) % 360) - 180;
    track.angle = ((((track.angle + (1 - kept) * turn + 180) % 360) + 360) % 360) - 180;
    track.lastDetected = this.frameIndex;
    const [x, y, w, h] = detection.box;
    const side = Math.max(w, h);
    const block = Math.max(1, Math.round(side / TEMPLATE_SIDE));
    const patch = region(gray, Math.max(0, x), Math.max(0, y), Math.min(gray.width, x + w), Math.min(gray.height, y + h));
    const template = blockAverage(patch, block);
    track.template = null;
    if (template.data.length && std(template) >= MIN_TEMPLATE_CONTRAST) {
      track.template = template;
      track.templateSide = side;
      track.templateBlock = block;
    }
  }

  dropLostTracks() {
    const settings = this.settings;
    const unconfirmedLimit = Math.max(settings.maxMissedFrames, MAX_UNCONFIRMED_DETECTIONS * settings.detectEvery);
    this.tracks = this.tracks.filter(
      (track) => this.frameIndex - track.lastSeen <= settings.maxMissedFrames
        && this.frameIndex - track.lastDetected <= unconfirmedLimit,
    );
  }

  updateTracks(gray, detections) {
    const settings = this.settings;
    const matched = new Set();
    const pairs = matchBoxes(this.tracks.map((track) => track.box), detections.map((d) => d.box), settings.iouThreshold);
    for (const [trackIndex, detectionIndex] of pairs) {
      this.detected(this.tracks[trackIndex], gray, detections[detectionIndex]);
      matched.add(detectionIndex);
    }
    this.dropLostTracks();
    detections.forEach((detection, index) => {
      if (matched.has(index) || this.tracks.length >= settings.maxFaces) return;
      const track = {
        id: this.nextId,
        box: [...detection.box],
        probabilities: null,
        lastDetected: -1,
        lastSeen: -1,
        template: null,
        templateSide: 0,
        templateBlock: 1,
        angle: detection.angle,
      };
      this.detected(track, gray, detection);
      this.tracks.push(track);
      this.nextId += 1;
    });
  }
}

// numpy's rint (halves to even) then clipped into the frame, as _Track.rounded_box.
function rint(value) {
  const floor = Math.floor(value);
  const rest = value - floor;
  if (rest !== 0.5) return Math.round(value);
  return floor % 2 === 0 ? floor : floor + 1;
}

export function roundedBox(track, width, height) {
  let [x, y, w, h] = track.box.map(rint);
  x = Math.min(Math.max(x, 0), width - 1);
  y = Math.min(Math.max(y, 0), height - 1);
  return [x, y, Math.max(1, Math.min(w, width - x)), Math.max(1, Math.min(h, height - y))];
}
