import hashlib
import json
import shutil
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

from emotion import EMOTIONS, ModelError, load_classifier
from emotion.model_file import (
    METADATA_MEMBER,
    RUNTIME_MEMBER,
    ModelMetadata,
    read_metadata,
    read_runtime,
    save_model,
)
from emotion.training.model import build_model
from emotion.training.train import Recipe
from tests.conftest import REPO


def test_bundled_model_outputs_one_probability_per_emotion(classifier):
    assert classifier.metadata["classes"] == list(EMOTIONS)
    faces = np.zeros((3, 48, 48), dtype=np.uint8)
    assert classifier.predict_proba(faces).shape == (3, len(EMOTIONS))


def test_the_classifier_holds_its_files_metadata_typed_with_the_runtimes_figures(classifier):
    stored = read_metadata(REPO / "model" / "emotion_cnn.keras")
    metadata = classifier.metadata
    assert isinstance(metadata, ModelMetadata) and dict(metadata) == stored  # a mapping: as stored
    assert (metadata.classes, metadata.input_shape) == (EMOTIONS, (48, 48, 1))
    assert metadata.runtime_weights_sha256 == stored["runtime_weights_sha256"]
    runtime = stored["metrics"]["runtime"]  # the app's own int8 runtime, measured by training
    assert metadata.figures.accuracy == runtime["val_accuracy"]
    assert metadata.figures.labelled_images == runtime["val_labelled_images"]
    assert list(metadata.figures.per_class) == [e for e in EMOTIONS if e in runtime["per_class"]]
    assert metadata.figures.per_class["happy"].recall == runtime["per_class"]["happy"]["recall"]
    assert metadata.figures.posed.images == runtime["posed"]["images"]
    assert metadata.train_images == stored["metrics"]["train_images"]


def test_metadata_keeps_the_acted_faces_figures_beside_the_posed_ones():
    acted = {"accuracy": 0.75, "mean_recall": 0.7, "recall": {"fear": 0.25, "happy": "all"}, "images": 240}
    metadata = ModelMetadata.from_stored({"metrics": {"runtime": {"val_accuracy": 0.88, "acted": acted}}})
    figures = metadata.figures
    assert figures.posed is None and figures.acted.images == 240
    assert (figures.acted.accuracy, dict(figures.acted.recall)) == (0.75, {"fear": 0.25})


def test_metadata_of_unexpected_types_leaves_those_figures_out():
    metadata = ModelMetadata.from_stored(
        {
            "input_shape": "48x48",
            "metrics": {"val_accuracy": 0.8, "train_images": True, "per_class": {"happy": "most"}},
        }
    )
    assert metadata.classes == EMOTIONS and metadata.input_shape is None
    assert metadata.figures.accuracy == 0.8 and metadata.figures.per_class == {}
    assert metadata.train_images is None and metadata.figures.posed is None
    assert ModelMetadata.from_stored({}).figures is None
    with pytest.raises(ValueError, match="not a list of names"):
        ModelMetadata.from_stored({"classes": "happy"})


def test_model_identity_is_its_file_checksum(classifier):
    assert (
        classifier.sha256 == hashlib.sha256((REPO / "model" / "emotion_cnn.keras").read_bytes()).hexdigest()
    )


@pytest.mark.parametrize("count", [1, 2, 32, 65])
def test_predict_proba_shape_dtype_and_row_sums(classifier, face_crops, count):
    probabilities = classifier.predict_proba(face_crops[:count])
    assert probabilities.shape == (count, 7)
    assert probabilities.dtype == np.float32
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_empty_batch(classifier):
    probabilities = classifier.predict_proba(np.zeros((0, 48, 48), dtype=np.uint8))
    assert probabilities.shape == (0, 7)
    assert probabilities.dtype == np.float32


def test_batching_does_not_change_answers(classifier, face_crops):
    faces = face_crops[:8]
    together = classifier.predict_proba(faces)
    alone = np.concatenate([classifier.predict_proba(faces[i : i + 1]) for i in range(len(faces))])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_wrong_face_shape_is_refused(classifier):
    with pytest.raises(ValueError, match=r"shape \(N, 48, 48\)"):
        classifier.predict_proba(np.zeros((2, 64, 64), dtype=np.uint8))


def test_runtime_agrees_with_keras_model(classifier, face_crops):
    import keras

    model = keras.saving.load_model(REPO / "model" / "emotion_cnn.keras", compile=False)
    faces = face_crops[:64]
    expected = model.predict(faces[..., None].astype("float32"), verbose=0)
    actual = classifier.predict_proba(faces)
    # int8 weights move a probability by a few hundredths at most, and rarely change the answer.
    difference = np.abs(actual - expected)
    assert difference.max() <= 0.05 and difference.mean() <= 0.005
    assert (actual.argmax(1) == expected.argmax(1)).mean() >= 0.95


def test_runtime_keeps_the_keras_models_accuracy_on_fer2013_val(classifier, fer2013_val):
    import keras

    images, labels = fer2013_val
    model = keras.saving.load_model(REPO / "model" / "emotion_cnn.keras", compile=False)
    expected = model.predict(images[..., None].astype("float32"), batch_size=256, verbose=0).argmax(1)
    actual = classifier.predict_proba(images).argmax(1)
    # On thousands of real faces the int8 runtime gives the Keras model's answer almost always.
    assert (actual == expected).mean() >= 0.98
    assert abs((actual == labels).mean() - (expected == labels).mean()) <= 0.005


