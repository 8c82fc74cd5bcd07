"""The webcam's codecs: aiortc's VP8 and H.264 with the server's settings, a repeated frame sent once, and
the bitrates the server sends and asks for."""

from __future__ import annotations

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import av
import numpy as np
import pytest
from aiortc.codecs import get_capabilities, h264_depayload, vp8_depayload
from aiortc.codecs.h264 import H264Decoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import VIDEO_TIME_BASE
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from ui.encoder import (
    H264_OPTIONS,
    RECEIVE_MAX_BITRATE,
    SEND_MAX_BITRATE,
    VP8_OPTIONS,
    ServerBitrateEstimator,
    ServerH264Encoder,
    ServerVp8Encoder,
    server_encoder,
    use_server_codecs,
)

# Each server encoder, the receiver's decoder and depayloader, and the options it opens its codec with.
ENCODERS = {
    "vp8": (ServerVp8Encoder, Vp8Decoder, vp8_depayload, VP8_OPTIONS),
    "h264": (ServerH264Encoder, H264Decoder, h264_depayload, H264_OPTIONS),
}


def camera_frames(count: int) -> list[av.VideoFrame]:
    """yuv420p 320x240 frames of a bright square moving over noise, as a decoder gives them."""
    rng = np.random.default_rng(0)
    frames = []
    for index in range(count):
        picture = rng.integers(0, 60, (240, 320, 3), dtype=np.uint8)
        picture[80:160, 40 + 10 * index : 120 + 10 * index] = 230
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = 3000 * index, VIDEO_TIME_BASE
        frames.append(frame)
    return frames


def codec(mime_type: str) -> RTCRtpCodecParameters:
    capabilities = get_capabilities("audio" if mime_type.startswith("audio") else "video").codecs
    capability = next(c for c in capabilities if c.mimeType == mime_type)
    return RTCRtpCodecParameters(
        mimeType=capability.mimeType,
        clockRate=capability.clockRate,
        channels=capability.channels,
        payloadType=96,
    )


@pytest.mark.parametrize("name", ENCODERS)
def test_each_frame_is_encoded_once_and_a_repeated_one_not_sent_again(name):
    encoder_class, decoder_class, depayload, _ = ENCODERS[name]
    encoder = encoder_class()
    first, second = camera_frames(2)

    payloads, timestamp = encoder.encode(first)
    data = b"".join(depayload(payload) for payload in payloads)
    [picture] = decoder_class().decode(JitterFrame(data, timestamp))
    assert (picture.width, picture.height) == (320, 240)
    assert encoder.encode(first) == ([], 0)  # the same frame again: nothing to send
    assert encoder.encode(second)[0]
    assert encoder.encode(second, force_keyframe=True)[0]  # a key frame asked for is sent


@pytest.mark.parametrize("name", ENCODERS)
def test_the_codec_has_the_servers_settings_whatever_the_bitrate(name):
    encoder_class, _, _, options = ENCODERS[name]
    encoder = encoder_class()
    made = []
    new_codec = encoder._new_codec
    encoder._new_codec = lambda frame: made.append(new_codec(frame)) or made[-1]
    frames = camera_frames(3)

    encoder.encode(frames[0])
    encoder.encode(frames[1])
    assert made == [encoder.codec]  # one codec while nothing changes
    encoder.target_bitrate = encoder.target_bitrate // 2  # the receiver's bandwidth estimate fell
    encoder.encode(frames[2])

    assert len(made) == 2 and encoder.codec is made[1]  # made again with the server's settings
    assert encoder.codec.bit_rate == encoder.target_bitrate
    rate = str(encoder.target_bitrate)
    expected = {**options, "bufsize": rate, "minrate": rate, "maxrate": rate} if name == "vp8" else options
    assert new_codec(frames[0]).options == expected  # before the codec opens (and consumes) them


@pytest.mark.parametrize("name", ENCODERS)
def test_the_encoders_send_at_most_the_servers_bitrate_whatever_the_receiver_allows(name):
    encoder = ENCODERS[name][0]()
    encoder.target_bitrate = 10 * SEND_MAX_BITRATE

    assert encoder.target_bitrate == SEND_MAX_BITRATE
    encoder.encode(camera_frames(1)[0])
    assert encoder.codec.bit_rate == SEND_MAX_BITRATE


def last_estimate(estimator: RemoteBitrateEstimator, bitrate: int) -> tuple[int, list[int]]:
    """The last bandwidth estimate of a receiver given 4 s of 1200-byte packets at `bitrate` (aiortc's
    estimator gives its first after 3 s)."""
    estimate = None
    interval_ms = 1200 * 8 * 1000 / bitrate
    for index in range(round(4000 / interval_ms)):
        sent_ms = index * interval_ms
        abs_send_time = int(sent_ms / 1000 * (1 << 18)) & 0xFFFFFF  # 6.18 fixed-point seconds
        estimate = estimator.add(int(sent_ms) + 20, abs_send_time, 1200, 1) or estimate
    return estimate


def test_the_receivers_ask_browsers_for_at_most_the_servers_bitrate():
    assert last_estimate(RemoteBitrateEstimator(), 3_000_000)[0] > 2 * RECEIVE_MAX_BITRATE  # aiortc's own
    assert last_estimate(ServerBitrateEstimator(), 3_000_000) == (RECEIVE_MAX_BITRATE, [1])
    slow = RECEIVE_MAX_BITRATE // 2
    assert last_estimate(ServerBitrateEstimator(), slow) == last_estimate(RemoteBitrateEstimator(), slow)


@pytest.fixture
def aiortc_codecs():
    encoder, estimator = aiortc.rtcrtpsender.get_encoder, aiortc.rtcrtpreceiver.RemoteBitrateEstimator
    yield
    aiortc.rtcrtpsender.get_encoder, aiortc.rtcrtpreceiver.RemoteBitrateEstimator = encoder, estimator


def test_aiortc_senders_take_the_server_encoders_for_video(aiortc_codecs):
    use_server_codecs()

    assert aiortc.rtcrtpreceiver.RemoteBitrateEstimator is ServerBitrateEstimator
    assert aiortc.rtcrtpsender.get_encoder is server_encoder
    assert isinstance(server_encoder(codec("video/VP8")), ServerVp8Encoder)
    assert isinstance(server_encoder(codec("video/H264")), ServerH264Encoder)
    assert isinstance(server_encoder(codec("audio/opus")), OpusEncoder)
