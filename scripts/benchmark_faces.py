"""Each face finder on turned faces, through the whole photo pipeline: prints figures, asserts nothing.

    python scripts/benchmark_faces.py [--data ../shared/data/ferplus] [--faces 600] [--finder NAME]
        [--angles 0,30] [--face-side 160] [--sensitivity balanced] [--posed] [--framing] [--false-alarms]
        [--close-ups]

FER+ val faces with a majority label (faces from the web, some hard to see at any angle), or with
--posed the posed development set's faces (../posed/ckplus_dev.npz beside --data: people acting
six emotions in a lab, facing the camera, as in posed photos), are upscaled (bicubic) to
FACE_SIDE pixels (--face-side) and set in the middle of a 640x480 picture whose border repeats
the face's edge, then the picture is turned about the face's centre by 0, +-15, +-30 and +-45
degrees. Each picture goes through emotion.analyze_image with each finder, at the photo preset
and the sensitivity. A face counts as found when a face's box holds the face's centre, and as
right when its emotion is the FER+ majority or the posed label (a face not found is wrong).
Time per 640x480 frame is the median process CPU time and wall time of analyze_image on these
pictures (the classifier's threads included).

--false-alarms counts the boxes each finder puts on FACE_FREE_IMAGES, skimage's pictures without
a person (two of them show a cat), each resized to 640x480, 1600x1200 and 4000x3000 (a phone's
12 megapixels); and the boxes beside the one face in skimage's two photos of a person
(PEOPLE_IMAGES), each enlarged one to eight times. It needs no data.

--close-ups shows each face alone as the whole picture, as a photo cropped to the face (or a
person leaning into the webcam): upscaled to 96, 300 and 1000 pixels, whole and with a fifth of
it cut off on the left; the share of faces found and read right, at the photo and live presets.

--framing measures where FER2013 puts a face in its square, as the BlazeFace finder sees it
(emotion.faces.blazeface.FER_FRAMING): each val face upscaled to 144 px and border-extended by
its side, the median eye height, eye distance and box side as fractions of the face's side.
Without the data it says so and exits.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from emotion.faces import (
    FINDER_NAMES,
    PHOTO_DETECTOR,
    SENSITIVITIES,
    detector_settings,
)
from emotion.labels import EMOTIONS

REPO = Path(__file__).resolve().parent.parent


FRAME_SIZE = (640, 480)  # (width, height)
FACE_SIDE = 160  # pixels: a third of the frame's height, as a webcam shows a face at about a metre
ANGLES = (0, 15, -15, 30, -30, 45, -45)  # degrees, counterclockwise
FRAMING_SIDE = 144  # pixels: the face's side in the framing measurement
FACE_FREE_IMAGES = (  # skimage.data's pictures without a person that scikit-image ships
    "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "moon", "page", "text",
    "coins", "horse", "grass", "gravel", "brick", "clock", "checkerboard", "retina", "colorwheel",
    "logo", "cell", "binary_blobs", "microaneurysms", "shepp_logan_phantom", "cat",
)  # fmt: skip
FALSE_ALARM_SIZES = ((640, 480), (1600, 1200), (4000, 3000))
PEOPLE_IMAGES = {"astronaut": (222, 114), "camera": (226, 161)}  # name -> the face's centre (x, y)
PEOPLE_SCALES = (1, 2, 4, 8)
CLOSE_UP_SIDES = (96, 300, 1000)  # pixels: a photo cropped to the face, small to large
CLOSE_UP_CUT = 0.2  # of the face's side cut off on the left, as a face at the picture's edge


def picture(face: np.ndarray, angle: float, side: int = FACE_SIDE) -> np.ndarray:
    """A 48x48 face upscaled to `side` pixels in the middle of a FRAME_SIZE picture, turned by angle."""
    width, height = FRAME_SIZE
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    left, top = (width - side) // 2, (height - side) // 2
    frame = cv2.copyMakeBorder(big, top, height - side - top, left, width - side - left, cv2.BORDER_REPLICATE)
    turn = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, 1.0)
    return cv2.warpAffine(frame, turn, FRAME_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def found_face(faces, center: tuple[float, float]):
    """The largest face whose box holds the point, or None."""
    for face in faces:
        x, y, w, h = face.box
        if x <= center[0] < x + w and y <= center[1] < y + h:
            return face
    return None


def accuracy_table(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    finders: Sequence[str],
    angles: Sequence[int],
    side: int,
    sensitivity: str,
) -> None:
    import emotion

    classifier = emotion.load_classifier()
    center = (FRAME_SIZE[0] / 2.0, FRAME_SIZE[1] / 2.0)
    width, height = FRAME_SIZE
    print(f"{len(images)} {name} at {side} px in {width}x{height} pictures; sensitivity {sensitivity}")
    print("| finder | angle | faces found | emotion right | CPU ms per frame | wall ms per frame |")
    print("|---|---|---|---|---|---|")
    for finder in finders:
        settings = detector_settings("photo", sensitivity, finder=finder)
        for angle in angles:
            found = right = 0
            cpu, wall = [], []
            for face, label in zip(images, labels, strict=True):
                rgb = picture(face, angle, side)
                started_cpu, started_wall = time.process_time(), time.perf_counter()
                faces = emotion.analyze_image(rgb, classifier, settings)
                cpu.append(time.process_time() - started_cpu)
                wall.append(time.perf_counter() - started_wall)
                match = found_face(faces, center)
                found += match is not None
                right += match is not None and match.emotion == EMOTIONS[label]
            count = len(images)
            print(
                f"| {finder} | {angle:+d} | {found / count:.1%} | {right / count:.1%} | "
                f"{1000 * statistics.median(cpu):.1f} | {1000 * statistics.median(wall):.1f} |"
            )


def close_ups(
    name: str, images: np.ndarray, labels: np.ndarray, finders: Sequence[str], sensitivity: str
) -> None:
    """Each face alone as the whole picture (a photo cropped to the face), upscaled to each of
    CLOSE_UP_SIDES, whole and cut on the left by CLOSE_UP_CUT: the share found (any box) and read
    right (the largest face), with each finder at each preset."""
    import emotion

    classifier = emotion.load_classifier()
    print(f"{len(images)} {name} as the whole picture; sensitivity {sensitivity}")
    print("| finder | preset | side px | cut | faces found | emotion right |")
    print("|---|---|---|---|---|---|")
    for finder, preset, side, cut in itertools.product(
        finders, ("photo", "live"), CLOSE_UP_SIDES, (0.0, CLOSE_UP_CUT)
    ):
        settings = detector_settings(preset, sensitivity, finder=finder)
        found = right = 0
        for face, label in zip(images, labels, strict=True):
            big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)[:, round(cut * side) :]
            faces = emotion.analyze_image(np.ascontiguousarray(big), classifier, settings)
            found += bool(faces)
            right += bool(faces) and faces[0].emotion == EMOTIONS[label]
        count = len(images)
        print(f"| {finder} | {preset} | {side} | {cut:.0%} | {found / count:.1%} | {right / count:.1%} |")


def skimage_picture(name: str) -> np.ndarray:
    """skimage.data's picture `name` as RGB uint8 (its random blobs always the same ones)."""
    from skimage import data
    from skimage.util import img_as_ubyte

    image = img_as_ubyte(data.binary_blobs(rng=0) if name == "binary_blobs" else getattr(data, name)())
    return image[..., :3] if image.ndim == 3 else np.stack([image] * 3, axis=-1)


