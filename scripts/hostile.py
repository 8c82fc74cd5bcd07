"""Hostile files made in code, small and fast to build: for the tests and the fuzzer's seeds alike.

- Videos whose frames grow after the first: a container (and a first frame) that passes the size
  check, then frames that would cost far more to decode than it said. MJPEG in AVI (each packet a
  JPEG of its own size) and H.264 with a new sequence header (SPS) at the larger size.
- A progressive JPEG whose last scan repeats: a file of a few kilobytes that the decoder reads
  over the whole picture once a scan.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np
from PIL import Image

Size = tuple[int, int]  # (width, height)


def growing_mjpeg_avi(sizes: Sequence[Size], fps: int = 10) -> bytes:
    """An MJPEG AVI whose frames have these sizes; its header gives the first frame's size."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="avi") as output:
        stream = output.add_stream("mjpeg", rate=fps)
        stream.width, stream.height = sizes[0]
        stream.pix_fmt = "yuvj420p"
        for index, (width, height) in enumerate(sizes):
            packet = av.Packet(flat_jpeg(width, height, level=40 + 10 * (index % 16)))
            packet.stream = stream
            packet.pts = packet.dts = index
            output.mux(packet)
    return buffer.getvalue()


def growing_h264(sizes: Sequence[Size], container_format: str = "mp4", fps: int = 10) -> bytes:
    """An H.264 video (in MP4, Matroska...) whose frames have these sizes, each frame a stream of
    its own with its sequence header: a player sees the picture size change."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as output:
        stream = output.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height = sizes[0]
        stream.pix_fmt = "yuv420p"
        for index, (width, height) in enumerate(sizes):
            encoder = av.CodecContext.create("libx264", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base = Fraction(1, fps)
            encoder.options = {"preset": "ultrafast"}
            grey = np.full((height, width, 3), 40 + 10 * (index % 16), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(grey, format="rgb24").reformat(format="yuv420p")
            frame.pts = 0
            for packet in [*encoder.encode(frame), *encoder.encode(None)]:
                packet.stream = stream
                packet.pts = packet.dts = index
                output.mux(packet)
    return buffer.getvalue()


def flat_jpeg(width: int, height: int, level: int = 128, *, progressive: bool = False) -> bytes:
    """A grey JPEG of one level: a few kilobytes whatever its size."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), level).save(buffer, format="JPEG", progressive=progressive)
    return buffer.getvalue()


def many_scans_jpeg(width: int, height: int, repeats: int) -> bytes:
    """A progressive grey JPEG whose last scan is written `repeats` times: each one is a few bytes
    in the file and a pass over every pixel for the decoder."""
    data = flat_jpeg(width, height, progressive=True)
    last_scan = data.rfind(b"\xff\xda")  # the last SOS marker; the file ends with EOI (FF D9)
    return data[:last_scan] + data[last_scan:-2] * repeats + data[-2:]
