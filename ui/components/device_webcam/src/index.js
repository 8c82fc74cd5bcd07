// The Webcam tab's on-device mode: the camera is read and analysed in this page, with the app's
// own model files and LiteRT.js; only small messages of results go to the server.
import { EmotionClassifier } from "./classifier.js";
import { drawLiveOverlay } from "./draw.js";
import { BlazeFace } from "./faces/blazeface.js";
import { frameMessage, LiveAnalyzer, lumaGray } from "./live.js";
import { ChecksumError, loadModel, loadRuntime } from "./runtime.js";
import { onRender, setComponentValue, setFrameHeight } from "./streamlit.js";

export { EmotionClassifier, BlazeFace, LiveAnalyzer, loadModel, loadRuntime };
export * as common from "./faces/common.js";
export * as faces from "./faces/index.js";
export * as tracking from "./tracking.js";
export * as blazeface from "./faces/blazeface.js";
export * as live from "./live.js";

const SLOW_FPS = 8; // below this many frames a second, after SLOW_AFTER_S, the page suggests the server mode
const SLOW_AFTER_S = 5;
const SLOW_TEXT = `This device analyses fewer than ${SLOW_FPS} frames a second (frames are dropped, never queued): the server mode may be smoother.`;

const element = (tag, attributes = {}, text = "") => {
  const node = document.createElement(tag);
  Object.assign(node, attributes);
  if (text) node.textContent = text;
  return node;
};

class DeviceWebcam {
  constructor(root) {
    this.args = null;
    this.status = element("p", { className: "status" }, "Loading...");
    this.video = element("video", { muted: true, autoplay: true, playsInline: true });
    this.video.setAttribute("playsinline", "");
    this.overlay = element("canvas", { className: "overlay" });
    this.frame = element("div", { className: "frame" });
    this.frame.append(this.video, this.overlay);
    this.frame.hidden = true;
    this.start = element("button", { type: "button", disabled: true }, "START");
    this.stop = element("button", { type: "button", disabled: true }, "STOP");
    this.start.addEventListener("click", () => this.begin());
    this.stop.addEventListener("click", () => this.end("stopped"));
    const buttons = element("div", { className: "buttons" });
    buttons.append(this.start, this.stop);
    root.append(this.frame, buttons, this.status);
    this.grab = element("canvas");
    this.grabContext = this.grab.getContext("2d", { willReadFrequently: true });
    this.overlayContext = this.overlay.getContext("2d");
    this.session = null;
    this.batch = 0;
    this.pending = [];
    this.dropped = 0;
    this.busy = false;
    this.need = null;
    this.shapeWaiters = [];
    // What scripts/benchmark_device.py reads: load times, and this session's frames, drops and stage times.
    this.measured = { loadMs: {}, frames: 0, dropped: 0, stagesMs: {}, firstFrameMs: null };
    window.deviceWebcam = this;
    new ResizeObserver(() => setFrameHeight(document.body.scrollHeight)).observe(document.body);
    document.addEventListener("visibilitychange", () => this.visibility());
    window.addEventListener("pagehide", () => this.end("stopped"));
  }

  render(args) {
    const first = this.args === null;
    this.args = args;
    const shapes = args.files.blazeface;
    this.shapeWaiters = this.shapeWaiters.filter(([key, resolve]) => (shapes[key] ? (resolve(shapes[key]), false) : true));
    if (this.analyzer) this.analyzer.settings = args.settings; // smoothing and the rest change at once
    if (first) this.load();
    setFrameHeight(document.body.scrollHeight);
  }

  say(text, kind = "info") {
    this.status.textContent = text;
    this.status.dataset.kind = kind;
    setFrameHeight(document.body.scrollHeight);
  }

  report(status, extra = {}) {
    this.batch += 1;
    setComponentValue({
      session: this.session,
      batch: this.batch,
      status,
      frames: this.pending.splice(0),
      dropped: this.dropped,
      need: this.need,
      ...extra,
    });
  }

  fail(kind, error) {
    const text = String(error && error.message ? error.message : error);
    this.say(text, "error");
    this.report(kind, { error: text });
  }

