"""The History tab: the detection log (or a batch table) behind an optional password, filtered by
source and time, with its charts, exports and a delete button."""

from __future__ import annotations

import datetime as dt
import functools
import math

import pandas as pd
import streamlit as st

from emotion.history import (
    DetectionLog,
    HistoryError,
    ParquetHistory,
    Selection,
    csv_bytes,
    export_table,
    overview,
    parquet_bytes,
    summarise,
)
from emotion.results import csv_text
from emotion.settings import (
    PasswordAttempts,
    client_address,
    history_settings,
    password_matches,
    trusted_proxies,
)
from ui.charts import distribution_chart, history_timeline, position_chart
from ui.context import HISTORY_UNLOCKED, SessionValue, open_detection_log
from ui.widgets import Download, download_row, percent

HISTORY_SLIDER_STEPS = 500  # the History tab's time slider moves in steps of its range / this, at least 1 s
# The per-source table's columns on the page, each as wide as its content: they fit beside the
# open sidebar in a 900-pixel window (tests/test_browser.py). Its kind and frames stay in the table
# data and the exports.
PER_SOURCE_COLUMNS = ("source", "detections", "first", "last", "engagement", "emotion")

REFUSED = SessionValue("history_refused", str)  # the wrong password last entered, not counted again
CONFIRM_DELETE = SessionValue("history_confirm_delete", bool)  # "Delete the history..." was pressed
# The filters' choices, kept apart from their widgets: Streamlit drops an undrawn widget's state,
# and a hidden tab draws nothing. The sources chosen; the time range's ends (None: open).
CHOSEN_SOURCES: SessionValue[list[str]] = SessionValue("history_chosen_sources", list)
CHOSEN_TIMES: SessionValue[tuple[dt.datetime | None, dt.datetime | None]] = SessionValue(
    "history_chosen_times", lambda: (None, None)
)


def show() -> None:
    config = history_settings(st.secrets)
    if config.password and not HISTORY_UNLOCKED.get():
        ask_password(config.password)
        return
    store: DetectionLog | ParquetHistory = open_detection_log(str(config.path))
    if config.table is not None:
        shown = st.radio(
            "Show",
            ["Detection log", "Batch table"],
            horizontal=True,
            key="history_store",
            help="The batch table is the folder that HISTORY_TABLE names, written by the batch command.",
        )
        if shown == "Batch table":
            store = ParquetHistory(config.table)
    try:
        whole = store.read(overview)
    except HistoryError as error:
        st.warning(str(error))
        return
    if whole.events == 0:
        st.info(
            "No detections are kept yet. Switch on **Keep a detection log** in the sidebar, then use "
            "the webcam, a video or photos."
        )
        return
    selection = history_selection(whole)
    st.button("Refresh", key="history-refresh", help="Show what has been kept since, a live webcam's too.")
    summary = store.read(lambda connection: summarise(connection, selection))
    with st.container(key="history-results"):
        columns = st.columns(3)
        columns[0].metric("Detections", f"{summary.events:,}")
        columns[1].metric("Sources", f"{len(summary.per_source):,}")
        columns[2].metric("Mean engagement", percent(summary.mean_engagement))
        if not summary.events:
            st.info("No detections in this selection.")
        else:
            st.markdown("Emotions")
            distribution_chart(summary.distribution)
            st.markdown("Where faces appear in the frame")
            st.altair_chart(position_chart(summary.positions), width="stretch")
            st.markdown(f"Detections and engagement over time (UTC, per {summary.bucket_s} s)")
            st.altair_chart(history_timeline(summary.timeline, summary.bucket_s), width="stretch")
            day, time_format = per_source_times(summary.per_source)
            st.markdown(f"Per source (UTC{day})")
            st.dataframe(
                neutralised(summary.per_source),  # its toolbar downloads the cells as CSV, as shown
                hide_index=True,
                width="stretch",
                column_order=PER_SOURCE_COLUMNS,
                column_config={
                    "first": st.column_config.DatetimeColumn(format=time_format),
                    "last": st.column_config.DatetimeColumn(format=time_format),
                    "engagement": st.column_config.NumberColumn("engaged", format="percent"),
                },
            )
            # Made when clicked, not on every run: a selection can be large.
            download_row(
                Download(
                    "Selection as Parquet",
                    functools.partial(export_selection, store, selection, parquet_bytes),
                    "detections.parquet",
                    "application/vnd.apache.parquet",
                    "history-parquet",
                ),
                Download(
                    "Selection as CSV",
                    functools.partial(export_selection, store, selection, csv_bytes),
                    "detections.csv",
                    "text/csv",
                    "history-csv",
                ),
            )
    if isinstance(store, DetectionLog):
        delete_history(store, whole.events)


