"""The page's charts: one bar per emotion, engagement over time, the video's timeline, and the
History tab's heat map and timeline.

The charts drawn on every refresh (the live panel's and the video's) have Vega-Lite specifications
made once, without data (st.altair_chart would check and convert an Altair chart on every run, most
of the time a live panel's refresh takes); each drawing brings its own data, thinned to at most
CHART_POINTS points. The History tab's heat map and timeline, drawn only when it is open, are
Altair charts."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from emotion import EMOTIONS
from emotion.draw import emotion_color
from emotion.history import POSITION_BINS

CHART_POINTS = 2000  # at most this many points per chart; longer series are thinned
# The charts use the overlay's colour for each emotion.
EMOTION_SCALE = alt.Scale(
    domain=list(EMOTIONS), range=["#{:02x}{:02x}{:02x}".format(*emotion_color(e)) for e in EMOTIONS]
)


def distribution_chart(distribution: Mapping[str, float]) -> None:
    shares = [float(distribution.get(emotion, 0.0)) for emotion in EMOTIONS]
    share_chart(shares, "share")


def share_chart(values, title: str) -> None:
    """One horizontal bar per emotion, in EMOTIONS order, on a 0-100 % axis."""
    table = pd.DataFrame({"emotion": EMOTIONS, title: np.asarray(values, dtype=float)})
    st.vega_lite_chart(table, share_spec(title), width="stretch")


def engagement_chart(table: pd.DataFrame) -> None:
    """Engagement (0-100 %) over time_s seconds."""
    st.vega_lite_chart(table, engagement_spec(points=len(table) < 120), width="stretch")


def vega_lite(chart: alt.Chart) -> dict:
    """The chart's Vega-Lite specification without its data, which each drawing brings."""
    spec = chart.to_dict()
    spec.pop("data", None)
    spec.pop("datasets", None)
    return spec


@functools.cache
def share_spec(title: str) -> dict:
    return vega_lite(
        alt.Chart()
        .mark_bar()
        .encode(
            x=alt.X(f"{title}:Q", title=None, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            y=alt.Y("emotion:N", sort=list(EMOTIONS), title=None, axis=alt.Axis(labelOverlap=False)),
            color=alt.Color("emotion:N", scale=EMOTION_SCALE, legend=None),
            tooltip=["emotion:N", alt.Tooltip(f"{title}:Q", format=".1%")],
        )
        .properties(height=24 * len(EMOTIONS))
    )


@functools.cache
def engagement_spec(points: bool) -> dict:
    return vega_lite(
        alt.Chart()
        .mark_line(point=points)
        .encode(
            x=alt.X("time_s:Q", title="seconds"),
            y=alt.Y("engagement:Q", title=None, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            tooltip=[alt.Tooltip("time_s:Q", title="seconds"), alt.Tooltip("engagement:Q", format=".0%")],
        )
        .properties(height=180)
    )


@functools.cache
def timeline_spec() -> dict:
    return vega_lite(
        alt.Chart()
        .mark_tick(thickness=3)
        .encode(
            x=alt.X("time_s:Q", title="seconds"),
            y=alt.Y("emotion:N", sort=list(EMOTIONS), title=None, scale=alt.Scale(domain=list(EMOTIONS))),
            color=alt.Color("face:N", title=None, legend=alt.Legend(orient="bottom")),
            tooltip=["time_s:Q", "face:N", "emotion:N"],
        )
        .properties(height=220)
    )


def thin(frame: pd.DataFrame, limit: int = CHART_POINTS) -> pd.DataFrame:
    """Every k-th row so that a chart gets at most `limit` points."""
    return frame.iloc[:: max(1, -(-len(frame) // limit))]


def emotion_timeline(rows) -> None:
    """Each face's emotion over time: one tick per (frame, face), thinned."""
    table = thin(
        pd.DataFrame(
            [(row.time_s, f"face {row.face.id}", row.face.emotion) for row in rows],
            columns=["time_s", "face", "emotion"],
        )
    )
    st.vega_lite_chart(table, timeline_spec(), width="stretch")


def position_chart(positions: pd.DataFrame) -> alt.Chart:
    """A heat map of the face centres: the frame cut into POSITION_BINS x POSITION_BINS cells."""
    cells = list(range(POSITION_BINS))
    return (
        alt.Chart(positions)
        .mark_rect()
        .encode(
            x=alt.X("column:O", scale=alt.Scale(domain=cells), axis=None),
            y=alt.Y("row:O", scale=alt.Scale(domain=cells), axis=None),
            color=alt.Color(
                "events:Q",
                title="detections",
                scale=alt.Scale(scheme="oranges"),
                legend=alt.Legend(format="~s"),
            ),
            tooltip=[alt.Tooltip("events:Q", title="detections")],
        )
        .properties(height=240)
    )


def history_timeline(timeline: pd.DataFrame, bucket_s: int) -> alt.VConcatChart:
    # No ticks between two buckets' starts: they would be labelled with fractions of a second.
    time_axis = alt.Axis(tickMinStep=1000 * bucket_s)  # milliseconds
    base = alt.Chart(timeline).encode(x=alt.X("time:T", title=None, axis=time_axis))
    detections = base.mark_bar().encode(y=alt.Y("detections:Q", title="detections")).properties(height=120)
    engagement = (
        base.mark_line(point=len(timeline) < 60)
        .encode(
            y=alt.Y(
                "engagement:Q", title="engagement", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")
            )
        )
        .properties(height=120)
    )
    return alt.vconcat(detections, engagement)
