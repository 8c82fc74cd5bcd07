// The twin of emotion/faces/blazeface.py: MediaPipe's BlazeFace (short range) on the whole
// picture, its anchors decoded and merged by weighted suppression, then each face looked at again
// upright in its own window (a second and, for an unsure face, a mirrored third look), and its
// square placed by the eyes as FER2013 frames its faces. The constants are the engine's.

import { mirrored, picture, pyRound, resizeArea, shrink, squareBox, turnedSquare } from "./common.js";

export const RAW_SCORE_LIMIT = 80.0;
export const SUPPRESSION_IOU = 0.3;
export const MIN_INPUT_FACE = 24;
export const INPUT_STEP = 16;
export const CLOSE_UP_MARGIN = 0.3;
export const REFINE_SCALE = 2.0;
export const REFINE_INPUT_SIZE = 128;
export const REFINE_CENTER_TOLERANCE = 0.15;
export const SURE_SCORE = 0.7;
export const CONFIRM_MARGIN = 0.12;
export const FER_FRAMING = { eyesY: 0.39, eyeDistance: 0.365, boxSide: 0.865 };
export const SHORT_RANGE = { inputSize: 128, strides: [8, 16, 16, 16], interpolatedScaleAspectRatio: 1.0 };

// The anchors' centres for a (height, width) input: Float32Array of (x, y) pairs, in output order.
export function generateAnchors(spec, height, width) {
  const centers = [];
  let layer = 0;
  while (layer < spec.strides.length) {
    const stride = spec.strides[layer];
    let sameStride = 0;
    while (layer + sameStride < spec.strides.length && spec.strides[layer + sameStride] === stride) sameStride += 1;
    const perCell = sameStride * (spec.interpolatedScaleAspectRatio === 1.0 ? 2 : 1);
    const rows = Math.ceil(height / stride);
    const columns = Math.ceil(width / stride);
    for (let y = 0; y < rows; y += 1) {
      for (let x = 0; x < columns; x += 1) {
        for (let copy = 0; copy < perCell; copy += 1) {
          centers.push(((x + 0.5) * width) / columns, ((y + 0.5) * height) / rows);
        }
      }
    }
    layer += sameStride;
  }
  return Float32Array.from(centers);
}

// Raw outputs -> [{points: Float32Array(16) (x_min, y_min, x_max, y_max, six keypoints), score}].
export function decode(regressors, logits, anchors, minScore) {
  const found = [];
  for (let anchor = 0; anchor < logits.length; anchor += 1) {
    const logit = Math.min(Math.max(logits[anchor], -RAW_SCORE_LIMIT), RAW_SCORE_LIMIT);
    const score = 1 / (1 + Math.exp(-logit));
    if (score < minScore) continue;
    const raw = regressors.subarray(anchor * 16, anchor * 16 + 16);
    const ax = anchors[2 * anchor];
    const ay = anchors[2 * anchor + 1];
    const halfWidth = raw[2] / 2;
    const halfHeight = raw[3] / 2;
    if (!(halfWidth > 0 && halfHeight > 0)) continue;
    const points = new Float32Array(16);
    points[0] = raw[0] + ax - halfWidth;
    points[1] = raw[1] + ay - halfHeight;
    points[2] = raw[0] + ax + halfWidth;
    points[3] = raw[1] + ay + halfHeight;
    for (let point = 2; point < 8; point += 1) {
      points[2 * point] = raw[2 * point] + ax;
      points[2 * point + 1] = raw[2 * point + 1] + ay;
    }
    found.push({ points, score: Math.fround(score) });
  }
  return found;
}

// MediaPipe's weighted non-maximum suppression: each face the score-weighted mean of the
// detections overlapping its best one by more than iouThreshold, keeping the best score.
export function weightedSuppression(detections, iouThreshold = SUPPRESSION_IOU) {
  let remaining = detections
    .map((detection, index) => ({ ...detection, index }))
    .sort((a, b) => b.score - a.score || a.index - b.index);
  const faces = [];
  const area = (p) => (p[2] - p[0]) * (p[3] - p[1]);
  while (remaining.length) {
    const best = remaining[0].points;
    const merged = [];
    const rest = [];
    remaining.forEach((detection, position) => {
      const p = detection.points;
      const width = Math.max(Math.min(best[2], p[2]) - Math.max(best[0], p[0]), 0);
      const height = Math.max(Math.min(best[3], p[3]) - Math.max(best[1], p[1]), 0);
      const intersection = width * height;
      const iou = intersection / Math.max(area(best) + area(p) - intersection, 1e-12);
      (position === 0 || iou > iouThreshold ? merged : rest).push(detection);
    });
    const mean = new Float32Array(16);
    let total = 0;
    for (const { points, score } of merged) {
      total += score;
      for (let value = 0; value < 16; value += 1) mean[value] += score * points[value];
    }
    for (let value = 0; value < 16; value += 1) mean[value] /= total;
    faces.push({ points: mean, score: remaining[0].score });
    remaining = rest;
  }
  return faces;
}

