"""Many visitors at once against one `streamlit run app.py`: prints figures, asserts nothing.

    python scripts/load.py --webcams 4 --photos 8 --seconds 60     # load
    python scripts/load.py --soak --minutes 10                      # one webcam, memory over time
    python scripts/load.py --webcams 1 --photos 0 --seconds 30      # the server's CPU per webcam frame
    python scripts/load.py --webcams 4 --seconds 60 --profile       # and where the server spends its time
    python scripts/load.py --mode device --webcams 4 --photos 0     # the webcam on the visitors' devices

Load: K headless-Chromium pages stream the benchmark's face clip (face_clip.avi under
$EMOTION_DATA, else one made from skimage's astronaut) through Chromium's fake camera in the
Webcam tab, and once they all stream, M more pages each upload a photo at the same moment.
Printed: each webcam session's frame rate (frames analysed during the measured window, and the
FPS the page shows), each upload's time to its result, the errors seen (exceptions on the
pages, uncaught errors in the browser, tracebacks in the server's log), the server's CPU use
and its peak resident memory (VmHWM), and the server's CPU time (from /proc, every thread) per
frame analysed in the window: the cost of one webcam visitor, whatever else shares the machine.

--mode picks the Webcam tab's mode: "server" (streamlit-webrtc; the default here, as the figures
before the on-device mode were measured) or "device" (each page analyses its frames with
LiteRT.js and sends the server only their results): then the server's CPU per visitor is its
cost, whatever frame rate the visitors' browsers reach on this machine's cores.

Soak: one webcam session for --minutes after --warm-up, printing the server's resident memory
(VmRSS) and the session's frame rate every --interval seconds, then the growth since the first
sample.

--profile samples the server with py-spy (`pip install -r requirements-dev.txt`) during the
measured window and prints the functions it was busiest in, then that CPU time per frame split
by stage (receive/decode, conversion, detection, classification, tracking and statistics,
drawing, encode/send, the rest): each thread's CPU time from /proc, shared out by the stages
py-spy saw it busy in. Browsers and server share this machine's cores, as in the browser
tests; needs Debian's chromium and Playwright.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import browser as web  # scripts/browser.py
from benchmark import benchmark_clip  # scripts/benchmark.py

STREAM_START_TIMEOUT_S = 120  # from START to the first analysed frame, on a busy machine
PHOTO_TIMEOUT_S = 180  # from the upload to the result
PHOTO_SIZE = (3000, 2250)  # pixels: a typical phone photo (about 7 megapixels)
PROFILE_TOP = 15  # functions listed by --profile, per list
FULL_RATE_FPS = 30  # a webcam's frame rate, for the visitors-per-core figure
PROFILE_RATE = 100  # py-spy samples per second and thread


@dataclass
class Visitor:
    page: object
    errors: list[str] = field(default_factory=list)


def server_memory_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of process `pid`, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss, peak = (int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM"))
    return rss, peak


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` (all its threads, ended ones too) so far."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User plus system CPU time of each live thread of process `pid` so far, by thread id."""
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # the thread ended meanwhile
            times[int(task.name)] = _stat_cpu_seconds(task / "stat")
    return times


def _stat_cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (100 per second)


