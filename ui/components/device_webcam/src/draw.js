// The twin of emotion/draw.py's live overlay: each face's box in its emotion's colour, labelled
// '#1 happy 87%' (or 'happy or neutral?'), a confidence bar under it, and a status strip on top.
import { EMOTIONS } from "./labels.js";

export const EMOTION_COLORS = {
  angry: [213, 94, 0],
  disgust: [0, 158, 115],
  fear: [204, 121, 167],
  happy: [240, 228, 66],
  sad: [0, 114, 178],
  surprise: [230, 159, 0],
  neutral: [86, 180, 233],
};
export const UNCERTAIN_MARGIN = 0.1;
export const NO_FACE_TEXT = "No face in view";
const LINE_PER_PIXEL = 1 / 320;
const FONT_PIXELS_PER_PIXEL = 1 / 40; // ~16 px text at 640

export function emotionOf(probabilities) {
  let best = 0;
  probabilities.forEach((value, index) => { if (value > probabilities[best]) best = index; });
  return EMOTIONS[best];
}

export function faceLabel(face) {
  const order = [...face.probabilities.keys()].sort((a, b) => face.probabilities[b] - face.probabilities[a]);
  const [first, second] = order;
  const confidence = face.probabilities[first];
  const label = confidence - face.probabilities[second] < UNCERTAIN_MARGIN
    ? `${EMOTIONS[first]} or ${EMOTIONS[second]}?`
    : `${EMOTIONS[first]} ${Math.round(100 * confidence)}%`;
  return `#${face.id} ${label}`;
}

const css = ([red, green, blue], alpha = 1) => `rgba(${red}, ${green}, ${blue}, ${alpha})`;
const textOn = ([red, green, blue]) => (0.299 * red + 0.587 * green + 0.114 * blue >= 140 ? "#000" : "#fff");

// On a transparent canvas of the frame's size, over the video.
export function drawLiveOverlay(context, faces, fps) {
  const { width, height } = context.canvas;
  context.clearRect(0, 0, width, height);
  const longer = Math.max(width, height);
  const line = Math.max(1, Math.round(longer * LINE_PER_PIXEL));
  const fontSize = Math.max(10, Math.round(longer * FONT_PIXELS_PER_PIXEL));
  context.font = `${fontSize}px sans-serif`;
  context.textBaseline = "bottom";
  const margin = Math.max(2, Math.round(fontSize / 4));
  for (const face of faces) {
    const [x, y, w, h] = face.box;
    const color = EMOTION_COLORS[emotionOf(face.probabilities)];
    context.strokeStyle = css(color);
    context.lineWidth = line;
    context.strokeRect(x + line / 2, y + line / 2, w - line, h - line);
    const label = faceLabel(face);
    const labelWidth = context.measureText(label).width + 2 * margin;
    const labelHeight = fontSize + 2 * margin;
    const left = Math.min(Math.max(0, x), Math.max(0, width - labelWidth));
    const top = y >= labelHeight ? y - labelHeight : y;
    context.fillStyle = css(color);
    context.fillRect(left, top, labelWidth, labelHeight);
    context.fillStyle = textOn(color);
    context.fillText(label, left + margin, top + labelHeight - margin);
    const bar = Math.max(3, 2 * line);
    const barTop = y + h + bar <= height ? y + h : y + h - bar;
    const confidence = Math.max(...face.probabilities);
    context.fillStyle = css([64, 64, 64]);
    context.fillRect(x, barTop, w, bar);
    context.fillStyle = css(color);
    context.fillRect(x, barTop, Math.round(w * confidence), bar);
  }
  const status = faces.length ? [] : [NO_FACE_TEXT];
  if (fps) status.push(`${Math.round(fps)} FPS`);
  if (status.length) {
    const stripHeight = fontSize + 2 * margin;
    context.fillStyle = "rgba(0, 0, 0, 0.6)";
    context.fillRect(0, 0, width, stripHeight);
    context.fillStyle = "#fff";
    context.fillText(status.join("   "), margin, stripHeight - margin);
  }
}