// The BlazeFace models by input shape, compiled once each; `load(height, width)` gives one.
export class BlazeFace {
  constructor(load) {
    this.load = load;
    this.models = new Map();
    this.anchors = new Map();
  }

  // A grey picture whose sides are multiples of INPUT_STEP -> its faces in its pixels, best first.
  async run(image, minScore) {
    const key = `${image.height}x${image.width}`;
    if (!this.models.has(key)) this.models.set(key, await this.load(image.height, image.width));
    if (!this.anchors.has(key)) this.anchors.set(key, generateAnchors(SHORT_RANGE, image.height, image.width));
    const tensor = new Float32Array(image.data.length * 3);
    for (let pixel = 0; pixel < image.data.length; pixel += 1) {
      const value = image.data[pixel] / 127.5 - 1;
      tensor[3 * pixel] = value;
      tensor[3 * pixel + 1] = value;
      tensor[3 * pixel + 2] = value;
    }
    const outputs = await this.models.get(key).run(tensor, [1, image.height, image.width, 3]);
    const [regressors, logits] = outputs[0].length > outputs[1].length ? outputs : [outputs[1], outputs[0]];
    return weightedSuppression(decode(regressors, logits, this.anchors.get(key), minScore));
  }
}

// The input shape (height, width) for a picture of this size shown at `scale` with a black
// border of `margin` times its longer side, padded to multiples of INPUT_STEP: the server makes
// the model file for it.
export function inputShape(height, width, scale, margin = 0) {
  const fitted = [Math.max(1, pyRound(width * scale)), Math.max(1, pyRound(height * scale))];
  const border = pyRound(margin * Math.max(...fitted));
  const side = (length) => Math.max(SHORT_RANGE.inputSize, Math.ceil((length + 2 * border) / INPUT_STEP) * INPUT_STEP);
  return { fitted, border, height: side(fitted[1]), width: side(fitted[0]) };
}

// Faces in the picture shown whole at `scale` with a black border of `margin` times its longer
// side all round, padded with black on the right and below to multiples of INPUT_STEP.
async function detect(model, gray, scale, minScore, margin = 0) {
  const { fitted, border, height, width } = inputShape(gray.height, gray.width, scale, margin);
  const scaled = scale < 1 ? shrink(gray, fitted[0], fitted[1]) : resizeArea(gray, fitted[0], fitted[1]);
  const input = picture(width, height);
  for (let row = 0; row < scaled.height; row += 1) {
    input.data.set(scaled.data.subarray(row * scaled.width, (row + 1) * scaled.width), (row + border) * width + border);
  }
  const factorX = fitted[0] / gray.width;
  const factorY = fitted[1] / gray.height;
  return (await model.run(input, minScore)).map(({ points, score }) => ({
    points: points.map((value, index) => (value - border) / (index % 2 === 0 ? factorX : factorY)),
    score,
  }));
}

export function keypointFrame(face) {
  const p = face.points;
  const right = [p[4], p[5]];
  const left = [p[6], p[7]];
  const line = [left[0] - right[0], left[1] - right[1]];
  return {
    eyesCenter: [(right[0] + left[0]) / 2, (right[1] + left[1]) / 2],
    eyeDistance: Math.hypot(line[0], line[1]),
    angle: (Math.atan2(line[1], line[0]) * 180) / Math.PI,
    boxSide: (p[2] - p[0] + p[3] - p[1]) / 2,
  };
}

// The (centre, side) of the square FER2013 would have cut around this face, before it is turned.
export function ferSquare(frame) {
  const side = (frame.eyeDistance / FER_FRAMING.eyeDistance + frame.boxSide / FER_FRAMING.boxSide) / 2;
  const cos = Math.cos((frame.angle * Math.PI) / 180);
  const sin = Math.sin((frame.angle * Math.PI) / 180);
  const down = (0.5 - FER_FRAMING.eyesY) * side;
  return [[frame.eyesCenter[0] - sin * down, frame.eyesCenter[1] + cos * down], side];
}

