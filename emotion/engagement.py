"""Engagement: one number in [0, 1] from a face's emotion probabilities.

engagement = sum over emotions of probability x weight, with the weights of a preset chosen for
the setting (a lecture values calm attention, a product demo values delight). Because the
probabilities sum to 1 and every weight lies in [0, 1], the score lies in [0, 1] as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from emotion.labels import EMOTIONS

DEFAULT_PRESET = "general"


@dataclass(frozen=True)
class EngagementPreset:
    """Weights per emotion, each in [0, 1], with the reason for each weight."""

    name: str  # the key in PRESETS
    label: str  # for people: "Product demo"
    description: str
    weights: Mapping[str, float]  # one per EMOTIONS
    rationale: Mapping[str, str]  # one line per emotion: why this weight

    def __post_init__(self):
        for field_name in ("weights", "rationale"):
            mapping = getattr(self, field_name)
            if set(mapping) != set(EMOTIONS):
                raise ValueError(f"Preset {self.name!r}: {field_name} must name exactly {EMOTIONS}")
            # Frozen all the way down: a preset is shared by every caller.
            object.__setattr__(self, field_name, MappingProxyType(dict(mapping)))
        for emotion, weight in self.weights.items():
            if not 0.0 <= weight <= 1.0:
                raise ValueError(f"Preset {self.name!r}: weight of {emotion} is {weight}, not in [0, 1]")

    @property
    def vector(self) -> np.ndarray:
        """The weights in EMOTIONS order, float32 (7,)."""
        return np.array([self.weights[emotion] for emotion in EMOTIONS], dtype=np.float32)


def _preset(name: str, label: str, description: str, **weights_and_reasons: tuple[float, str]):
    return EngagementPreset(
        name=name,
        label=label,
        description=description,
        weights={emotion: weight for emotion, (weight, _) in weights_and_reasons.items()},
        rationale={emotion: reason for emotion, (_, reason) in weights_and_reasons.items()},
    )


PRESETS: Mapping[str, EngagementPreset] = MappingProxyType(
    {
        preset.name: preset
        for preset in (
            _preset(
                "general",
                "General",
                "Any audience: positive and surprised faces count most, calm faces half.",
                angry=(0.3, "Anger is a strong reaction to what happens, but rarely a wanted one."),
                disgust=(0.1, "Disgust usually means the viewer is turning away."),
                fear=(0.2, "Fear shows arousal but mostly discomfort."),
                happy=(1.0, "Enjoyment is the clearest sign of positive engagement."),
                sad=(0.2, "Sadness tends to come with withdrawal."),
                surprise=(0.8, "Surprise marks attention caught by something new."),
                neutral=(0.5, "A calm face may be attentive or absent: half credit."),
            ),
            _preset(
                "classroom",
                "Classroom",
                "Students following a lesson: calm focus and curiosity count, not just smiles.",
                angry=(0.2, "Frustration can come from effort, but usually blocks learning."),
                disgust=(0.1, "Aversion to the material is disengagement."),
                fear=(0.3, "Anxiety (a test, a hard question) still means the student is involved."),
                happy=(0.9, "Enjoying the lesson is engagement."),
                sad=(0.1, "Sadness or boredom is the classic sign of a lost student."),
                surprise=(0.9, "Surprise is curiosity: the moment something new lands."),
                neutral=(0.7, "Focused listening mostly looks neutral in a classroom."),
            ),
            _preset(
                "product_demo",
                "Product demo",
                "An audience watching a product: delight and 'wow' moments are what count.",
                angry=(0.1, "Annoyance with a product is a bad sign, however intense."),
                disgust=(0.0, "Disgust is rejection of the product."),
                fear=(0.2, "Worry (price, risk) shows interest but not appeal."),
                happy=(1.0, "Delight is the goal of a demo."),
                sad=(0.1, "Disappointment: the product missed."),
                surprise=(1.0, "The 'wow' moment a demo is built around."),
                neutral=(0.4, "Polite attention: watching, not yet won over."),
            ),
            _preset(
                "seminar",
                "Seminar",
                "Adults at a talk or discussion: attention is mostly calm, reactions are a bonus.",
                angry=(0.3, "Disagreement means the listener is thinking about the argument."),
                disgust=(0.1, "Aversion means the listener has tuned out."),
                fear=(0.3, "Concern about the topic still shows involvement."),
                happy=(0.8, "Enjoyment of the talk."),
                sad=(0.2, "Sadness or fatigue mostly means attention is drifting."),
                surprise=(0.8, "A new idea landing."),
                neutral=(0.8, "Adults listening closely mostly look neutral."),
            ),
        )
    }
)


def get_preset(preset: str | EngagementPreset = DEFAULT_PRESET) -> EngagementPreset:
    """A preset by name (a key of PRESETS), or the preset itself."""
    if isinstance(preset, EngagementPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"Unknown engagement preset {preset!r}; choose one of {sorted(PRESETS)}") from None


def engagement_score(
    probabilities: np.ndarray, preset: str | EngagementPreset = DEFAULT_PRESET
) -> float | np.ndarray:
    """sum_i probabilities[i] * weight[i]: a float for (7,), float32 (N,) for (N, 7) probabilities."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.shape[-1:] != (len(EMOTIONS),) or probabilities.ndim > 2:
        raise ValueError(f"probabilities must have shape (7,) or (N, 7), got {probabilities.shape}")
    scores = probabilities @ get_preset(preset).vector
    return float(scores) if probabilities.ndim == 1 else scores