  async load() {
    const files = this.args.files;
    if (typeof WebAssembly !== "object") {
      this.fail("unavailable", "This browser runs no WebAssembly, so the model cannot run on this device.");
      return;
    }
    try {
      this.say("Loading the runtime (LiteRT.js, WebAssembly)... step 1 of 3");
      let started = performance.now();
      await loadRuntime(new URL(files.runtime, document.baseURI).href);
      this.measured.loadMs.runtime = performance.now() - started;
      started = performance.now();
      const progress = (step, name) => (received, total) => this.say(
        `Loading ${name}... step ${step} of 3: ${Math.round(received / 1024)} of ${Math.round((total || received) / 1024)} KB`,
      );
      const emotion = await loadModel(files.emotion, progress(2, "the emotion model"));
      this.classifier = new EmotionClassifier(emotion);
      const upright = files.blazeface["128x128"];
      this.blazeface = new BlazeFace((height, width) => this.blazefaceFor(height, width));
      this.blazeface.models.set("128x128", await loadModel(upright, progress(3, "the face finder")));
      this.measured.loadMs.models = performance.now() - started;
      this.say("Ready: press START and allow the camera. Frames are analysed on this device and never leave it.");
      this.start.disabled = false;
      this.report("ready");
    } catch (error) {
      const kind = error instanceof ChecksumError ? "checksum" : "unavailable";
      this.fail(kind, error instanceof ChecksumError ? `A model file failed its checksum: ${error.message}` : `The model cannot run on this device: ${error.message || error}`);
    }
  }

  // The face finder at the input shape a frame of this size needs, which the server makes on request.
  async blazefaceFor(height, width) {
    const key = `${height}x${width}`;
    let file = this.args.files.blazeface[key];
    if (!file) {
      this.need = [height, width];
      const waiting = new Promise((resolve) => this.shapeWaiters.push([key, resolve]));
      this.report(...(this.session ? this.running() : ["ready", {}]));
      file = await waiting;
      this.need = null;
    }
    return loadModel(file);
  }