@st.cache_resource
def password_attempts() -> PasswordAttempts:
    """Every visitor's wrong passwords, for the server's throttle as much as for each visitor's."""
    return PasswordAttempts()


def ask_password(password: str) -> None:
    """Ask for the history's password, throttled; the page runs again once it is given."""
    entered = st.text_input("Password for the history", type="password", key="history_password")
    if not entered:
        st.info("The history is protected: enter the password set by HISTORY_PASSWORD.")
        return
    if entered == REFUSED.get():  # a rerun with the same wrong password: no new attempt
        st.error("That is not the password.")
        return
    attempts = password_attempts()
    visitor = visitor_address()
    wait_s = attempts.wait_s(visitor)
    if wait_s > 0:
        st.error(f"Too many wrong passwords: try again in {math.ceil(wait_s)} s.")
        return
    if not password_matches(entered, password):
        attempts.failed(visitor)
        REFUSED.set(entered)
        st.error("That is not the password.")
        return
    attempts.succeeded(visitor)
    HISTORY_UNLOCKED.set(True)
    st.rerun()  # the sidebar, drawn before, offers the log now


def visitor_address() -> str:
    """Whose password attempts: the visitor's address, through the proxies TRUSTED_PROXIES names
    (a session, new with each reload, would give a fresh set of tries each time)."""
    peer = st.context.ip_address
    if not isinstance(peer, str):  # None on this machine; under AppTest a stand-in object
        peer = None
    forwarded_for = st.context.headers.get("X-Forwarded-For")
    return client_address(peer, forwarded_for, trusted_proxies(st.secrets))


def neutralised(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its text cells neutralised as every CSV's are (emotion.results.csv_text)."""
    table = table.copy()
    for column in table.columns:
        if pd.api.types.is_string_dtype(table[column]) or table[column].dtype == object:
            table[column] = table[column].map(lambda cell: csv_text(cell) if isinstance(cell, str) else cell)
    return table


def per_source_times(per_source: pd.DataFrame) -> tuple[str, str]:
    """(", DAY" for the title, the time format) of the first and last columns, five characters
    each: the time of day where every source lies within one UTC day, else the day."""
    days = {time.date() for time in (per_source["first"].min(), per_source["last"].max())}
    if len(days) == 1:
        return f", {days.pop():%Y-%m-%d}", "HH:mm"
    return "", "MMM D"


def export_selection(store: DetectionLog | ParquetHistory, selection: Selection, encode) -> bytes:
    return encode(store.read(lambda connection: export_table(connection, selection)))


def history_selection(whole) -> Selection:
    """The sources and time range chosen in the tab's filters, as the visitor left them when
    the tab was last open (sources since deleted are dropped)."""
    sources = st.multiselect(
        "Sources",
        whole.sources,
        default=[source for source in CHOSEN_SOURCES.get() if source in whole.sources],
        placeholder="All sources",
        key="history_sources",
    )
    CHOSEN_SOURCES.set(list(sources))
    start = end = None  # open: every event
    first, last = whole.first.replace(tzinfo=None), whole.last.replace(tzinfo=None)  # naive UTC
    if first < last:
        step_s = max(1, int((last - first).total_seconds() // HISTORY_SLIDER_STEPS))
        kept_start, kept_end = (
            None if time is None else min(max(time.replace(tzinfo=None), first), last)
            for time in CHOSEN_TIMES.get()
        )
        chosen = st.slider(
            "Time (UTC)",
            min_value=first,
            max_value=last,
            value=(kept_start or first, max(kept_end or last, kept_start or first)),
            step=dt.timedelta(seconds=step_s),
            format="YYYY-MM-DD HH:mm:ss",
            key="history_time",
        )
        # An end left where it was stays open, so that events logged since are shown too.
        start = None if chosen[0] <= first else chosen[0].replace(tzinfo=dt.UTC)
        end = None if chosen[1] >= last else chosen[1].replace(tzinfo=dt.UTC)
        CHOSEN_TIMES.set((start, end))
    return Selection(tuple(sources), start, end)


def delete_history(log: DetectionLog, events: int) -> None:
    if not CONFIRM_DELETE.get():
        st.button(
            "Delete the history...",
            key="history-delete",
            on_click=CONFIRM_DELETE.set,
            args=(True,),
        )
        return
    st.warning(
        f"Delete all {events:,} detections kept on this server, for every visitor? This cannot be undone."
    )
    buttons = st.container(horizontal=True)
    if buttons.button("Delete everything", type="primary", key="history-delete-confirm"):
        CONFIRM_DELETE.set(False)
        try:
            log.delete_all()
        except HistoryError as error:
            st.error(str(error))
            return
        st.rerun()
    if buttons.button("Cancel", key="history-delete-cancel"):
        CONFIRM_DELETE.set(False)
        st.rerun()
