// The twin of emotion/live.py: one camera frame at a time -> grey -> tracked, classified faces,
// with the time each stage took; and the results batched into small messages for the page
// (ids, boxes, probabilities, timings: never pixels), which enter the server's SessionStats
// and LiveRecorder as the WebRTC path's frames do (ui/device_webcam.py).
import { picture, pyRound, toGray } from "./faces/common.js";
import { detectFaces } from "./faces/index.js";
import { FaceTracker } from "./tracking.js";

export const STAGES = ["grab", "gray", "detect", "follow", "crop", "classify", "draw"];
export const RATE_WINDOW_FRAMES = 30; // as emotion/session.py: the fps over about a second of frames

class StageTimer {
  constructor() { this.stages = {}; }
  async time(stage, work) {
    const started = performance.now();
    try {
      return await work();
    } finally {
      this.stages[stage] = (this.stages[stage] || 0) + performance.now() - started;
    }
  }
}

// Video-range luma (16-235) -> full-range grey, as emotion/live.py's VIDEO_TO_FULL_RANGE.
export const VIDEO_TO_FULL_RANGE = Uint8Array.from({ length: 256 }, (_, value) =>
  Math.min(255, Math.max(0, pyRound(((value - 16) * 255) / 219))));
const LUMA_FORMATS = new Set(["I420", "I420A", "I422", "I444", "NV12"]); // the luma plane comes first

// A camera frame's luma plane as the grey picture, as LiveAnalyzer.process_frame takes a WebRTC
// frame's: no RGB conversion. Null where the frame is in another format (then the RGB path).
export async function lumaGray(frame) {
  if (!LUMA_FORMATS.has(frame.format)) return null;
  const { x, y, width, height } = frame.visibleRect;
  const buffer = new Uint8Array(frame.allocationSize());
  const [luma] = await frame.copyTo(buffer);
  const gray = new Uint8Array(width * height);
  for (let row = 0; row < height; row += 1) {
    const start = luma.offset + (y + row) * luma.stride + x;
    gray.set(buffer.subarray(start, start + width), row * width);
  }
  if (!(frame.colorSpace && frame.colorSpace.fullRange)) {
    for (let pixel = 0; pixel < gray.length; pixel += 1) gray[pixel] = VIDEO_TO_FULL_RANGE[gray[pixel]];
  }
  return picture(width, height, gray);
}

export class LiveAnalyzer {
  constructor(classifier, blazeface, settings) {
    this.timer = new StageTimer();
    this.settings = settings;
    const detector = (gray) => detectFaces(blazeface, gray, settings.detector);
    this.tracker = new FaceTracker(classifier, settings, detector, this.timer);
    this.frameTimes = [];
  }

  reset() {
    this.tracker.reset();
    this.frameTimes = [];
  }

  // One frame, as its grey picture or its RGBA pixels -> {faces, stages (ms each), latencyMs}.
  async process(pixels, width, height) {
    const started = performance.now();
    this.timer.stages = {};
    const gray = pixels.data ? pixels : await this.timer.time("gray", () => toGray(pixels, width, height));
    const faces = await this.tracker.update(gray);
    return { faces, stages: this.timer.stages, latencyMs: performance.now() - started };
  }

  fps(now = performance.now()) {
    this.frameTimes.push(now);
    if (this.frameTimes.length > RATE_WINDOW_FRAMES) this.frameTimes.shift();
    const times = this.frameTimes;
    return times.length < 2 ? 0 : ((times.length - 1) * 1000) / (times[times.length - 1] - times[0]);
  }
}

const round = (value, decimals) => Number(value.toFixed(decimals));

// One analysed frame as its message: time in the session (s), size, latency and stages (ms), faces.
export function frameMessage(timeS, width, height, result) {
  return {
    t: round(timeS, 3),
    w: width,
    h: height,
    ms: round(result.latencyMs, 2),
    stages: Object.fromEntries(Object.entries(result.stages).map(([stage, ms]) => [stage, round(ms, 2)])),
    faces: result.faces.map((face) => ({
      id: face.id,
      box: face.box,
      p: Array.from(face.probabilities, (value) => round(value, 5)),
    })),
  };
}