def new_visitor(browser, url: str) -> Visitor:
    context = browser.new_context(viewport={"width": 1000, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(STREAM_START_TIMEOUT_S * 1000)
    visitor = Visitor(page)
    page.on("pageerror", lambda error: visitor.errors.append(f"page error: {error}"))
    web.open_app(page, url)
    return visitor


def page_exceptions(visitor: Visitor) -> list[str]:
    shown = visitor.page.locator("[data-testid='stException']")
    return [f"exception shown: {text[:200]}" for text in shown.all_inner_texts()]


def frames_analysed(visitor: Visitor) -> int:
    """The live panel's 'Frames analysed'; it is redrawn every second, so read it until it holds still."""
    stats = visitor.page.locator(".st-key-live-stats")
    for _ in range(20):
        with contextlib.suppress(Exception):
            shown = web.metric_value(stats, "Frames analysed").inner_text(timeout=2000)
            return int(shown.replace(",", ""))
        time.sleep(0.25)
    raise RuntimeError("the live panel shows no frame count")


def shown_fps(visitor: Visitor) -> str:
    with contextlib.suppress(Exception):
        return web.metric_value(visitor.page.locator(".st-key-live-stats"), "FPS").inner_text(timeout=2000)
    return "-"


def start_streams(webcams: list[Visitor], mode: str = "server") -> None:
    for visitor in webcams:
        if mode == "device":
            web.start_device_webcam(visitor.page)
        else:
            web.start_webcam(visitor.page)
    deadline = time.monotonic() + STREAM_START_TIMEOUT_S
    for visitor in webcams:
        while True:
            with contextlib.suppress(RuntimeError):
                if frames_analysed(visitor) > 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"a webcam session analysed no frame within {STREAM_START_TIMEOUT_S} s")
            time.sleep(0.5)


def write_photo(folder: Path) -> Path:
    """The astronaut photo (a real face) scaled to PHOTO_SIZE, as a JPEG."""
    from PIL import Image
    from skimage import data

    path = folder / "photo.jpg"
    Image.fromarray(data.astronaut()).resize(PHOTO_SIZE, Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def wait_for_photo(visitor: Visitor, uploaded_at: float) -> float | None:
    """Seconds from the upload to the result (a suggestion, or an error message); None if none came."""
    error = visitor.page.locator("[data-testid='stAlertContentError']")
    answered = web.photo_results(visitor.page).or_(error)
    remaining_ms = max(1000, (uploaded_at + PHOTO_TIMEOUT_S - time.monotonic()) * 1000)
    try:
        answered.first.wait_for(timeout=remaining_ms)
    except Exception:
        return None
    return time.monotonic() - uploaded_at


def server_errors(log_path: Path) -> list[str]:
    lines = log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if "Traceback" in line or re.search(r"\b(ERROR|CRITICAL)\b", line)]


@contextlib.contextmanager
def profiled(pid: int, seconds: float, enabled: bool, folder: Path):
    """py-spy samples `pid` while the block runs; yields where the collapsed stacks will be
    (None when not enabled), complete once the block has run."""
    if not enabled:
        yield None
        return
    output = folder / "profile.txt"
    # The py-spy installed beside this python, so that a venv's python run by path finds it too.
    py_spy = Path(sys.executable).parent / "py-spy"
    command = [
        str(py_spy) if py_spy.exists() else "py-spy",
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
    ]
    command += ["--rate", str(PROFILE_RATE), "--threads", "--nonblocking", "--output", str(output)]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield output
    finally:
        _, stderr = recorder.communicate(timeout=seconds + 60)
        if recorder.returncode != 0 or not output.exists():
            print(f"py-spy failed: {stderr.decode(errors='replace').strip()[-500:]}")


# Frames on every thread's stack (thread start-up, event loops, the server's command line):
# left out of the inclusive list, where they would only push the informative ones down.
PLUMBING_FILES = ("threading.py", "thread.py", "base_events.py", "events.py", "runners.py", "<frozen runpy>")

# The stages of a webcam frame on the server, for --profile's split. A busy sample is charged to
# the stage of the innermost frame on its stack that names one of the stage's functions or
# files (py-spy writes a frame as "function (path:line)").
FRAME_STAGES = (
    (
        "receive/decode",
        (
            "Decoder.decode (",
            "decoder_worker (",
            "aiortc/rtcrtpreceiver.py",
            "aiortc/jitterbuffer.py",
            "aiortc/rate.py",  # the receiver's bandwidth estimate
            "RtpPacket.parse (",
            "Session.unprotect",
            "RTCDtlsTransport._recv_next",
            "_SelectorDatagramTransport._read_ready",  # UDP: only WebRTC's packets
        ),
    ),
    (
        "conversion",
        (
            "Vp8Encoder.encode (aiortc/codecs/vpx.py:185)",  # aiortc 1.16: frame.reformat(format="yuv420p")
            "LiveAnalyzer.process_frame (emotion/live.py",  # the planes' copy, luma to grey
            "_plane_array (emotion/live.py",
            "LiveAnalyzer.process (emotion/live.py",  # cv2.cvtColor to grey
        ),
    ),
    # The finder modules, not the whole of emotion/faces: crop_faces there is the classifier's.
    (
        "detection",
        ("detect_faces (", "emotion/faces/haar.py", "emotion/faces/blazeface.py", "emotion/faces/pool.py"),
    ),
    ("classification", ("crop_faces (", "predict_proba (", "emotion/classifier.py")),
    (
        "tracking and statistics",
        ("emotion/tracking.py", "emotion/session.py", "emotion/results.py", "LiveRecorder.record ("),
    ),
    ("drawing", ("emotion/draw.py",)),
    (
        "encode/send",
        (
            "Encoder.encode (",
            "Encoder._packetize (",
            "aiortc/rtcrtpsender.py",
            "Session.protect",
            "RTCDtlsTransport._send_rtp",
            ".sendto (",
            "_worker (concurrent/futures/thread.py",  # the event loop's executor, where aiortc encodes
        ),
    ),
)
# Innermost frames of a thread that waits (blocked in a lock, a queue, a selector or a sleep),
# which py-spy may still sample as busy: such samples are left out of the split.
WAITING_FRAMES = (
    "EpollSelector.select (",
    "Condition.wait (",
    "Event.wait (",
    "_worker (concurrent/futures/thread.py",  # work_queue.get()
    "AsyncMediaProcessTrack._worker_thread (",  # its in_queue.get()
    "polling_path_watcher.py",  # time.sleep between polls
)
REST = "the rest"
NATIVE_THREADS = "threads without Python code"


def frame_stage(frames: list[str]) -> str | None:
    """The stage a sample's stack (outermost frame first) belongs to; None where it waits."""
    if any(name in frames[-1] for name in WAITING_FRAMES):
        return None
    for frame in reversed(frames):
        for stage, names in FRAME_STAGES:
            if any(name in frame for name in names):
                return stage
    return REST


def busy_stacks(collapsed: Path) -> Iterator[tuple[str, list[str], int]]:
    """py-spy's raw output with --threads, line by line: (its thread's entry, such as
    "thread (123)", the stack's frames outermost first, the number of samples)."""
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit() and ";" in stack:
            thread, *frames = stack.split(";")
            yield thread, frames, int(count)


def thread_stages(collapsed: Path) -> dict[int, collections.Counter[str]]:
    """Busy samples by thread id and stage, from py-spy's raw output with --threads."""
    by_thread: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for thread, frames, count in busy_stacks(collapsed):
        thread_id = re.match(r"thread \((\d+)\)", thread)
        stage = frame_stage(frames)
        if thread_id is not None and stage is not None:
            by_thread[int(thread_id.group(1))][stage] += count
    return by_thread


def print_frame_split(collapsed: Path, thread_cpu: dict[int, float], process_cpu: float, frames: int) -> None:
    """Server CPU per analysed frame by stage: each thread's CPU time (from /proc) shared out by
    its busy samples. Threads that ended during the window (the page's script runs) share the
    CPU time the live threads do not account for; live threads py-spy never saw busy run no
    Python (codec, OpenCV and TensorFlow Lite worker pools)."""
    seconds: collections.Counter[str] = collections.Counter()
    ended: collections.Counter[str] = collections.Counter()
    by_thread = thread_stages(collapsed)
    for thread, stages in by_thread.items():
        if thread not in thread_cpu:
            ended.update(stages)
            continue
        busy = sum(stages.values())
        for stage, count in stages.items():
            seconds[stage] += thread_cpu[thread] * count / busy
    seconds[NATIVE_THREADS] += sum(cpu for thread, cpu in thread_cpu.items() if thread not in by_thread)
    leftover = max(0.0, process_cpu - sum(thread_cpu.values()))
    for stage, count in ended.items():
        seconds[stage] += leftover * count / sum(ended.values())
    if not ended:
        seconds[REST] += leftover
    print(f"server CPU per analysed frame, by stage ({frames} frames, {process_cpu:.1f} CPU s):")
    for stage in [name for name, _ in FRAME_STAGES] + [NATIVE_THREADS, REST]:
        share = seconds[stage] / max(process_cpu, 1e-9)
        print(f"    {stage:<28} {1000 * seconds[stage] / frames:6.2f} ms  {100 * share:5.1f} %")


def print_profile(collapsed: Path) -> None:
    """Where the server's threads were busy, from py-spy's collapsed stacks.

    Own: the function at the top of the stack (time spent in it, or in native code it calls).
    Inclusive: on the stack at all, by function.
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for _thread, stack, count in busy_stacks(collapsed):
        total += count
        frames = [re.sub(r" \((.*/)?([^/]+?)(:\d+)?\)$", r" (\2)", frame) for frame in stack]
        own[frames[-1]] += count
        for frame in set(frames):
            if not frame.endswith(tuple(f"({name})" for name in PLUMBING_FILES)):
                inclusive[frame] += count
    print(f"server profile: {total} samples of busy threads ({PROFILE_RATE} per second and thread)")
    for title, counter in (("own time", own), ("inclusive time", inclusive)):
        print(f"  busiest functions, {title}:")
        for name, count in counter.most_common(PROFILE_TOP):
            print(f"    {100 * count / max(total, 1):5.1f} %  {name}")


def load(args, browser_factory, folder: Path) -> None:
    log_path = folder / "streamlit.log"
    clip = web.write_y4m(args.clip or benchmark_clip(folder), folder / "clip.y4m")
    photo = write_photo(folder)
    env = {"WEBCAM_MODE": args.mode}
    with web.serve_app(log_path, env=env) as server, browser_factory(web.fake_camera_args(clip)) as browser:
        webcams = [new_visitor(browser, server.url) for _ in range(args.webcams)]
        uploaders = [new_visitor(browser, server.url) for _ in range(args.photos)]
        start_streams(webcams, args.mode)
        time.sleep(args.warm_up)  # past the first frames, which include the streams' set-up
        started, cpu_started = time.monotonic(), cpu_seconds(server.process.pid)
        threads_started = thread_cpu_seconds(server.process.pid)
        counts_started = [frames_analysed(visitor) for visitor in webcams]
        with profiled(server.process.pid, args.seconds, args.profile, folder) as collapsed:
            uploaded_at = time.monotonic()
            for visitor in uploaders:
                web.upload_photo(visitor.page, photo)
            answers = [wait_for_photo(visitor, uploaded_at) for visitor in uploaders]
            time.sleep(max(0.0, started + args.seconds - time.monotonic()))
            elapsed = time.monotonic() - started
            counts = [frames_analysed(visitor) for visitor in webcams]
            cpu_used = cpu_seconds(server.process.pid) - cpu_started
            thread_cpu = {
                thread: cpu - threads_started.get(thread, 0.0)
                for thread, cpu in thread_cpu_seconds(server.process.pid).items()
            }
        _, peak_mb = server_memory_mb(server.process.pid)
        print(
            f"{args.webcams} webcam session(s) and {args.photos} photo upload(s) at once, "
            f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG, measured over {elapsed:.0f} s"
        )
        for number, (visitor, before, after) in enumerate(zip(webcams, counts_started, counts, strict=True)):
            errors = visitor.errors + page_exceptions(visitor)
            print(
                f"webcam {number + 1}: {(after - before) / elapsed:.1f} fps analysed "
                f"({after - before} frames), page shows {shown_fps(visitor)} fps, {len(errors)} errors"
            )
            for error in errors:
                print(f"    {error}")
        for number, (visitor, seconds) in enumerate(zip(uploaders, answers, strict=True)):
            errors = visitor.errors + page_exceptions(visitor)
            answer = "no answer" if seconds is None else f"answered in {seconds:.1f} s"
            print(f"photo {number + 1}: {answer}, {len(errors)} errors")
            for error in errors:
                print(f"    {error}")
        logged = server_errors(log_path)
        print(f"server: {len(logged)} error lines in its log, {cpu_used / elapsed:.2f} CPU cores busy")
        for line in logged[:20]:
            print(f"    {line}")
        print(f"server peak resident memory: {peak_mb:.0f} MB")
        if webcams:
            print(
                f"server CPU per webcam visitor ({args.mode} mode): "
                f"{cpu_used / elapsed / len(webcams):.3f} of a core"
            )
        analysed = sum(counts) - sum(counts_started)
        if analysed:
            frame_ms = 1000 * cpu_used / analysed
            print(
                f"server CPU per analysed frame: {frame_ms:.1f} ms ({cpu_used:.1f} CPU s over {analysed} "
                f"frames): {1000 / (frame_ms * FULL_RATE_FPS):.1f} webcam visitors at {FULL_RATE_FPS} fps "
                "per server core"
            )
        if collapsed is not None and collapsed.exists():
            print_profile(collapsed)
            if analysed:
                print_frame_split(collapsed, thread_cpu, cpu_used, analysed)


def soak(args, browser_factory, folder: Path) -> None:
    log_path = folder / "streamlit.log"
    clip = web.write_y4m(args.clip or benchmark_clip(folder), folder / "clip.y4m")
    env = {"WEBCAM_MODE": args.mode}
    with web.serve_app(log_path, env=env) as server, browser_factory(web.fake_camera_args(clip)) as browser:
        visitor = new_visitor(browser, server.url)
        start_streams([visitor], args.mode)
        time.sleep(args.warm_up)  # the first sample is taken streaming steadily
        started = time.monotonic()
        first_mb = None
        last_count, last_time = frames_analysed(visitor), started
        while True:
            now = time.monotonic()
            count = frames_analysed(visitor)
            rss_mb, _ = server_memory_mb(server.process.pid)
            first_mb = rss_mb if first_mb is None else first_mb
            fps = f"{(count - last_count) / (now - last_time):5.1f}" if now > last_time + 1 else "    -"
            print(f"t={now - started:5.0f} s  server rss {rss_mb:6.1f} MB  {fps} fps", flush=True)
            last_count, last_time = count, now
            if now - started >= args.minutes * 60:
                break
            time.sleep(min(args.interval, max(0.0, started + args.minutes * 60 - now)))
        _, peak_mb = server_memory_mb(server.process.pid)
        errors = visitor.errors + page_exceptions(visitor) + server_errors(log_path)
        print(
            f"soak of {args.minutes:g} min: server memory {first_mb:.1f} -> {rss_mb:.1f} MB "
            f"({rss_mb - first_mb:+.1f} MB), peak {peak_mb:.0f} MB, {len(errors)} errors"
        )
        for error in errors[:20]:
            print(f"    {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webcams", type=int, default=4, help="webcam sessions at once")
    parser.add_argument("--photos", type=int, default=8, help="photo uploads at once")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the measured window")
    parser.add_argument("--warm-up", type=float, default=10.0, help="seconds of streaming before measuring")
    parser.add_argument("--soak", action="store_true", help="one webcam session, memory over time")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between soak samples")
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy")
    parser.add_argument(
        "--mode", choices=("server", "device"), default="server", help="where webcam frames are analysed"
    )
    parser.add_argument(
        "--clip", type=Path, help="video played by the fake cameras (default: the benchmark's face clip)"
    )
    args = parser.parse_args()
    reason = web.browser_missing_reason()
    if reason is not None:
        sys.exit(f"cannot run: {reason}")
    if args.clip is not None and not args.clip.is_file():
        sys.exit(f"cannot run: no clip at {args.clip} (--clip)")

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as driver:

        @contextlib.contextmanager
        def browser_factory(extra_args):
            with web.chromium(driver, extra_args=extra_args) as page:
                yield page.context.browser

        (soak if args.soak else load)(args, browser_factory, Path(folder))


if __name__ == "__main__":
    main()