def test_threads_get_the_same_answers_as_one_thread(classifier, face_crops):
    batches = [face_crops[start : start + size] for start, size in [(0, 1), (1, 5), (6, 32), (38, 7)]]
    expected = [classifier.predict_proba(batch) for batch in batches]
    results: dict[tuple[int, int], np.ndarray] = {}
    errors = []

    def work(thread: int) -> None:
        try:
            for repeat in range(10):
                index = (thread + repeat) % len(batches)
                results[(thread, repeat)] = (index, classifier.predict_proba(batches[index]))
        except Exception as error:  # collected and re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(thread,)) for thread in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 60
    for index, probabilities in results.values():
        np.testing.assert_array_equal(probabilities, expected[index])


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="No model file"):
        load_classifier(tmp_path / "absent.keras")


def test_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(ModelError, match="not a readable Keras model"):
        load_classifier(path)


@pytest.mark.parametrize(
    ("input_shape", "classes", "message"),
    [((48, 48, 1), 5, "not 7 emotions"), ((64, 64, 3), 7, "expects input")],
)
def test_model_of_another_shape_is_refused(tmp_path, input_shape, classes, message):
    import keras

    inputs = keras.Input(input_shape)
    features = keras.layers.GlobalAveragePooling2D()(inputs)
    path = tmp_path / "other.keras"
    keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(features)).save(path)
    with pytest.raises(ModelError, match=message):
        load_classifier(path)


def _rewrite_archive(path, change) -> None:
    """Apply `change` to the {member name: bytes} of the zip archive at `path`."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    change(members)
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def _set_metadata(path, **fields) -> None:
    metadata = {**read_metadata(path), **fields}
    _rewrite_archive(path, lambda members: members.update({METADATA_MEMBER: json.dumps(metadata)}))


def test_model_trained_for_other_classes_is_refused(tmp_path):
    path = tmp_path / "other.keras"
    save_model(build_model(**Recipe(widths=(8,)).architecture()), path, recipe={}, metrics={})
    _set_metadata(path, classes=list(reversed(EMOTIONS)))
    with pytest.raises(ModelError, match="trained for classes"):
        load_classifier(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda members: members.update({RUNTIME_MEMBER: b"\0" * 64}), "runtime that does not run"),
        (lambda members: members.update({METADATA_MEMBER: b"[]"}), "not a JSON object"),
        (lambda members: members.update({METADATA_MEMBER: b'{"classes": 7}'}), "not a list of names"),
    ],
)
def test_a_damaged_model_file_raises_model_error(tmp_path, change, message):
    path = tmp_path / "damaged.keras"
    shutil.copy(REPO / "model" / "emotion_cnn.keras", path)
    _rewrite_archive(path, change)
    with pytest.raises(ModelError, match=message):
        load_classifier(path)


def test_bundled_model_loads_without_tensorflow():
    code = (
        "import sys, numpy, emotion; c = emotion.load_classifier(); "
        "c.predict_proba(numpy.zeros((1, 48, 48), numpy.uint8)); "
        "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def small_model_file(tmp_path_factory):
    """A small saved model and its Keras predictions on a few faces."""
    import keras

    path = tmp_path_factory.mktemp("model") / "small.keras"
    keras.utils.set_random_seed(3)
    model = build_model(**Recipe(widths=(8, 16)).architecture())
    save_model(model, path, recipe={}, metrics={})
    faces = np.random.default_rng(3).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    return path, faces, model.predict(faces[..., None].astype("float32"), verbose=0)


def test_embedded_runtime_agrees_with_its_keras_model(small_model_file):
    path, faces, expected = small_model_file
    assert read_runtime(path, read_metadata(path)) is not None
    np.testing.assert_allclose(load_classifier(path).predict_proba(faces), expected, atol=0.02)


@pytest.mark.parametrize("damage", ["runtime removed", "weights changed"])
def test_runtime_that_does_not_match_the_weights_is_rebuilt_from_them(tmp_path, small_model_file, damage):
    path, faces, expected = small_model_file
    copy = tmp_path / "copy.keras"
    shutil.copyfile(path, copy)
    if damage == "runtime removed":
        _rewrite_archive(copy, lambda members: members.pop(RUNTIME_MEMBER))
    else:  # weights retrained after the runtime was made: the stamp no longer matches
        _set_metadata(copy, runtime_weights_sha256="0" * 64)
    assert read_runtime(copy, read_metadata(copy)) is None
    np.testing.assert_allclose(load_classifier(copy).predict_proba(faces), expected, atol=0.02)


def test_model_saved_on_another_backend_has_no_runtime_and_is_converted_when_loaded(
    tmp_path, small_model_file, monkeypatch
):
    import keras

    source, faces, expected = small_model_file
    model = keras.saving.load_model(source, compile=False)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")  # as when trained with KERAS_BACKEND=jax
    path = tmp_path / "jax.keras"
    save_model(model, path, recipe={}, metrics={})
    monkeypatch.undo()
    assert read_runtime(path, read_metadata(path)) is None
    assert read_metadata(path)["classes"] == list(EMOTIONS)
    np.testing.assert_allclose(load_classifier(path).predict_proba(faces), expected, atol=0.02)
