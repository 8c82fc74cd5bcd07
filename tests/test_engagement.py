import numpy as np
import pytest

from emotion.engagement import DEFAULT_PRESET, PRESETS, EngagementPreset, engagement_score, get_preset
from emotion.labels import EMOTIONS


def test_the_four_presets_weigh_every_emotion_within_0_and_1_with_a_reason():
    assert {"general", "classroom", "product_demo", "seminar"} <= set(PRESETS)
    assert DEFAULT_PRESET in PRESETS
    for name, preset in PRESETS.items():
        assert preset.name == name
        assert preset.label and preset.description
        assert set(preset.weights) == set(EMOTIONS) == set(preset.rationale)
        assert all(0.0 <= weight <= 1.0 for weight in preset.weights.values())
        assert all(reason.strip() and "\n" not in reason for reason in preset.rationale.values())


def test_score_is_the_probability_weighted_sum_of_the_weights():
    preset = PRESETS["classroom"]
    probabilities = np.zeros(len(EMOTIONS), dtype=np.float32)
    probabilities[EMOTIONS.index("happy")] = 0.5
    probabilities[EMOTIONS.index("neutral")] = 0.3
    probabilities[EMOTIONS.index("sad")] = 0.2
    expected = 0.5 * preset.weights["happy"] + 0.3 * preset.weights["neutral"] + 0.2 * preset.weights["sad"]
    assert engagement_score(probabilities, "classroom") == pytest.approx(expected, abs=1e-6)
    assert engagement_score(probabilities, preset) == pytest.approx(expected, abs=1e-6)


def test_a_certain_emotion_scores_its_weight():
    for emotion in EMOTIONS:
        one_hot = np.eye(len(EMOTIONS), dtype=np.float32)[EMOTIONS.index(emotion)]
        for preset in PRESETS.values():
            assert engagement_score(one_hot, preset) == pytest.approx(preset.weights[emotion])


def test_scores_of_a_batch_lie_between_0_and_1():
    probabilities = np.random.default_rng(0).dirichlet(np.ones(len(EMOTIONS)), size=50)
    for name in PRESETS:
        scores = engagement_score(probabilities, name)
        assert scores.shape == (50,)
        assert np.all((scores >= 0.0) & (scores <= 1.0))


def test_presets_are_read_only():
    with pytest.raises(TypeError):
        PRESETS["general"].weights["happy"] = 0.0
    with pytest.raises(TypeError):
        PRESETS["new"] = PRESETS["general"]


def test_bad_presets_and_inputs_are_refused():
    with pytest.raises(ValueError, match="Unknown engagement preset 'party'"):
        get_preset("party")
    with pytest.raises(ValueError, match="shape"):
        engagement_score(np.ones(5) / 5)
    weights = dict.fromkeys(EMOTIONS, 0.5)
    rationale = dict.fromkeys(EMOTIONS, "because")
    with pytest.raises(ValueError, match="not in \\[0, 1\\]"):
        EngagementPreset("x", "X", "", {**weights, "happy": 1.5}, rationale)
    with pytest.raises(ValueError, match="must name exactly"):
        EngagementPreset("x", "X", "", {"happy": 1.0}, rationale)
