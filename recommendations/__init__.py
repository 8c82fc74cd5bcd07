"""A quote, an activity and some music for each emotion, chosen without immediate repeats.

The suggestions live in recommendations.json next to this file; it is checked when loaded so a
bad edit fails with a message naming the entry. Pure Python: no Streamlit, no model.
"""

from recommendations.chooser import (
    DATA_FILE,
    EmotionSuggestions,
    Music,
    Quote,
    Recommendation,
    RecommendationsError,
    Recommender,
    load_suggestions,
)

__all__ = [
    "DATA_FILE",
    "EmotionSuggestions",
    "Music",
    "Quote",
    "Recommendation",
    "RecommendationsError",
    "Recommender",
    "load_suggestions",
]
