import csv
import io
import itertools
import tempfile
from dataclasses import replace
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from emotion import video
from emotion.faces import LIVE_DETECTOR, PHOTO_DETECTOR
from emotion.labels import EMOTIONS
from emotion.live import LiveSettings
from emotion.results import CSV_COLUMNS
from emotion.video import InvalidVideo, output_size, probe_video, process_video
from scripts import hostile, samples


def make_video(frames_rgb, fps: int = 10, rotation: int = 0) -> bytes:
    """An H.264 MP4 of the given RGB frames, in memory."""
    height, width = frames_rgb[0].shape[:2]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames_rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


def silent_audio(container_format: str) -> bytes:
    """A tenth of a second of silence, alone in a file of that container format."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as output:
        stream = output.add_stream("pcm_s16le" if container_format == "wav" else "aac", rate=8000)
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
        silence.sample_rate = 8000
        for packet in stream.encode(silence):
            output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


def decode(data: bytes) -> tuple[av.video.stream.VideoStream, list[np.ndarray]]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return stream, [frame.to_ndarray(format="bgr24") for frame in container.decode(stream)]


@pytest.fixture(autouse=True)
def temp_root(tmp_path, monkeypatch):
    """Temporary files go to a folder of their own, which must be empty again after each test."""
    root = tmp_path / "temp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    monkeypatch.setenv("TMPDIR", str(root))
    yield root
    assert list(root.iterdir()) == []


@pytest.fixture(scope="module")
def clip_result(classifier, face_clip):
    progress = []
    result = process_video(face_clip, classifier, progress=lambda done, total: progress.append((done, total)))
    return result, progress


def test_the_annotated_clip_keeps_frame_count_and_rate_and_decodes_as_h264(clip_result, face_clip):
    result, _ = clip_result
    with av.open(str(face_clip)) as source:
        source_stream = source.streams.video[0]
        source_frames = sum(1 for _ in source.decode(source_stream))
        source_rate = source_stream.average_rate
    stream, frames = decode(result.video)
    assert result.video[4:8] == b"ftyp"
    assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    assert len(frames) == result.frames == source_frames == 71
    assert stream.average_rate == source_rate and result.fps == 30.0
    assert result.duration_s == pytest.approx(71 / 30)
    assert (result.width, result.height) == (720, 480) == (frames[0].shape[1], frames[0].shape[0])
    assert not result.downscaled


def test_every_frame_with_a_face_is_annotated(clip_result, face_clip):
    result, _ = clip_result
    _, annotated = decode(result.video)
    with av.open(str(face_clip)) as source:
        originals = [frame.to_ndarray(format="bgr24") for frame in source.decode(video=0)]
    assert result.frames_with_faces > 0.8 * result.frames  # the clip shows one face throughout
    frames_with_rows = {row.frame for row in result.rows}
    assert len(frames_with_rows) == result.frames_with_faces
    for row in result.rows:
        # The box's left edge, drawn in colour, differs from the original far beyond H.264's noise.
        x, y, _, h = row.face.box
        edge = np.s_[y + 10 : y + h - 10, x : x + 2]
        difference = np.abs(annotated[row.frame][edge].astype(int) - originals[row.frame][edge].astype(int))
        assert difference.mean() > 25, f"frame {row.frame} is not annotated"


def test_rows_are_one_per_frame_and_face_and_become_csv(clip_result):
    result, _ = clip_result
    keys = [(row.frame, row.face.id) for row in result.rows]
    assert len(keys) == len(set(keys))
    for row in result.rows:
        assert row.time_s == pytest.approx(row.frame / 30, abs=1e-3)
        face = row.face
        assert face.emotion in EMOTIONS and face.probabilities.shape == (len(EMOTIONS),)
        assert face.probabilities.sum() == pytest.approx(1.0, abs=1e-3)
        x, y, w, h = face.box
        assert x >= 0 and x + w <= result.width and y + h <= result.height
    table = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert len(table) == len(result.rows)
    assert tuple(table[0]) == CSV_COLUMNS
    assert int(table[-1]["frame"]) == result.rows[-1].frame
    assert int(table[-1]["face_id"]) == result.rows[-1].face.id


def test_summary_and_progress(clip_result):
    result, progress = clip_result
    assert sum(result.distribution.values()) == pytest.approx(1.0)
    assert result.dominant_emotion == max(result.distribution, key=result.distribution.get)
    assert len(result.engagement) == result.frames_with_faces
    assert all(0.0 <= point.engagement <= 1.0 for point in result.engagement)
    assert 0.0 <= result.mean_engagement <= 1.0
    assert progress == [(done, 71) for done in range(1, 72)]


def test_bytes_input_and_every_nth_frame_detection(classifier, face_clip):
    result = process_video(face_clip.read_bytes(), classifier, settings=LiveSettings(detect_every=5))
    assert result.frames == 71 and result.frames_with_faces > 0.8 * 71
    assert {row.face.id for row in result.rows} == {1}


def test_a_video_without_faces(classifier):
    grey_frames = [np.full((120, 160, 3), 128, dtype=np.uint8)] * 10
    result = process_video(make_video(grey_frames), classifier)
    assert result.frames == 10 and result.rows == () and result.frames_with_faces == 0
    assert result.dominant_emotion is None and result.mean_engagement is None
    assert set(result.distribution.values()) == {0.0}
    assert result.to_csv().splitlines() == [",".join(CSV_COLUMNS)]
    _, frames = decode(result.video)
    assert len(frames) == 10
    assert frames[0][:10].mean() < 100  # "No face in view" on a dark strip at the top


def test_a_4k_video_is_downscaled_for_processing(classifier):
    frames = [np.full((2160, 3840, 3), 90, dtype=np.uint8)] * 2
    result = process_video(make_video(frames), classifier)
    assert (result.source_width, result.source_height) == (3840, 2160)
    assert (result.width, result.height) == (1280, 720) and result.downscaled
    _, decoded = decode(result.video)
    assert decoded[0].shape == (720, 1280, 3) and len(decoded) == 2


def test_a_rotated_phone_video_is_analysed_upright(classifier, astronaut_rgb):
    portrait = astronaut_rgb[:, 56:456]  # (512, 400, 3), her face upright
    stored = np.ascontiguousarray(np.rot90(portrait, -1))  # as a phone stores it: sideways
    result = process_video(make_video([stored] * 3, rotation=90), classifier)
    assert (result.width, result.height) == (400, 512)
    assert result.frames_with_faces == 3


@pytest.mark.parametrize("level", [40, 128, 200])
def test_grey_keeps_its_level_in_a_video_that_says_how_its_colours_are_coded(classifier, level):
    result = process_video(make_video([np.full((240, 320, 3), level, np.uint8)] * 3), classifier)
    with av.open(io.BytesIO(result.video)) as container:
        context = container.streams.video[0].codec_context
        frame = next(container.decode(video=0))
    colour = (context.color_range, context.colorspace, context.color_primaries, context.color_trc)
    assert colour == (1, 6, 1, 13)  # limited range, BT.601 matrix, BT.709 primaries, sRGB curve
    luma = frame.to_ndarray()[: frame.height]  # the Y plane: 16 to 235
    assert np.median(luma) == round(16 + 219 * level / 255)
    rgb = np.median(frame.to_ndarray(format="rgb24"), axis=(0, 1))
    assert np.abs(rgb - level).max() <= 1  # FFmpeg's conversion back to RGB rounds down


@pytest.mark.parametrize("level", [40, 128, 200])
def test_grey_keeps_its_level_through_ffmpegs_own_conversion_to_rgb(classifier, level):
    # `ffmpeg -i out.mp4 -pix_fmt rgb24` converts in a filter graph that reads the frames' range
    # and matrix tags. The status banner across the top (no face here) darkens the frame's mean,
    # so the level is read below it.
    result = process_video(make_video([np.full((240, 320, 3), level, np.uint8)] * 3), classifier)
    with av.open(io.BytesIO(result.video)) as container:
        graph = av.filter.Graph()
        source = graph.add_buffer(template=container.streams.video[0])
        to_rgb, sink = graph.add("format", "rgb24"), graph.add("buffersink")
        source.link_to(to_rgb)
        to_rgb.link_to(sink)
        graph.configure()
        graph.push(next(container.decode(video=0)))
        rgb = graph.pull().to_ndarray(format="rgb24")  # (240, 320, 3)
    assert np.abs(np.median(rgb[120:], axis=(0, 1)) - level).max() <= 1


def test_output_size_is_even_and_within_the_limit():
    assert output_size(720, 480) == (720, 480)
    assert output_size(721, 481) == (720, 480)
    assert output_size(3840, 2160) == (1280, 720)
    assert output_size(1080, 1920) == (720, 1280)


def test_probe_reports_size_rate_and_length(face_clip):
    info = probe_video(face_clip)
    assert (info.width, info.height, info.fps, info.frames) == (720, 480, 30, 71)
    assert info.duration_s == pytest.approx(71 / 30, abs=0.1)


def test_a_truncated_video_is_refused(classifier, face_clip):
    data = face_clip.read_bytes()
    with pytest.raises(InvalidVideo, match="truncated"):
        process_video(data[: len(data) // 2], classifier)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty"),
        (b"just some text, certainly not a video\n" * 50, "not a video file"),
        (cv2.imencode(".png", np.zeros((32, 32, 3), dtype=np.uint8))[1].tobytes(), "still image"),
        (silent_audio("mp4"), "has no video stream"),
        (silent_audio("wav"), "not a video file we can read"),  # not a container the app takes
    ],
    ids=["empty", "text", "png", "audio", "wav"],
)
def test_files_that_are_not_videos_are_refused(classifier, data, message):
    with pytest.raises(InvalidVideo, match=message):
        process_video(data, classifier)


def concat_script(target: str) -> bytes:
    """An FFmpeg concat script naming a file: its demuxer would read that file from the server."""
    return f"ffconcat version 1.0\nfile {target}\n".encode()


def test_a_file_that_names_other_files_is_refused_without_saying_whether_they_exist(
    classifier, tmp_path, monkeypatch
):
    secret = tmp_path / "secret"
    secret.mkdir()
    private = samples.write_face_clip(secret / "private.avi")
    monkeypatch.chdir(tmp_path)  # where a relative name in the upload would be looked up
    messages = set()
    for target in ("secret/private.avi", str(private), "secret/missing.avi"):
        script = concat_script(target)
        (tmp_path / "upload.mp4").write_bytes(script)
        for source in (script, tmp_path / "upload.mp4"):
            with pytest.raises(InvalidVideo, match="not a video file we can read") as refused:
                process_video(source, classifier)
            messages.add(str(refused.value).replace("upload.mp4", "The file"))
            with pytest.raises(InvalidVideo):
                probe_video(source)
    assert len(messages) == 1  # the same answer whether the named file exists or not


def test_a_path_is_opened_as_a_file_whatever_its_name_looks_like(classifier, tmp_path, monkeypatch):
    samples.write_face_clip(tmp_path / "clip.avi")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "concat:clip.avi").write_bytes(b"not a video")  # FFmpeg's concat protocol, as a name
    with pytest.raises(InvalidVideo, match="not a video file we can read"):
        probe_video("concat:clip.avi")


def test_a_video_in_a_codec_ffmpeg_does_not_know_is_refused(classifier):
    # Found by scripts/fuzz.py: the stream names a codec FFmpeg has no decoder for.
    data = make_video([np.zeros((16, 16, 3), np.uint8)] * 3).replace(b"avc1", b"zzzz")
    with pytest.raises(InvalidVideo, match="codec"):
        probe_video(data)
    with pytest.raises(InvalidVideo, match="codec"):
        process_video(data, classifier)


def test_an_open_file_is_probed_where_it_is(face_clip, tmp_path):
    with open(face_clip, "rb") as file:
        file.seek(100)
        assert probe_video(file) == probe_video(face_clip)
    with open(tmp_path / "empty.mp4", "wb+") as empty, pytest.raises(InvalidVideo, match="The file is empty"):
        probe_video(empty)


def test_paths_that_are_empty_or_missing_are_refused(classifier, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(InvalidVideo, match=r"empty\.mp4 is empty"):
        process_video(empty, classifier)
    with pytest.raises(InvalidVideo, match="No such file"):
        process_video(tmp_path / "missing.mp4", classifier)


def test_too_long_and_too_large_videos_are_refused(classifier, monkeypatch, face_clip):
    monkeypatch.setattr(video, "MAX_DURATION_S", 1.0)
    with pytest.raises(InvalidVideo, match=r"too long \(2 s\): at most 1 s"):
        process_video(face_clip, classifier)
    monkeypatch.setattr(video, "MAX_DURATION_S", 120.0)
    monkeypatch.setattr(video, "MAX_INPUT_PIXELS", 640 * 480)
    with pytest.raises(InvalidVideo, match="720x480: too large"):
        process_video(make_video([np.zeros((480, 720, 3), np.uint8)] * 2), classifier)
    # An MJPEG's size comes from decoding its first frame, which the probe's decoder refuses.
    with pytest.raises(InvalidVideo, match="larger than 4K"):
        process_video(face_clip, classifier)


def test_a_video_of_unknown_length_is_stopped_at_the_limit(classifier, monkeypatch, face_clip):
    unknown_length = video.VideoInfo(720, 480, Fraction(30), frames=0, duration_s=None, step=1)
    monkeypatch.setattr(video, "_check", lambda container, stream: unknown_length)
    monkeypatch.setattr(video, "MAX_DURATION_S", 1.0)
    with pytest.raises(InvalidVideo, match="too long: at most 1 s"):
        process_video(face_clip, classifier)


def test_a_fast_video_is_sampled_down_to_the_analysed_rate(classifier):
    frames = [np.full((48, 64, 3), 10 * index, dtype=np.uint8) for index in range(24)]
    result = process_video(make_video(frames, fps=240), classifier)
    assert (result.frames, result.fps, result.source_fps) == (3, 30.0, 240.0)  # frames 0, 8 and 16
    assert result.sampled
    assert result.duration_s == pytest.approx(0.1)
    stream, decoded = decode(result.video)
    assert (len(decoded), stream.average_rate) == (3, 30)
    # Input frame i has brightness 10 * i: frames 0, 8 and 16 are 80 apart, neighbours only 10.
    brightness = [float(frame.mean()) for frame in decoded]
    assert all(later - earlier > 50 for earlier, later in itertools.pairwise(brightness))


def test_the_work_is_bounded_by_frames_not_by_the_declared_rate(classifier, monkeypatch):
    # Declared at 1000 fps, 40 frames last 0.04 s: the duration limit alone would let it through.
    monkeypatch.setattr(video, "MAX_DECODED_FRAMES", 30)
    fast = make_video([np.zeros((48, 64, 3), np.uint8)] * 40, fps=1000)
    decoded = []
    monkeypatch.setattr(video, "_decode", lambda container, stream: decoded.append(1) or iter(()))
    with pytest.raises(InvalidVideo, match=r"too long \(40 frames at 1000 fps\)"):
        probe_video(fast)
    with pytest.raises(InvalidVideo, match="too long"):
        process_video(fast, classifier)
    assert decoded == []  # refused before decoding


@pytest.mark.parametrize(("limit", "value"), [("MAX_DECODED_FRAMES", 5), ("MAX_ANALYSED_FRAMES", 3)])
def test_a_video_that_declares_no_length_is_stopped_at_the_frame_limits(
    classifier, monkeypatch, limit, value
):
    unknown_length = video.VideoInfo(64, 48, Fraction(10), frames=0, duration_s=None, step=1)
    monkeypatch.setattr(video, "_check", lambda container, stream: unknown_length)
    monkeypatch.setattr(video, limit, value)
    with pytest.raises(InvalidVideo, match="too long: at most 120 s at 30 frames a second"):
        process_video(make_video([np.zeros((48, 64, 3), np.uint8)] * 20), classifier)


def test_by_default_faces_are_searched_for_as_in_the_webcam_and_never_with_an_fps_banner(
    classifier, monkeypatch
):
    used = []
    analyzer = video.LiveAnalyzer
    monkeypatch.setattr(video, "LiveAnalyzer", lambda *args: used.append(args[1]) or analyzer(*args))
    grey = make_video([np.full((120, 160, 3), 128, dtype=np.uint8)] * 2)
    process_video(grey, classifier)
    process_video(grey, classifier, settings=LiveSettings(detect_every=4, detector=PHOTO_DETECTOR))
    assert used[0] == replace(LiveSettings(), show_fps=False)
    assert used[0].detector == LIVE_DETECTOR
    assert (used[1].detect_every, used[1].detector) == (4, PHOTO_DETECTOR)
    assert not any(settings.show_fps for settings in used)


def test_track_video_follows_faces_without_drawing_and_any_length_when_asked(
    classifier, face_clip, monkeypatch
):
    tracked = list(video.track_video(face_clip, classifier))
    assert [frame.index for frame in tracked] == list(range(71))
    assert tracked[-1].time_s == pytest.approx(70 / 30)
    assert {(frame.width, frame.height) for frame in tracked} == {(720, 480)}
    with_faces = [frame for frame in tracked if frame.faces]
    assert len(with_faces) >= 60
    assert {face.id for frame in with_faces for face in frame.faces} == {1}
    assert with_faces[-1].faces[0].box.x > with_faces[0].faces[0].box.x  # followed to the right
    # The faces are those process_video finds (and draws).
    drawn = [(row.frame, row.face) for row in process_video(face_clip, classifier).rows]
    found = [(frame.index, face) for frame in tracked for face in frame.faces]
    assert [(index, face.id, face.box, face.emotion) for index, face in drawn] == [
        (index, face.id, face.box, face.emotion) for index, face in found
    ]
    np.testing.assert_array_equal(
        np.stack([face.probabilities for _, face in drawn]),
        np.stack([face.probabilities for _, face in found]),
    )

    monkeypatch.setattr(video, "MAX_DURATION_S", 1.0)
    with pytest.raises(InvalidVideo, match="too long"):
        list(video.track_video(face_clip, classifier))
    assert len(list(video.track_video(face_clip, classifier, limit_length=False))) == 71


@pytest.mark.parametrize(
    "make",
    [
        hostile.growing_mjpeg_avi,
        hostile.growing_h264,
        lambda sizes: hostile.growing_h264(sizes, "matroska"),
    ],
    ids=["mjpeg-avi", "h264-mp4", "h264-mkv"],
)
def test_frames_larger_than_the_limit_after_a_small_first_one_are_refused_before_they_are_decoded(
    classifier, monkeypatch, make
):
    monkeypatch.setattr(video, "MAX_INPUT_PIXELS", 64 * 48)
    data = make([(64, 48)] + [(640, 480)] * 3)
    decoded, converted = [], []
    decode, to_bgr = video._decode, video._to_bgr

    def decode_spy(container, stream):
        for frame in decode(container, stream):
            decoded.append(frame.width * frame.height)
            yield frame

    monkeypatch.setattr(video, "_decode", decode_spy)
    monkeypatch.setattr(
        video, "_to_bgr", lambda frame, *size: converted.append(frame.width) or to_bgr(frame, *size)
    )
    for analyse in (
        lambda: process_video(data, classifier),
        lambda: list(video.track_video(data, classifier)),
        lambda: probe_video(data) and process_video(data, classifier),
    ):
        with pytest.raises(InvalidVideo, match=r"640x480: too large|larger than 4K"):
            analyse()
    assert max(decoded, default=0) <= 64 * 48  # FFmpeg allocated no larger frame
    assert set(converted) <= {64}
