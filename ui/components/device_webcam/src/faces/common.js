// The twin of emotion/faces/common.py: the grey picture, averaging down, the square box and the
// face crops. A picture is {data: Uint8Array (height * width), width, height}, row by row.

import { FACE_SIZE } from "../labels.js";

export function picture(width, height, data = new Uint8Array(width * height)) {
  return { data, width, height };
}

// Python's round(): halves to even, as the engine rounds its boxes and sizes.
export function pyRound(value) {
  const floor = Math.floor(value);
  const rest = value - floor;
  if (rest !== 0.5) return Math.round(value);
  return floor % 2 === 0 ? floor : floor + 1;
}

// RGBA (a canvas's ImageData) -> grey, as OpenCV's COLOR_RGB2GRAY: BT.601 weights in 14-bit fixed point.
export function toGray(rgba, width, height) {
  const gray = new Uint8Array(width * height);
  for (let pixel = 0, at = 0; pixel < gray.length; pixel += 1, at += 4) {
    gray[pixel] = (rgba[at] * 4899 + rgba[at + 1] * 9617 + rgba[at + 2] * 1868 + 8192) >> 14;
  }
  return picture(width, height, gray);
}

export function region(image, left, top, right, bottom) {
  const width = right - left;
  const out = new Uint8Array(width * (bottom - top));
  for (let row = top; row < bottom; row += 1) {
    out.set(image.data.subarray(row * image.width + left, row * image.width + right), (row - top) * width);
  }
  return picture(width, bottom - top, out);
}

export function mirrored(image) {
  const out = new Uint8Array(image.data.length);
  for (let row = 0; row < image.height; row += 1) {
    for (let column = 0; column < image.width; column += 1) {
      out[row * image.width + column] = image.data[row * image.width + image.width - 1 - column];
    }
  }
  return picture(image.width, image.height, out);
}

// The picture averaged in blocks of k x k pixels, the last width % k columns and height % k rows dropped.
export function blockAverage(image, k) {
  const width = Math.floor(image.width / k);
  const height = Math.floor(image.height / k);
  if (k === 1) return image;
  const out = new Uint8Array(width * height);
  // As OpenCV rounds its whole-block averages: halves up for 2x2 blocks, else the float mean to even.
  const scale = Math.fround(1 / (k * k));
  const mean = k === 2 ? (sum) => (sum + 2) >> 2 : (sum) => pyRound(Math.fround(sum * scale));
  for (let v = 0; v < height; v += 1) {
    for (let u = 0; u < width; u += 1) {
      let sum = 0;
      for (let row = v * k; row < v * k + k; row += 1) {
        const start = row * image.width + u * k;
        for (let column = start; column < start + k; column += 1) sum += image.data[column];
      }
      out[v * width + u] = mean(sum);
    }
  }
  return picture(width, height, out);
}

// OpenCV's area-resize table for one axis (computeResizeAreaTab): [[source, weight], ...] per target pixel.
function areaTable(sourceSize, targetSize) {
  const scale = sourceSize / targetSize;
  const table = [];
  for (let target = 0; target < targetSize; target += 1) {
    const start = target * scale;
    const end = start + scale;
    const first = Math.ceil(start);
    const last = Math.floor(end);
    const cell = Math.min(scale, sourceSize - start);
    const entries = [];
    if (first - start > 1e-3) entries.push([first - 1, (first - start) / cell]);
    for (let source = first; source < last; source += 1) entries.push([source, 1 / cell]);
    if (end - last > 1e-3 && last < sourceSize) entries.push([last, Math.min(Math.min(end - last, 1), cell) / cell]);
    table.push(entries);
  }
  return table;
}

