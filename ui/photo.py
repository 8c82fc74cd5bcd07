"""The Photo tab: uploads and camera snapshots, each analysed once per visitor, shown with its
faces, their emotions, suggestions and downloads."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from pathlib import Path

import streamlit as st

from emotion import EmotionClassifier
from emotion.faces import DetectorSettings
from emotion.history import log_result
from emotion.image import InvalidImage
from emotion.media import PHOTO_EXTENSIONS
from emotion.pipeline import PHOTO_BATCH_MAX, Photo, annotated_png, photo_slot, process_photo
from emotion.results import Face
from ui.charts import share_chart
from ui.context import PageSettings, SessionValue, max_upload_size_mb
from ui.widgets import Download, download_row, suggestion_block

MANY_FACES = 8  # above this many faces in one photo, say that small faces are less reliable
PHOTO_RESULTS_KEPT = 2 * PHOTO_BATCH_MAX  # remembered per visitor: a rerun recomputes none of a batch

# Each photo analysed, by its content's SHA-256 and the detector's settings; the most recent last.
PHOTO_RESULTS: SessionValue[OrderedDict[tuple[str, DetectorSettings], Photo]] = SessionValue(
    "photo_results", OrderedDict
)
# An upload's rerun can start while the run before it still analyses the same photo: the lock
# makes the second wait for the first's result instead of analysing (and logging) it again.
PHOTO_LOCK = SessionValue("photo_lock", threading.Lock)


def show(classifier: EmotionClassifier, settings: PageSettings, visible: bool) -> None:
    """The uploaders, and while the tab is open, each photo's results."""
    uploads = st.file_uploader(
        "Upload photos",
        type=PHOTO_EXTENSIONS,
        accept_multiple_files=True,
        key="photos",
        help=f"JPEG, PNG, WebP and other common formats; up to {PHOTO_BATCH_MAX} at once, "
        f"{max_upload_size_mb()} MB each. The server keeps every file added, analysed or not, until "
        f"it is removed: add at most {PHOTO_BATCH_MAX}.",
    )
    photos = list(uploads or [])
    if len(photos) > PHOTO_BATCH_MAX:
        st.warning(
            f"{len(photos)} photos uploaded: the first {PHOTO_BATCH_MAX} are analysed. Remove some "
            "to see the others; all are kept on the server until you remove them."
        )
        photos = photos[:PHOTO_BATCH_MAX]
    if st.toggle("Take a photo with the camera", key="use_camera"):
        snapshot = st.camera_input("Snapshot", key="snapshot")
        if snapshot is not None:
            photos.append(snapshot)
    if not photos:
        st.info("Upload a photo with a face, or take one with the camera.")
        return
    if not visible:
        return
    for index, photo in enumerate(photos):
        with st.container(border=True, key=f"photo-{index}"):
            show_photo(photo.name, photo.file_id, photo.getvalue(), classifier, settings)


def processed_photo(name: str, data: bytes, classifier: EmotionClassifier, settings: PageSettings) -> Photo:
    """The faces in a photo and its annotated preview; raises InvalidImage.

    Remembered per visitor by the photo's content, so the same photo uploaded again is not
    analysed again either. With the detection log on, a photo's faces are logged when it is
    analysed.
    """
    results = PHOTO_RESULTS.get()
    key = (hashlib.sha256(data).hexdigest(), settings.detector)
    with PHOTO_LOCK.get():
        if key not in results:
            with photo_slot():
                photo = results[key] = process_photo(data, classifier, settings.detector)
            while len(results) > PHOTO_RESULTS_KEPT:
                results.popitem(last=False)
            log_result(
                settings.detection_log,
                photo,
                name=name,
                request=settings,
                model_sha256=classifier.sha256,
                utc_time=time.time(),
                flush=True,  # so that the History tab, opened next, shows it
            )
    results.move_to_end(key)
    return results[key]


def show_photo(
    name: str, file_id: str, data: bytes, classifier: EmotionClassifier, settings: PageSettings
) -> None:
    st.text(name)  # a file name is shown as it is, never read as Markdown
    try:
        photo = processed_photo(name, data, classifier, settings)
    except InvalidImage as error:
        st.error(str(error))
        return
    # Side by side on a wide screen; Streamlit stacks the columns on a phone.
    picture, details = st.columns([3, 2], gap="medium")
    faces = photo.faces
    picture.image(photo.preview, width="stretch", alt=f"{name} with the faces found marked")
    with details:
        if not faces:
            st.info(
                "No face found. Try a well-lit photo with a face looking at the camera, a smaller "
                "minimum face size, or a more sensitive detector (sidebar)."
            )
            return
        if len(faces) > MANY_FACES:
            st.warning(
                f"{len(faces)} faces found. Small faces in a crowd are read less reliably; "
                f"the details cover the {MANY_FACES} largest."
            )
        for number, face in enumerate(faces[:MANY_FACES], start=1):
            show_face(number, face, settings.show_probabilities)
    suggestion_block(file_id, faces[0].emotion, f"For the largest face ({faces[0].emotion}):")
    show_downloads(name, file_id, data, photo)


def show_face(number: int, face: Face, show_probabilities: bool) -> None:
    label = "largest face" if number == 1 else f"face {number}"
    if face.uncertain:
        st.markdown(
            f"{label.capitalize()}: **uncertain**, {face.emotion} ({face.confidence:.0%}) or "
            f"{face.runner_up} ({face.runner_up_probability:.0%})"
        )
    else:
        st.markdown(f"{label.capitalize()}: **{face.emotion}** ({face.confidence:.0%})")
    if show_probabilities:
        share_chart(face.probabilities, "probability")


def show_downloads(name: str, file_id: str, data: bytes, photo: Photo) -> None:
    stem = Path(name).stem or "photo"
    download_row(
        Download(
            "Annotated PNG",
            lambda: annotated_download(data, photo),  # full size: made only when it is downloaded
            f"{stem}-emotions.png",
            "image/png",
            f"png-{file_id}",
        ),
        Download(
            "Results JSON",
            json.dumps(photo.record(name), indent=2),
            f"{stem}-emotions.json",
            "application/json",
            f"json-{file_id}",
        ),
        Download("Results CSV", photo.csv(), f"{stem}-emotions.csv", "text/csv", f"csv-{file_id}"),
    )


def annotated_download(data: bytes, photo: Photo) -> bytes:
    """The annotated PNG, drawn in a photo slot: Streamlit makes deferred downloads in a pool of its
    own, several at once, and a large photo's takes as much as analysing it."""
    with photo_slot():
        return annotated_png(data, photo.faces)