  async begin() {
    this.start.disabled = true;
    const constraints = this.args.constraints;
    let stream;
    try {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        throw Object.assign(new Error("this page cannot reach a camera (it needs https or localhost)"), { name: "NotSupportedError" });
      }
      stream = await navigator.mediaDevices.getUserMedia({ video: constraints, audio: false });
    } catch (error) {
      this.start.disabled = false;
      const reason = {
        NotAllowedError: "The camera was refused: allow it for this site (the icon in the address bar) and press START again.",
        NotFoundError: "No camera was found: connect one and press START again.",
        NotReadableError: "The camera is in use by another program: close it and press START again.",
      }[error.name] || `The camera could not be opened: ${error.message || error.name}`;
      this.fail("camera-error", reason);
      return;
    }
    this.stream = stream;
    this.video.srcObject = stream;
    await this.video.play().catch(() => {});
    this.frame.hidden = false;
    this.session = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
    this.analyzer = new LiveAnalyzer(this.classifier, this.blazeface, this.args.settings);
    this.started = performance.now();
    this.dropped = 0;
    this.measured = { ...this.measured, frames: 0, dropped: 0, stagesMs: {}, firstFrameMs: null };
    this.lastPresented = undefined;
    this.stop.disabled = false;
    this.say("Analysing on this device: no frame leaves it.");
    this.report("playing");
    this.timer = setInterval(() => this.flush(), this.args.batchMs);
    this.nextFrame();
  }

  // A running session's state: paused while the tab is hidden; slow (said with every batch) once
  // the device has analysed fewer than SLOW_FPS frames a second for SLOW_AFTER_S.
  running() {
    if (this.paused) return ["paused", {}];
    return this.warnedSlow ? ["slow", { error: SLOW_TEXT }] : ["playing", {}];
  }

  flush() {
    if (!this.session) return;
    const elapsed = (performance.now() - this.started) / 1000;
    if (!this.paused && !this.warnedSlow && elapsed > SLOW_AFTER_S && this.recentFps() < SLOW_FPS) {
      this.warnedSlow = true;
      this.say(SLOW_TEXT);
    }
    if (this.pending.length || !this.paused) this.report(...this.running());
  }

  // Frames analysed a second over the last batches (dropped ones not counted).
  recentFps() {
    const times = this.analyzer.frameTimes;
    return times.length < 2 ? 0 : ((times.length - 1) * 1000) / (performance.now() - times[0]);
  }

  nextFrame() {
    if (!this.session) return;
    if (this.video.requestVideoFrameCallback) {
      this.video.requestVideoFrameCallback((now, metadata) => this.onFrame(metadata.presentedFrames));
    }
    else requestAnimationFrame(() => this.onFrame());
  }

  // presented: the video's count of frames shown so far, where the browser gives it; frames shown
  // while the page was busy (no callback came for them) are dropped frames too.
  async onFrame(presented) {
    if (!this.session) return;
    this.nextFrame();
    if (this.paused) return;
    if (presented !== undefined) {
      const missed = this.lastPresented === undefined ? 0 : Math.max(0, presented - this.lastPresented - 1);
      this.lastPresented = presented;
      this.dropped += missed;
      this.measured.dropped += missed;
    }
    if (this.busy) {
      this.dropped += 1; // the device is behind: this frame is skipped, never queued
      this.measured.dropped += 1;
      return;
    }
    const width = this.video.videoWidth;
    const height = this.video.videoHeight;
    if (!width || !height) return;
    this.busy = true;
    try {
      if (this.grab.width !== width || this.grab.height !== height) {
        [this.grab.width, this.grab.height, this.overlay.width, this.overlay.height] = [width, height, width, height];
      }
      const grabStarted = performance.now();
      const pixels = (await this.grabLuma()) || this.grabRgba(width, height);
      const grabMs = performance.now() - grabStarted;
      const timeS = (performance.now() - this.started) / 1000;
      const result = await this.analyzer.process(pixels, width, height);
      result.stages.grab = grabMs;
      const drawStarted = performance.now();
      const fps = this.analyzer.fps();
      drawLiveOverlay(this.overlayContext, result.faces, this.args.settings.showFps ? fps : null);
      result.stages.draw = performance.now() - drawStarted;
      this.measured.frames += 1;
      if (this.measured.firstFrameMs === null) this.measured.firstFrameMs = performance.now() - this.started;
      for (const [stage, ms] of Object.entries({ ...result.stages, total: grabMs + result.latencyMs + result.stages.draw })) {
        this.measured.stagesMs[stage] = (this.measured.stagesMs[stage] || 0) + ms;
      }
      if (this.session) this.pending.push(frameMessage(timeS, width, height, result));
    } catch (error) {
      this.end("error", `The analysis stopped: ${error.message || error}`);
    } finally {
      this.busy = false;
    }
  }

  // The frame's luma plane (WebCodecs' VideoFrame, where the browser has it), else null.
  async grabLuma() {
    if (typeof VideoFrame !== "function" || this.noLuma) return null;
    let frame;
    try {
      frame = new VideoFrame(this.video);
      const gray = await lumaGray(frame);
      if (gray === null) this.noLuma = true; // another format: the RGB path from now on
      return gray;
    } catch {
      this.noLuma = true;
      return null;
    } finally {
      if (frame) frame.close();
    }
  }

  grabRgba(width, height) {
    this.grabContext.drawImage(this.video, 0, 0, width, height);
    return this.grabContext.getImageData(0, 0, width, height).data;
  }

  visibility() {
    if (!this.session) return;
    this.paused = document.visibilityState !== "visible";
    if (!this.paused) this.analyzer.reset(); // the faces may have moved meanwhile: look again
    this.lastPresented = undefined; // the frames shown while hidden were not dropped
    this.report(...this.running());
  }

  end(status, error) {
    if (!this.session) return;
    clearInterval(this.timer);
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    this.frame.hidden = true;
    this.report(status, error ? { error } : {});
    if (error) this.say(error, "error");
    else this.say("Stopped. Press START for a new session.");
    this.session = null;
    this.paused = false;
    this.warnedSlow = false;
    this.stop.disabled = true;
    this.start.disabled = false;
  }
}

export function main() {
  const webcam = new DeviceWebcam(document.getElementById("root"));
  onRender((args) => webcam.render(args));
}
