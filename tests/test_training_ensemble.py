import json

import numpy as np
import pytest

from emotion import EMOTIONS, load_classifier
from emotion.model_file import read_metadata
from emotion.training.ensemble import averaged_head, build_ensemble, main, member_heads
from emotion.training.evaluate import softmax
from emotion.training.model import build_model

TINY = {"widths": (4, 8), "convs_per_stage": 1, "dense_units": 16, "dropout": 0.0}


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two small untrained models of the trainer's architecture, saved as model files."""
    import keras

    folder = tmp_path_factory.mktemp("members")
    paths = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        model = build_model(**TINY)
        logits = model.get_layer("logits")
        kernel, bias = logits.get_weights()
        logits.set_weights([kernel * 20, bias + np.arange(len(EMOTIONS)) * 0.1])  # answers that differ
        paths.append(folder / f"member{seed}.keras")
        model.save(paths[-1])
    return paths


def logits_of(model, faces):
    import keras

    return keras.Model(model.inputs, model.get_layer("logits").output).predict(faces, verbose=0)


def test_averaged_head_gives_the_weighted_mean_of_the_members_logits(members, face_crops):
    import keras

    models = [keras.saving.load_model(path, compile=False) for path in members]
    faces = face_crops[:16, ..., None].astype("float32")
    alone = build_ensemble(models, *averaged_head(member_heads(models), [1.0, 0.0]), temperature=1.0)
    expected = models[0].predict(faces, verbose=0)
    np.testing.assert_allclose(alone.predict(faces, verbose=0), expected, atol=1e-5)
    mixed = build_ensemble(models, *averaged_head(member_heads(models), [0.25, 0.75]), temperature=2.0)
    expected = softmax((0.25 * logits_of(models[0], faces) + 0.75 * logits_of(models[1], faces)) / 2.0)
    np.testing.assert_allclose(mixed.predict(faces, verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize(("head", "options"), [("average", ["--class-offsets"]), ("retrain", [])])
def test_ensemble_command_writes_one_model_the_app_loads(tmp_path, members, face_data_dir, head, options):
    out = tmp_path / "model" / "emotion_cnn.keras"
    main(
        [
            "--data",
            str(face_data_dir),
            *[option for path in members for option in ("--member", str(path))],
            "--posed",
            str(face_data_dir / "val.npz"),
            "--acted",
            str(face_data_dir / "val.npz"),
            "--head",
            head,
            "--balance",
            "0.5",
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            *options,
        ]
    )
    classifier = load_classifier(out)
    probabilities = classifier.predict_proba(np.zeros((3, 48, 48), np.uint8))
    assert probabilities.shape == (3, len(EMOTIONS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    metadata = read_metadata(out)
    recipe = metadata["recipe"]["ensemble"]
    assert [member["file"] for member in recipe["members"]] == [path.name for path in members]
    assert recipe["head"] == head and 0 <= recipe["tau"] <= 1
    assert recipe["class_offsets"] == (options == ["--class-offsets"])
    assert len(recipe["offsets"]) == len(EMOTIONS) if recipe["class_offsets"] else "offsets" not in recipe
    metrics = json.loads((out.parent / "metrics.json").read_text())
    assert metrics.pop("file_size_bytes") == out.stat().st_size and metrics == metadata["metrics"]
    for name in ("posed", "acted"):  # the sets that chose the head, with their figures
        figures = metrics["runtime"][name]
        assert 0 <= figures["accuracy"] <= 1 and set(figures["recall"]) == set(EMOTIONS)
        assert figures["images"] == 320 and metrics[name]["images"] == 320
    assert metrics["temperature"] > 0
    assert list(tmp_path.joinpath("cache").glob("*.npy"))  # the members' features, for the next run