async function centred(model, window, minScore) {
  const size = window.width;
  const faces = await model.run(window, minScore);
  return faces
    .map(({ points, score }) => ({ points: points.map((value) => value / size), score }))
    .filter(({ points }) => {
      const x = (points[0] + points[2]) / 2;
      const y = (points[1] + points[3]) / 2;
      return Math.abs(x - 0.5) < REFINE_CENTER_TOLERANCE && Math.abs(y - 0.5) < REFINE_CENTER_TOLERANCE;
    });
}

// The face found again in its own upright window; null when an unsure face is not confirmed.
async function refined(model, gray, face, minScore) {
  const frame = keypointFrame(face);
  const [center, side] = ferSquare(frame);
  const windowSide = REFINE_SCALE * side;
  const window = turnedSquare(gray, center, windowSide, frame.angle, REFINE_INPUT_SIZE);
  const found = await centred(model, window, minScore);
  if (face.score < SURE_SCORE) {
    const mirror = await centred(model, mirrored(window), minScore);
    const looks = [face.score, ...[found, mirror].map((faces) => Math.max(0, ...faces.map(({ score }) => score)))];
    if (looks.reduce((a, b) => a + b, 0) / looks.length < minScore + CONFIRM_MARGIN) return null;
  }
  if (!found.length) return face;
  const best = found.reduce((a, b) => (b.score > a.score ? b : a));
  const cos = Math.cos((frame.angle * Math.PI) / 180);
  const sin = Math.sin((frame.angle * Math.PI) / 180);
  const turned = new Float32Array(16);
  for (let point = 0; point < 8; point += 1) {
    const dx = (best.points[2 * point] - 0.5) * windowSide;
    const dy = (best.points[2 * point + 1] - 0.5) * windowSide;
    turned[2 * point] = center[0] + dx * cos - dy * sin;
    turned[2 * point + 1] = center[1] + dx * sin + dy * cos;
  }
  const boxWidth = (best.points[2] - best.points[0]) * windowSide;
  const boxHeight = (best.points[3] - best.points[1]) * windowSide;
  const boxX = (turned[0] + turned[2]) / 2;
  const boxY = (turned[1] + turned[3]) / 2;
  const points = Float32Array.from(turned);
  points[0] = boxX - boxWidth / 2;
  points[1] = boxY - boxHeight / 2;
  points[2] = boxX + boxWidth / 2;
  points[3] = boxY + boxHeight / 2;
  return { points, score: face.score };
}

export function minFace(settings, height, width) {
  return Math.max(settings.minSizeFraction * Math.min(height, width), settings.minFacePixels);
}

async function refinedAll(model, gray, found, minScore) {
  const faces = [];
  for (const face of found) {
    const again = await refined(model, gray, face, minScore);
    if (again) faces.push(again);
  }
  return faces;
}

// The scales of the looks at the whole picture: the first, and the close-up where that one
// leaves faces larger than the model's own window (null where it does not).
export function lookScales(height, width, settings) {
  const least = minFace(settings, height, width);
  let scale = Math.max(SHORT_RANGE.inputSize / Math.min(height, width), MIN_INPUT_FACE / least);
  scale = Math.min(scale, settings.maxDetectionSide / Math.max(height, width));
  const closeUp = SHORT_RANGE.inputSize / (Math.max(height, width) * (1 + 2 * CLOSE_UP_MARGIN));
  return { scale, closeUp: scale > closeUp ? closeUp : null };
}

// Faces with their keypoints: a look at the whole picture and, where it finds none (a face
// larger than the model's window, filling the picture), a close-up look at it whole with a
// black border; then one upright look at each face.
export async function locate(model, gray, settings) {
  const { scale, closeUp } = lookScales(gray.height, gray.width, settings);
  const faces = await refinedAll(model, gray, await detect(model, gray, scale, settings.minScore), settings.minScore);
  if (faces.length || closeUp === null) return faces;
  const closeUps = await detect(model, gray, closeUp, settings.minScore, CLOSE_UP_MARGIN);
  return refinedAll(model, gray, closeUps, settings.minScore);
}

// Faces in a grey picture: each one's square placed by its eyes and box, turned as its eyes are.
export async function find(model, gray, settings) {
  const least = minFace(settings, gray.height, gray.width);
  const detections = [];
  for (const face of await locate(model, gray, settings)) {
    const frame = keypointFrame(face);
    const [center, side] = ferSquare(frame);
    if (side < least) continue;
    const box = squareBox(center[0] - side / 2, center[1] - side / 2, side, side, gray.width, gray.height, 0);
    detections.push({ box, angle: Math.round(frame.angle * 10) / 10 });
  }
  return detections;
}