def false_alarms(sensitivity: str) -> None:
    from emotion.faces import detect_faces

    pictures = {}  # "name WxH" -> RGB uint8
    for name in FACE_FREE_IMAGES:
        image = skimage_picture(name)
        for width, height in FALSE_ALARM_SIZES:
            pictures[f"{name} {width}x{height}"] = cv2.resize(
                image, (width, height), interpolation=cv2.INTER_AREA
            )
    sizes = ", ".join(f"{width}x{height}" for width, height in FALSE_ALARM_SIZES)
    print(f"false alarms on {len(FACE_FREE_IMAGES)} pictures without a person, each at {sizes}")
    for finder in FINDER_NAMES:
        settings = detector_settings("photo", sensitivity, finder=finder)
        counts = {label: len(detect_faces(picture, settings)) for label, picture in pictures.items()}
        boxed = [label for label, count in counts.items() if count]
        print(
            f"  {finder}: {sum(counts.values())} boxes on {len(boxed)} of {len(pictures)}: {', '.join(boxed)}"
        )
    scales = ", ".join(f"{scale}x" for scale in PEOPLE_SCALES)
    print(f"boxes beside the face in skimage's {', '.join(PEOPLE_IMAGES)}, each enlarged {scales}")
    for finder in FINDER_NAMES:
        settings = detector_settings("photo", sensitivity, finder=finder)
        extra, found, boxed = 0, 0, []
        for name, (x, y) in PEOPLE_IMAGES.items():
            image = skimage_picture(name)
            for scale in PEOPLE_SCALES:
                faces = detect_faces(cv2.resize(image, None, fx=scale, fy=scale), settings)
                face = found_face(faces, (x * scale, y * scale))
                beside = len(faces) - (face is not None)
                found += face is not None
                extra += beside
                if beside:
                    boxed.append(f"{name} {scale}x")
        pictures_count = len(PEOPLE_IMAGES) * len(PEOPLE_SCALES)
        print(
            f"  {finder}: the face found in {found} of {pictures_count}; {extra} boxes beside it, "
            f"on {len(boxed)}: {', '.join(boxed)}"
        )


