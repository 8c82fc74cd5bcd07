"""Emotion Lens: facial emotion recognition for photos, a live webcam and video files.

The page's table of contents: its settings, the sidebar and one tab per way in. Each tab lives in
a module of its own under ui/ (`ui.photo`, `ui.webcam`, `ui.video`, `ui.history`); what they share
(the sidebar's settings, the model, the detection log) is in `ui.context`. The engine is the
`emotion` package; suggestions come from `recommendations`.

Only the open tab works: switching tabs reruns the page, and a hidden tab draws only the widgets
whose state must outlive the switch (the uploaders, and the webcam's streamer, so that a stream
plays on); it analyses nothing and queries nothing.
"""

import streamlit as st

from ui import history, photo, video, webcam
from ui.context import load_model, sidebar
from ui.widgets import about_the_model

TABS = ("Photo", "Webcam", "Video", "History")

st.set_page_config(page_title="Emotion Lens", page_icon=":performing_arts:", layout="centered")
st.title("Emotion Lens")
st.markdown(
    "Finds the faces in a photo, a webcam stream or a video and reads each one's expression "
    "as one of seven emotions."
)
settings = sidebar()
loaded = load_model()
if loaded.warning:
    st.warning(loaded.warning)
photo_tab, webcam_tab, video_tab, history_tab = st.tabs(TABS, key="tab", on_change="rerun")
with photo_tab:
    photo.show(loaded.classifier, settings, visible=photo_tab.open)
    if photo_tab.open:
        about_the_model(loaded.classifier)
with webcam_tab:
    webcam.show(loaded.classifier, settings, visible=webcam_tab.open)
with video_tab:
    video.show(loaded.classifier, settings, visible=video_tab.open)
if history_tab.open:
    with history_tab:
        history.show()