// Bilinear resize as OpenCV's INTER_LINEAR (pixel centres aligned, edges repeated).
function resizeLinear(image, width, height) {
  const out = new Uint8Array(width * height);
  const scaleX = image.width / width;
  const scaleY = image.height / height;
  for (let v = 0; v < height; v += 1) {
    const y = Math.min(Math.max((v + 0.5) * scaleY - 0.5, 0), image.height - 1);
    const top = Math.floor(y);
    const bottom = Math.min(top + 1, image.height - 1);
    const fy = y - top;
    for (let u = 0; u < width; u += 1) {
      const x = Math.min(Math.max((u + 0.5) * scaleX - 0.5, 0), image.width - 1);
      const left = Math.floor(x);
      const right = Math.min(left + 1, image.width - 1);
      const fx = x - left;
      const upper = image.data[top * image.width + left] * (1 - fx) + image.data[top * image.width + right] * fx;
      const lower = image.data[bottom * image.width + left] * (1 - fx) + image.data[bottom * image.width + right] * fx;
      out[v * width + u] = pyRound(upper * (1 - fy) + lower * fy);
    }
  }
  return picture(width, height, out);
}

// OpenCV's INTER_AREA resize: each target pixel the mean of the source area it covers.
export function resizeArea(image, width, height) {
  if (width > image.width || height > image.height) return resizeLinear(image, width, height);
  if (image.width % width === 0 && image.height % height === 0 && image.width / width === image.height / height) {
    return blockAverage(image, image.width / width);
  }
  const columns = areaTable(image.width, width);
  const rows = areaTable(image.height, height);
  const across = new Float32Array(image.height * width);
  for (let row = 0; row < image.height; row += 1) {
    const offset = row * image.width;
    for (let u = 0; u < width; u += 1) {
      let sum = 0;
      for (const [source, weight] of columns[u]) sum += image.data[offset + source] * weight;
      across[row * width + u] = sum;
    }
  }
  const out = new Uint8Array(width * height);
  for (let v = 0; v < height; v += 1) {
    for (let u = 0; u < width; u += 1) {
      let sum = 0;
      for (const [source, weight] of rows[v]) sum += across[source * width + u] * weight;
      out[v * width + u] = Math.min(255, Math.max(0, pyRound(sum)));
    }
  }
  return picture(width, height, out);
}

// The picture averaged down to (width, height): whole blocks first, then an area resize by the ratio left.
export function shrink(image, width, height) {
  const k = Math.max(1, Math.min(Math.floor(image.width / width), Math.floor(image.height / height)));
  const averaged = blockAverage(image, k);
  if (averaged.width === width && averaged.height === height) return averaged;
  return resizeArea(averaged, width, height);
}

// The square of side max(w, h) * (1 + 2 padding) centred on the box, moved (or shrunk) into the picture.
export function squareBox(x, y, w, h, imageWidth, imageHeight, padding) {
  let side = Math.max(w, h) * (1 + 2 * padding);
  side = Math.max(1, pyRound(Math.min(side, imageWidth, imageHeight)));
  const centerX = x + w / 2;
  const centerY = y + h / 2;
  let left = pyRound(centerX - side / 2);
  let top = pyRound(centerY - side / 2);
  left = Math.min(Math.max(left, 0), imageWidth - side);
  top = Math.min(Math.max(top, 0), imageHeight - side);
  return [left, top, side, side];
}

// OpenCV's bilinear table (initInterTab2D): the four weights of a 1/32-pixel offset, scaled to
// 2^15 and rounded, the largest corrected so that they sum to 2^15 exactly.
const WEIGHTS = new Map();
function bilinearWeights(fx, fy) {
  const key = fy * 32 + fx;
  if (!WEIGHTS.has(key)) {
    const ax = [1 - fx / 32, fx / 32];
    const ay = [1 - fy / 32, fy / 32];
    const weights = [ay[0] * ax[0], ay[0] * ax[1], ay[1] * ax[0], ay[1] * ax[1]].map((w) => pyRound(w * 32768));
    const total = weights.reduce((a, b) => a + b, 0);
    if (total !== 32768) {
      let largest = 0;
      weights.forEach((w, i) => { if (w > weights[largest]) largest = i; });
      weights[largest] += 32768 - total;
    }
    WEIGHTS.set(key, weights);
  }
  return WEIGHTS.get(key);
}

