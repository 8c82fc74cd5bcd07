// The twin of emotion/live.py: one camera frame at a time -> grey -> tracked, classified faces,
// with the time each stage took; and the results batched into small messages for the page
// (ids, boxes, probabilities, timings: never pixels), which enter the server's SessionStats
// and LiveRecorder as the WebRTC path's frames do (ui/device_webcam.py).
import { toGray } from "./faces/common.js";
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

  // RGBA pixels of one frame -> {faces, stages (ms each), latencyMs}.
  async process(rgba, width, height) {
    const started = performance.now();
    this.timer.stages = {};
    const gray = await this.timer.time("gray", () => toGray(rgba, width, height));
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
