"""The suggestions file, its validation, and the no-immediate-repeat chooser."""

from __future__ import annotations

import copy
import itertools
import json
import random
import threading
from urllib.parse import urlparse

import pytest

import recommendations
from emotion.labels import EMOTIONS
from recommendations import (
    DATA_FILE,
    Music,
    Quote,
    Recommendation,
    RecommendationsError,
    Recommender,
    load_suggestions,
)


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


def write(tmp_path, document) -> str:
    path = tmp_path / "suggestions.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_bundled_file_covers_every_emotion():
    suggestions = load_suggestions()
    assert tuple(suggestions) == EMOTIONS
    for emotion in EMOTIONS:
        entry = suggestions[emotion]
        assert len(entry.quotes) >= 8
        assert len(entry.activities) >= 8
        assert len(entry.music) >= 8
        assert len(set(entry.quotes)) == len(entry.quotes)
        assert len(set(entry.activities)) == len(entry.activities)
        assert len({music.url for music in entry.music}) == len(entry.music)
        for music in entry.music:
            assert urlparse(music.url).hostname in ("www.youtube.com", "open.spotify.com")


def test_recommend_returns_one_of_each_kind_for_every_emotion():
    suggestions = load_suggestions()
    recommender = Recommender()
    for emotion in EMOTIONS:
        recommendation = recommender.recommend(emotion)
        assert isinstance(recommendation, Recommendation)
        assert recommendation.emotion == emotion
        assert isinstance(recommendation.quote, Quote)
        assert recommendation.quote in suggestions[emotion].quotes
        assert recommendation.activity in suggestions[emotion].activities
        assert isinstance(recommendation.music, Music)
        assert recommendation.music in suggestions[emotion].music
        text, author = recommendation.quote
        title, artist, url = recommendation.music
        assert text and author and title and artist and url.startswith("https://")


def test_no_immediate_repeats_and_every_suggestion_comes_up():
    recommender = Recommender(rng=random.Random(7))
    suggestions = load_suggestions()
    for emotion in EMOTIONS:
        picks = [recommender.recommend(emotion) for _ in range(400)]
        for before, after in itertools.pairwise(picks):
            assert after.quote != before.quote
            assert after.activity != before.activity
            assert after.music != before.music
        assert {pick.quote for pick in picks} == set(suggestions[emotion].quotes)
        assert {pick.music for pick in picks} == set(suggestions[emotion].music)


def test_previous_pick_is_remembered_per_emotion():
    recommender = Recommender(rng=random.Random(3))
    last_happy = recommender.recommend("happy")
    for _ in range(50):
        recommender.recommend("sad")
        happy = recommender.recommend("happy")
        assert happy.quote != last_happy.quote
        last_happy = happy


def test_same_seed_gives_the_same_sequence():
    first = Recommender(rng=random.Random(42))
    second = Recommender(rng=random.Random(42))
    assert [first.recommend("fear") for _ in range(20)] == [second.recommend("fear") for _ in range(20)]
    third = Recommender()
    assert third.recommend("fear", rng=random.Random(42)) == Recommender().recommend(
        "fear", rng=random.Random(42)
    )


def test_concurrent_calls_share_one_recommender():
    recommender = Recommender(rng=random.Random(0))
    suggestions = load_suggestions()["angry"]
    results: list[Recommendation] = []
    errors: list[BaseException] = []

    def worker():
        try:
            for _ in range(200):
                results.append(recommender.recommend("angry"))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 800
    assert all(result.quote in suggestions.quotes for result in results)
    # The state the threads left behind still rules out an immediate repeat.
    first, second = recommender.recommend("angry"), recommender.recommend("angry")
    assert second.quote != first.quote


@pytest.mark.parametrize("emotion", ["joy", "Happy", "", "contempt"])
def test_unknown_emotion_is_a_clear_value_error(emotion):
    with pytest.raises(ValueError, match=r"Unknown emotion .*expected one of angry, disgust, fear"):
        Recommender().recommend(emotion)


def test_missing_file(tmp_path):
    with pytest.raises(RecommendationsError, match="Cannot read the suggestions file"):
        load_suggestions(tmp_path / "missing.json")


def test_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"angry": [', encoding="utf-8")
    with pytest.raises(RecommendationsError, match="is not valid JSON"):
        load_suggestions(path)


def test_missing_emotion(tmp_path, document):
    broken = copy.deepcopy(document)
    del broken["surprise"]
    with pytest.raises(RecommendationsError, match="no entry for the emotion 'surprise'"):
        load_suggestions(write(tmp_path, broken))


def test_unknown_emotion_entry(tmp_path, document):
    broken = copy.deepcopy(document)
    broken["joy"] = broken["happy"]
    with pytest.raises(RecommendationsError, match=r"unknown emotions \['joy'\]"):
        load_suggestions(write(tmp_path, broken))


def test_too_few_suggestions(tmp_path, document):
    broken = copy.deepcopy(document)
    broken["fear"]["activities"] = broken["fear"]["activities"][:7]
    with pytest.raises(RecommendationsError, match="fear has 7 activities; at least 8 are needed"):
        load_suggestions(write(tmp_path, broken))


@pytest.mark.parametrize(
    ("kind", "field", "value", "message"),
    [
        ("quotes", "author", "", r"sad.quotes\[0\].author must be non-empty text"),
        ("quotes", "text", None, r"sad.quotes\[0\].text must be non-empty text"),
        ("music", "title", "   ", r"sad.music\[0\].title must be non-empty text"),
        (
            "music",
            "url",
            "http://www.youtube.com/results?search_query=x",
            "must be an https YouTube or Spotify",
        ),
        ("music", "url", "https://www.youtube.com/watch?v=dQw4w9WgXcQ", "search link"),
        ("music", "url", "https://example.com/search/x", "search link"),
        ("music", "url", "https://open.spotify.com/search/", "search link"),
    ],
)
def test_malformed_entries(tmp_path, document, kind, field, value, message):
    broken = copy.deepcopy(document)
    broken["sad"][kind][0][field] = value
    with pytest.raises(RecommendationsError, match=message):
        load_suggestions(write(tmp_path, broken))


def test_empty_activity(tmp_path, document):
    broken = copy.deepcopy(document)
    broken["neutral"]["activities"][2] = ""
    with pytest.raises(RecommendationsError, match=r"neutral.activities\[2\] must be non-empty text"):
        load_suggestions(write(tmp_path, broken))


def test_package_exports():
    assert set(recommendations.__all__) >= {"Recommender", "Recommendation", "RecommendationsError"}
