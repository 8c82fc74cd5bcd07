"""The API's settings (secrets file or environment, as for the page; see emotion.settings):

API_KEYS           comma-separated keys, or a list of keys (each entry whole): a TOML list, or
                   a JSON list in the environment ('["k1", "k2"]', as ICE_SERVERS); unset: no
                   key needed. Set, it must hold a key: otherwise the service does not start
API_RESULT_TTL_S   seconds a video job's results are kept after it finished
API_VIDEO_QUEUE    video jobs that may wait for a worker; more get 429
API_LOG_DETECTIONS true: the faces of the photos and videos analysed go to the detection log
                   (HISTORY_PATH), as the page's do with its log switched on; default false
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotion.jobs import WORKERS
from emotion.settings import SettingsError, get_setting, history_settings, upload_limit_mb

logger = logging.getLogger(__name__)

DEFAULT_RESULT_TTL_S = 3600  # one hour to fetch a video's results
DEFAULT_VIDEO_QUEUE = 8  # waiting videos, each at most the upload limit on disk
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class ApiSettings:
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # never shown, never logged
    result_ttl_s: float = DEFAULT_RESULT_TTL_S
    video_queue: int = DEFAULT_VIDEO_QUEUE
    video_workers: int = WORKERS  # 0: jobs are queued but none runs
    upload_limit_mb: int = field(default_factory=upload_limit_mb)  # per file, photo or video: the page's
    detection_log: Path | None = None  # the detection log's file; None: nothing is logged

    @classmethod
    def from_settings(cls, secrets: Mapping[str, Any] | None = None) -> ApiSettings:
        """API_KEYS, API_RESULT_TTL_S, API_VIDEO_QUEUE and API_LOG_DETECTIONS (with HISTORY_PATH); a
        malformed number or switch is logged, its default used. Raises SettingsError for API_KEYS
        set to no usable key: an API meant to be closed must not open silently."""
        return cls(
            api_keys=_api_keys(get_setting("API_KEYS", secrets)),
            result_ttl_s=_number_setting("API_RESULT_TTL_S", secrets, DEFAULT_RESULT_TTL_S, minimum=0),
            video_queue=int(_number_setting("API_VIDEO_QUEUE", secrets, DEFAULT_VIDEO_QUEUE, minimum=1)),
            detection_log=history_settings(secrets).path if _switch("API_LOG_DETECTIONS", secrets) else None,
        )


def _api_keys(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) and value.strip().startswith("["):  # a JSON list, from the environment
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise SettingsError(f"API_KEYS starts with '[' but is no JSON list: {error.msg}") from None
        if not isinstance(value, list):
            raise SettingsError(f"API_KEYS must be a JSON list of strings, not {type(value).__name__}")
    if isinstance(value, str):
        keys = value.split(",")
    elif isinstance(value, list) and all(isinstance(key, str) for key in value):
        keys = value  # a TOML list: each entry is one key, commas and all
    else:
        raise SettingsError(
            f"API_KEYS must be keys separated by commas or a list of strings, not {type(value).__name__}"
        )
    usable = tuple(key.strip() for key in keys if key.strip())
    if not usable:
        raise SettingsError("API_KEYS is set but holds no key; set a key, or unset it for an open API")
    return usable


def _switch(name: str, secrets: Mapping[str, Any] | None) -> bool:
    """An on/off setting: a TOML boolean, or true/false, yes/no, on/off, 1/0; unset: off."""
    value = get_setting(name, secrets, False)
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        logger.warning("%s must be true or false, not %r; using false", name, value)
    return word in TRUE_WORDS


def _number_setting(name: str, secrets: Mapping[str, Any] | None, default: float, minimum: float) -> float:
    value = get_setting(name, secrets, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or number < minimum:
        logger.warning("%s must be a number of at least %g, not %r; using %g", name, minimum, value, default)
        return default
    return number