// The square of `side` pixels around `center`, turned by `angle` degrees, cut out upright at
// size x size: its neighbourhood averaged in whole blocks, then read bilinearly, edges repeated.
export function turnedSquare(gray, center, side, angle, size) {
  const cos = Math.cos((angle * Math.PI) / 180);
  const sin = Math.sin((angle * Math.PI) / 180);
  const reach = (side / 2) * (Math.abs(cos) + Math.abs(sin)) + 2;
  const left = Math.max(Math.floor(center[0] - reach), 0);
  const top = Math.max(Math.floor(center[1] - reach), 0);
  const right = Math.min(Math.ceil(center[0] + reach), gray.width);
  const bottom = Math.min(Math.ceil(center[1] + reach), gray.height);
  if (right <= left || bottom <= top) throw new Error(`the face at ${center} lies outside the picture`);
  const block = Math.max(1, Math.floor(side / size));
  const source = blockAverage(region(gray, left, top, right, bottom), block);
  const scale = 1 / block;
  // OpenCV's warpAffine, whose fixed point this follows: source positions in 1/32 pixel
  // (INTER_BITS 5, from AB_BITS 10) and bilinear weights summing to 2^15.
  const step = side / size;
  const middle = (size - 1) / 2;
  const m00 = step * cos * scale;
  const m01 = -step * sin * scale;
  const m10 = step * sin * scale;
  const m11 = step * cos * scale;
  const m02 = (center[0] - left) * scale - 0.5 - (m00 * middle + m01 * middle);
  const m12 = (center[1] - top) * scale - 0.5 - (m10 * middle + m11 * middle);
  const out = new Uint8Array(size * size);
  const maxX = source.width - 1;
  const maxY = source.height - 1;
  const data = source.data;
  const at = (x, y) => data[Math.min(Math.max(y, 0), maxY) * source.width + Math.min(Math.max(x, 0), maxX)];
  for (let v = 0; v < size; v += 1) {
    const rowX = pyRound((m01 * v + m02) * 1024) + 16; // + half a 1/32 step, as OpenCV rounds
    const rowY = pyRound((m11 * v + m12) * 1024) + 16;
    for (let u = 0; u < size; u += 1) {
      const x = (rowX + pyRound(m00 * u * 1024)) >> 5;
      const y = (rowY + pyRound(m10 * u * 1024)) >> 5;
      const [w00, w01, w10, w11] = bilinearWeights(x & 31, y & 31);
      const x0 = x >> 5;
      const y0 = y >> 5;
      const sum = at(x0, y0) * w00 + at(x0 + 1, y0) * w01 + at(x0, y0 + 1) * w10 + at(x0 + 1, y0 + 1) * w11;
      out[v * size + u] = Math.min(255, Math.max(0, (sum + (1 << 14)) >> 15));
    }
  }
  return picture(size, size, out);
}

// The faces cut out of the grey picture, eyes level: one 48x48 picture per detection.
export function cropFaces(gray, detections) {
  return detections.map(({ box, angle }) => {
    const [x, y, w, h] = box;
    const left = Math.max(0, Math.trunc(x));
    const top = Math.max(0, Math.trunc(y));
    const right = Math.min(gray.width, Math.trunc(x + w));
    const bottom = Math.min(gray.height, Math.trunc(y + h));
    if (right <= left || bottom <= top) throw new Error(`box ${box} lies outside the picture`);
    if (angle === 0) return resizeArea(region(gray, left, top, right, bottom), FACE_SIZE, FACE_SIZE);
    return turnedSquare(gray, [x + w / 2, y + h / 2], Math.max(w, h), angle, FACE_SIZE);
  });
}
