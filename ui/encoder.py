"""The webcam's video codecs on the server: aiortc's encoders, set for a server that encodes one
stream per visitor and not sending again a frame they have just sent, and the bitrates the
server asks for and sends.

streamlit-webrtc hands the sender a frame for every camera frame; while the analysis of a newer
one is not finished, that is the last analysed frame again, which aiortc would encode and send
again. The server's encoders skip it (the browser shows the frame until the next one comes), so
the video shows the frames analysed, each encoded once. `use_server_codecs` makes aiortc's
senders take them for the two codecs browsers send: VP8 (which Chrome and Firefox offer first)
and H.264 (Safari's first).

Bitrates: on a fast link aiortc lets a browser send a 640x480 camera at about 2.7 Mbit/s and
sends back at up to 1.5 (VP8) or 3 Mbit/s (H.264); every bit is received, decrypted, decoded
or encoded on the server, per visitor. The server asks browsers for at most RECEIVE_MAX_BITRATE
(in the bandwidth estimate its receivers send back, REMB, which browsers take as the most to
send) and sends at most SEND_MAX_BITRATE.
"""

from __future__ import annotations

import fractions
import multiprocessing

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import av
from aiortc.codecs import get_encoder
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import MAX_FRAME_RATE, H264Encoder
from aiortc.codecs.vpx import Vp8Encoder, number_of_threads
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

RECEIVE_MAX_BITRATE = 1_000_000  # bit/s a browser is asked to send at most
SEND_MAX_BITRATE = 1_000_000  # bit/s the server's encoders send at most

# aiortc's realtime settings for libvpx (aiortc.codecs.vpx.Vp8Encoder.encode), with two changed:
# no temporal denoiser (noise-sensitivity 4 in aiortc) and libvpx's fastest speed step (cpu-used -6
# in aiortc). `scripts/benchmark.py` measures both on the face clip (README, Performance).
# bufsize, minrate and maxrate are the target bitrate (minrate = maxrate: constant bitrate).
VP8_OPTIONS = {
    "cpu-used": "-16",
    "deadline": "realtime",
    "lag-in-frames": "0",
    "noise-sensitivity": "0",
    "overshoot-pct": "15",
    "partitions": "0",  # one token partition
    "static-thresh": "1",
    "undershoot-pct": "100",
}
# aiortc's libx264 settings (aiortc.codecs.h264.H264Encoder._encode_frame) and x264's superfast
# preset instead of its default (medium): far less CPU a frame for nearly the same picture (the
# README's webcam rounds give both, measured by scripts/benchmark.py).
H264_OPTIONS = {"level": "31", "tune": "zerolatency", "preset": "superfast"}
BITRATE_CHANGE = 0.1  # aiortc makes a new codec when the target bitrate moves by more than this


class _OncePerFrame:
    """What the server's encoders add to aiortc's: a frame given twice in a row is encoded once,
    and the codec is the server's (`_new_codec`), made where aiortc would make its own."""

    codec: av.VideoCodecContext | None
    target_bitrate: int

    def __init__(self) -> None:
        super().__init__()
        self._last_frame: av.VideoFrame | None = None

    @property
    def target_bitrate(self) -> int:
        return super().target_bitrate

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        """What the receiver's bandwidth estimate allows, but at most SEND_MAX_BITRATE."""
        super(_OncePerFrame, type(self)).target_bitrate.fset(self, min(bitrate, SEND_MAX_BITRATE))

    def encode(self, frame: av.VideoFrame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        if frame is self._last_frame and not force_keyframe:
            return [], 0  # nothing to send: the sender moves on to the next frame
        self._last_frame = frame
        if self._needs_codec(frame):
            self._open(self._new_codec(frame))  # aiortc's encode then uses it as its own
        return super().encode(frame, force_keyframe)

    def _needs_codec(self, frame: av.VideoFrame) -> bool:
        """aiortc's own test for making a new codec."""
        codec = self.codec
        return (
            codec is None
            or (frame.width, frame.height) != (codec.width, codec.height)
            or abs(self.target_bitrate - codec.bit_rate) / codec.bit_rate > BITRATE_CHANGE
        )

    def _open(self, codec: av.VideoCodecContext) -> None:
        self.codec = codec

    def _new_codec(self, frame: av.VideoFrame) -> av.VideoCodecContext:
        raise NotImplementedError


class ServerVp8Encoder(_OncePerFrame, Vp8Encoder):
    """aiortc's VP8 encoder with VP8_OPTIONS."""

    def _new_codec(self, frame: av.VideoFrame) -> av.VideoCodecContext:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height = frame.width, frame.height
        codec.bit_rate = self.target_bitrate
        codec.pix_fmt = "yuv420p"
        codec.gop_size = 3000  # key frames only when the receiver asks
        codec.qmin, codec.qmax = 2, 56
        bitrate = str(self.target_bitrate)
        codec.options = {**VP8_OPTIONS, "bufsize": bitrate, "minrate": bitrate, "maxrate": bitrate}
        codec.thread_count = number_of_threads(frame.width * frame.height, multiprocessing.cpu_count())
        return codec


class ServerH264Encoder(_OncePerFrame, H264Encoder):
    """aiortc's H.264 encoder with H264_OPTIONS."""

    def _open(self, codec: av.VideoCodecContext) -> None:
        self.buffer_data, self.buffer_pts = b"", None  # as aiortc does for a new codec
        self.codec = codec

    def _new_codec(self, frame: av.VideoFrame) -> av.VideoCodecContext:
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height = frame.width, frame.height
        codec.bit_rate = self.target_bitrate
        codec.pix_fmt = "yuv420p"
        codec.framerate = fractions.Fraction(MAX_FRAME_RATE, 1)
        codec.time_base = fractions.Fraction(1, MAX_FRAME_RATE)
        codec.options = dict(H264_OPTIONS)
        codec.profile = "Baseline"
        return codec


SERVER_ENCODERS = {"video/vp8": ServerVp8Encoder, "video/h264": ServerH264Encoder}


def server_encoder(codec: RTCRtpCodecParameters) -> Encoder:
    """The encoder a sender gets for `codec`: the server's for VP8 and H.264, else aiortc's."""
    encoder = SERVER_ENCODERS.get(codec.mimeType.lower())
    return encoder() if encoder is not None else get_encoder(codec)


class ServerBitrateEstimator(RemoteBitrateEstimator):
    """aiortc's receiver's bandwidth estimate, at most RECEIVE_MAX_BITRATE."""

    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> tuple[int, list[int]] | None:
        estimate = super().add(arrival_time_ms, abs_send_time, payload_size, ssrc)
        if estimate is None:
            return None
        bitrate, ssrcs = estimate
        return min(bitrate, RECEIVE_MAX_BITRATE), ssrcs


def use_server_codecs() -> None:
    """aiortc's senders take their encoders from `server_encoder`, and its receivers estimate
    bandwidth with `ServerBitrateEstimator`, from now on."""
    aiortc.rtcrtpsender.get_encoder = server_encoder
    aiortc.rtcrtpreceiver.RemoteBitrateEstimator = ServerBitrateEstimator
