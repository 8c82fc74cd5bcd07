"""Load and validate the suggestions file, and pick one suggestion of each kind per emotion."""

from __future__ import annotations

import importlib.resources
import json
import random
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlparse

from emotion.labels import EMOTIONS

DATA_FILE = Path(str(importlib.resources.files("recommendations") / "recommendations.json"))  # package data
MIN_SUGGESTIONS = 8  # per kind and emotion: enough variety that a session rarely sees a repeat
# Search pages rather than links to one video or track, so a link never goes dead.
YOUTUBE_HOSTS = ("www.youtube.com", "youtube.com", "m.youtube.com", "music.youtube.com")
SPOTIFY_HOSTS = ("open.spotify.com",)


class RecommendationsError(ValueError):
    """The suggestions file is missing, is not JSON, or has a missing or malformed entry."""


class Quote(NamedTuple):
    text: str
    author: str  # "proverb" when no single author is known


class Music(NamedTuple):
    title: str
    artist: str  # the performer, or the mood of a playlist
    url: str  # a YouTube or Spotify search link


class Recommendation(NamedTuple):
    emotion: str
    quote: Quote
    activity: str  # something doable in 5-30 minutes
    music: Music


class EmotionSuggestions(NamedTuple):
    quotes: tuple[Quote, ...]
    activities: tuple[str, ...]
    music: tuple[Music, ...]


def load_suggestions(path: str | Path = DATA_FILE) -> dict[str, EmotionSuggestions]:
    """The suggestions for every emotion in EMOTIONS; RecommendationsError if anything is wrong."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RecommendationsError(f"Cannot read the suggestions file {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise RecommendationsError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise RecommendationsError(f"{path} must hold a JSON object with one entry per emotion")
    unknown = sorted(set(document) - set(EMOTIONS) - {"_about"})
    if unknown:
        raise RecommendationsError(f"{path} has entries for unknown emotions {unknown}; expected {EMOTIONS}")
    return {emotion: _parse_emotion(document, emotion, path) for emotion in EMOTIONS}


def _parse_emotion(document: dict, emotion: str, path: Path) -> EmotionSuggestions:
    entry = document.get(emotion)
    if not isinstance(entry, dict):
        raise RecommendationsError(f"{path} has no entry for the emotion {emotion!r}")
    where = f"{path}: {emotion}"
    quotes = _items(entry, "quotes", where)
    activities = _items(entry, "activities", where)
    music = _items(entry, "music", where)
    return EmotionSuggestions(
        quotes=tuple(
            Quote(*_fields(item, ("text", "author"), f"{where}.quotes[{index}]"))
            for index, item in enumerate(quotes)
        ),
        activities=tuple(
            _text(item, f"{where}.activities[{index}]") for index, item in enumerate(activities)
        ),
        music=tuple(_music(item, f"{where}.music[{index}]") for index, item in enumerate(music)),
    )


def _items(entry: dict, kind: str, where: str) -> list:
    items = entry.get(kind)
    if not isinstance(items, list):
        raise RecommendationsError(f"{where} has no list of {kind}")
    if len(items) < MIN_SUGGESTIONS:
        raise RecommendationsError(f"{where} has {len(items)} {kind}; at least {MIN_SUGGESTIONS} are needed")
    return items


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RecommendationsError(f"{where} must be non-empty text, not {value!r}")
    return value.strip()


def _fields(item: Any, names: Sequence[str], where: str) -> list[str]:
    if not isinstance(item, dict):
        raise RecommendationsError(f"{where} must be an object with {', '.join(names)}")
    return [_text(item.get(name), f"{where}.{name}") for name in names]


def _music(item: Any, where: str) -> Music:
    title, artist, url = _fields(item, ("title", "artist", "url"), where)
    parsed = urlparse(url)
    is_youtube_search = (
        parsed.hostname in YOUTUBE_HOSTS
        and parsed.path == "/results"
        and bool(parse_qs(parsed.query).get("search_query"))
    )
    is_spotify_search = (
        parsed.hostname in SPOTIFY_HOSTS and parsed.path.startswith("/search/") and len(parsed.path) > 8
    )
    if parsed.scheme != "https" or not (is_youtube_search or is_spotify_search):
        raise RecommendationsError(
            f"{where}.url must be an https YouTube or Spotify search link "
            "(https://www.youtube.com/results?search_query=... or https://open.spotify.com/search/...), "
            f"not {url!r}"
        )
    return Music(title, artist, url)


class Recommender:
    """Picks suggestions for an emotion, never the same one twice in a row; thread-safe.

    The app shares one Recommender between sessions or keeps one per session; either way the
    previous pick of each kind is remembered per emotion.
    """

    def __init__(
        self, suggestions: dict[str, EmotionSuggestions] | None = None, rng: random.Random | None = None
    ):
        self._suggestions = suggestions if suggestions is not None else load_suggestions()
        self._rng = rng or random.Random()
        self._previous: dict[str, tuple[int, int, int]] = {}  # emotion -> (quote, activity, music) indices
        self._lock = threading.Lock()

    def recommend(self, emotion: str, rng: random.Random | None = None) -> Recommendation:
        """A quote, an activity and music for `emotion` (one of EMOTIONS); ValueError otherwise."""
        if emotion not in self._suggestions:
            raise ValueError(f"Unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
        suggestions = self._suggestions[emotion]
        rng = rng or self._rng
        with self._lock:  # also guards the shared rng, which is not safe to share between threads
            previous = self._previous.get(emotion, (-1, -1, -1))
            picks = tuple(
                _pick_index(len(items), last, rng)
                for items, last in zip(
                    (suggestions.quotes, suggestions.activities, suggestions.music), previous, strict=True
                )
            )
            self._previous[emotion] = picks
        quote_index, activity_index, music_index = picks
        return Recommendation(
            emotion=emotion,
            quote=suggestions.quotes[quote_index],
            activity=suggestions.activities[activity_index],
            music=suggestions.music[music_index],
        )


def _pick_index(count: int, previous: int, rng: random.Random) -> int:
    """A random index in range(count) other than `previous` (count >= 2)."""
    index = rng.randrange(count - 1) if previous >= 0 else rng.randrange(count)
    return index + 1 if previous >= 0 and index >= previous else index