def framing(images: np.ndarray) -> None:
    from emotion.faces import blazeface

    rows = []
    for face in images:
        big = cv2.resize(face, (FRAMING_SIDE, FRAMING_SIDE), interpolation=cv2.INTER_CUBIC)
        gray = cv2.copyMakeBorder(big, *(FRAMING_SIDE,) * 4, cv2.BORDER_REPLICATE)
        found = blazeface.locate(gray, PHOTO_DETECTOR)
        if not found:
            continue
        frame = blazeface.keypoint_frame(max(found, key=lambda raw: raw.score))
        eyes_x, eyes_y = (frame.eyes_center - FRAMING_SIDE) / FRAMING_SIDE
        rows.append((eyes_x, eyes_y, frame.eye_distance / FRAMING_SIDE, frame.box_side / FRAMING_SIDE))
    print(f"framing: {len(rows)} of {len(images)} val faces found; medians (quartiles) of the face's side")
    for name, values in zip(("eyes_x", "eyes_y", "eye_distance", "box_side"), np.array(rows).T, strict=True):
        low, median, high = np.percentile(values, [25, 50, 75])
        print(f"  {name}: {median:.3f} ({low:.3f}-{high:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ferplus")
    parser.add_argument("--faces", type=int, default=600, help="the first N labelled faces")
    parser.add_argument("--finder", choices=FINDER_NAMES, action="append", help="only this one (repeatable)")
    parser.add_argument("--angles", type=lambda text: [int(a) for a in text.split(",")], default=ANGLES)
    parser.add_argument("--face-side", type=int, default=FACE_SIDE, help="pixels (default: %(default)s)")
    parser.add_argument(
        "--sensitivity", choices=SENSITIVITIES, default="balanced", help="(default: %(default)s)"
    )
    parser.add_argument("--posed", action="store_true", help="the posed development set's faces instead")
    parser.add_argument("--framing", action="store_true", help="measure FER2013's framing instead")
    parser.add_argument("--false-alarms", action="store_true", help="count boxes on pictures without faces")
    parser.add_argument("--close-ups", action="store_true", help="each face alone as the whole picture")
    args = parser.parse_args()
    if args.false_alarms:
        false_alarms(args.sensitivity)
        return
    path = args.data.parent / "posed" / "ckplus_dev.npz" if args.posed else args.data / "val.npz"
    if not path.is_file():
        print(f"no faces at {path} (--data): nothing to measure")
        return
    faces = np.load(path)
    labelled = faces["labels"] >= 0
    images, labels = faces["images"][labelled][: args.faces], faces["labels"][labelled][: args.faces]
    name = "posed faces" if args.posed else "FER+ val faces"
    if args.framing:
        framing(images)
    elif args.close_ups:
        close_ups(name, images, labels, args.finder or FINDER_NAMES, args.sensitivity)
    else:
        accuracy_table(
            name, images, labels, args.finder or FINDER_NAMES, args.angles, args.face_side, args.sensitivity
        )


if __name__ == "__main__":
    main()
