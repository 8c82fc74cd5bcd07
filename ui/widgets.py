"""Pieces several tabs draw: the suggestions for an emotion, a row of downloads and the model's card."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import streamlit as st

from emotion import EMOTIONS, EmotionClassifier
from emotion.model_file import ModelMetadata, shipped_file
from recommendations import EmotionSuggestions, Recommendation, Recommender, load_suggestions
from ui.context import SessionValue

MODEL_CARD = shipped_file("MODEL_CARD.md")

# The suggestion shown under each key, and the visitor's chooser, which never repeats the
# suggestion just shown when "Another suggestion" is asked for.
SUGGESTIONS: SessionValue[dict[str, Recommendation]] = SessionValue("suggestions", dict)
RECOMMENDER = SessionValue("recommender", lambda: Recommender(load_suggestion_file()))


class Download(NamedTuple):
    label: str
    data: bytes | str | Callable[[], bytes | str]  # a function: made only when it is clicked
    file_name: str
    mime: str
    key: str


def download_row(*downloads: Download) -> None:
    """Download buttons side by side; a click downloads without running the page again."""
    buttons = st.container(horizontal=True)
    for download in downloads:
        buttons.download_button(
            download.label,
            download.data,
            file_name=download.file_name,
            mime=download.mime,
            key=download.key,
            on_click="ignore",
        )


def about_the_model(classifier: EmotionClassifier) -> None:
    figures = classifier.metadata.figures  # None: the file carries no evaluation
    posed = figures.posed if figures is not None else None
    acted = figures.acted if figures is not None else None
    with st.expander("About the model"):
        st.markdown(
            "A small convolutional network reads each face (48x48 grayscale, found by the face "
            "finder chosen in the sidebar) as one of seven expressions: "
            + ", ".join(EMOTIONS)
            + ". It learnt from FER2013's faces, each read by ten people (Microsoft's FER+ votes)."
        )
        st.markdown(
            "**What the numbers mean.** The probabilities are calibrated to how many people would "
            "read the face that way: *happy 70 %* means about 7 people in 10 would call it happy. "
            "Where no emotion leads the next by 10 points, the face is shown as uncertain "
            "(*happy or neutral?*) instead of with one label."
        )
        shown = headline_figures(classifier.metadata)
        if shown:
            columns = st.columns(min(3, len(shown)))
            for index, (label, value) in enumerate(shown.items()):
                text = f"{value:.1%}" if isinstance(value, float) else f"{value:,}"
                columns[index % len(columns)].metric(label, text)
        else:
            st.caption("This model file carries no evaluation figures.")
        if posed is not None:
            st.markdown(
                f"*Posed faces*: {posed.images or 'a set of'} photos of people acting six "
                "emotions in a lab (CK+, none of them in the training data), read as the emotion they "
                "acted."
            )
        if acted is not None:
            st.markdown(
                f"*Acted at a camera*: {acted.images or 'a set of'} frames of people facing a camera "
                "(KDEF-dyn, none of them in the training data): the last frame of each clip, the peak "
                "of one acted emotion, read as acted, and the first frame, read as neutral."
            )
        if figures is not None and figures.per_class:
            table = pd.DataFrame.from_dict(
                {emotion: row._asdict() for emotion, row in figures.per_class.items()}, orient="index"
            )
            if posed is not None and posed.recall:
                table["posed recall"] = pd.Series(dict(posed.recall), dtype="float64")
            if acted is not None and acted.recall:
                table["acted recall"] = pd.Series(dict(acted.recall), dtype="float64")
            st.markdown(
                "Per emotion, on the validation faces, against what most of their ten readers "
                "said, and on the posed and acted faces (the model card has the details):"
            )
            st.dataframe(
                table,
                width="stretch",
                column_config={
                    "precision": st.column_config.NumberColumn(format="percent"),
                    "recall": st.column_config.NumberColumn(format="percent"),
                    "posed recall": st.column_config.NumberColumn(format="percent"),
                    "acted recall": st.column_config.NumberColumn(format="percent"),
                },
            )
        st.markdown(
            "**Limitations.** FER2013 is mostly posed or staged web photos; the model reads facial "
            "*expressions*, not feelings, and is less accurate for faces, lighting and cultures "
            "that are rare in its training data. The detector misses faces in profile, tilted, "
            "small or partly hidden. Do not use it to make decisions about people."
        )
        st.caption(f"Model file: {Path(classifier.source).name}")
        if MODEL_CARD.is_file() and st.toggle("Show the model card (model/MODEL_CARD.md)", key="model_card"):
            st.markdown(MODEL_CARD.read_text(encoding="utf-8"))


def headline_figures(metadata: ModelMetadata) -> dict[str, float | int]:
    """The model card's figures that the file carries, by label: the app's own runtime's where
    the file has them (ModelMetadata.figures), fractions as floats and counts as ints."""
    figures = metadata.figures
    posed = figures.posed if figures is not None else None
    acted = figures.acted if figures is not None else None
    candidates = {
        "Agreement with most people": figures and figures.accuracy,
        "Mean recall per emotion": figures and figures.mean_recall,
        "Posed faces read as meant": posed and posed.accuracy,
        "Posed faces: mean recall": posed and posed.mean_recall,
        "Acted at a camera, read as meant": acted and acted.accuracy,
        "Distance from the vote shares": figures and figures.ece_votes,
        "Validation faces": figures and figures.labelled_images,
        "Training faces": metadata.train_images,
        "Parameters": metadata.parameters,
    }
    return {label: value for label, value in candidates.items() if value is not None}


def current_suggestion(key: str, emotion: str, another: bool = False) -> Recommendation:
    """The suggestion shown under `key`; a new one when the emotion changed or `another` is asked."""
    shown = SUGGESTIONS.get()
    if another or key not in shown or shown[key].emotion != emotion:
        shown[key] = RECOMMENDER.get().recommend(emotion)
    return shown[key]


def suggestion_block(key: str, emotion: str, heading: str) -> None:
    suggestion = current_suggestion(key, emotion)
    with st.container(key=f"suggestions-{key}"):
        st.markdown(f"**{heading}**")
        st.markdown(f"Quote: *{suggestion.quote.text}* ({suggestion.quote.author})")
        st.markdown(f"Activity: {suggestion.activity}")
        st.markdown(f"Music: [{suggestion.music.title}]({suggestion.music.url}), {suggestion.music.artist}")
        st.button(
            "Another suggestion",
            key=f"another-{key}",
            on_click=current_suggestion,
            args=(key, emotion, True),
        )


@st.cache_resource(show_spinner=False)
def load_suggestion_file() -> dict[str, EmotionSuggestions]:
    return load_suggestions()


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
