import json

import numpy as np
import pytest

from emotion import EMOTIONS, load_classifier
from emotion.training.model import build_model
from emotion.model_file import read_metadata
from emotion.training.train import Recipe, load_split, main, training_targets
from tests.conftest import FER2013, REPO


def test_model_output_width_is_pinned_to_emotions():
    model = build_model()
    assert model.output_shape == (None, len(EMOTIONS))
    assert model.input_shape == (None, 48, 48, 1)


def augment(images, recipe: Recipe) -> np.ndarray:
    from keras import ops

    from emotion.training.augment import Augment

    return ops.convert_to_numpy(Augment(**recipe.augmentation())(images, training=True))


def test_augmentation_keeps_shape_and_range(val_faces):
    images = val_faces[0][:16, ..., None].astype("float32")
    augmented = augment(images, Recipe())
    assert augmented.shape == images.shape
    assert augmented.min() >= 0 and augmented.max() <= 255
    assert not np.allclose(augmented, images)


def test_augmentation_acts_only_in_training(val_faces):
    from keras import ops

    from emotion.training.augment import Augment

    images = val_faces[0][:8, ..., None].astype("float32")
    layer = Augment(**Recipe().augmentation())
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(images)), images)
    assert Augment.from_config(layer.get_config()).get_config() == layer.get_config()  # checkpoints hold it
    # A model built with it has the same weights as the shipped one without it, and the same answers.
    trained = build_model(augmentation=Recipe().augmentation())
    shipped = build_model()
    shipped.set_weights(trained.get_weights())
    np.testing.assert_allclose(
        shipped.predict(images, verbose=0), trained.predict(images, verbose=0), atol=1e-6
    )


def test_augmentation_without_randomness_is_identity(val_faces):
    still = Recipe(max_rotation_deg=0, max_zoom=0, max_shift_px=0, erase_probability=0.0)
    images = val_faces[0][:4, ..., None].astype("float32")
    augmented = augment(images, still)
    # Each image is either unchanged or mirrored, never warped.
    for original, result in zip(images, augmented, strict=True):
        assert np.allclose(result, original, atol=1e-3) or np.allclose(result, original[:, ::-1], atol=1e-3)


def test_split_with_other_classes_is_refused(tmp_path):
    np.savez(
        tmp_path / "train.npz",
        images=np.zeros((2, 48, 48), np.uint8),
        labels=np.zeros(2, np.uint8),
        classes=np.array(["a", "b"]),
    )
    with pytest.raises(ValueError, match="expected"):
        load_split(tmp_path, "train")


def test_one_epoch_on_a_slice_writes_a_loadable_model_and_resumes(tmp_path):
    out = tmp_path / "model" / "emotion_cnn.keras"
    checkpoints = tmp_path / "checkpoints"
    argv = [
        "--data",
        str(FER2013),
        "--out",
        str(out),
        "--checkpoints",
        str(checkpoints),
        "--epochs",
        "1",
        "--limit",
        "300",
        "--batch-size",
        "64",
    ]
    main(argv)

    log_rows = (checkpoints / "log.csv").read_text().strip().splitlines()
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"} <= set(log_rows[0].split(","))
    assert len(log_rows) == 2  # header + one epoch
    metrics = json.loads((out.parent / "metrics.json").read_text())
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert metrics["temperature"] > 0
    assert set(metrics["per_class"]) == set(EMOTIONS)
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["val_images"] == 300
    assert (out.parent / "training_log.csv").read_text() == (checkpoints / "log.csv").read_text()

    metadata = read_metadata(out)
    assert metadata["classes"] == list(EMOTIONS)
    assert metadata["input_shape"] == [48, 48, 1]
    classifier = load_classifier(out)
    probabilities = classifier.predict_proba(np.zeros((2, 48, 48), np.uint8))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    # --resume after the last epoch trains nothing more and writes the same selection again.
    out.unlink()
    main([*argv, "--resume"])
    assert len((checkpoints / "log.csv").read_text().strip().splitlines()) == 2
    assert json.loads((checkpoints / "state.json").read_text())["epoch"] == 1
    assert out.is_file()

    # --init starts from that model's weights: with a zero learning rate the kernels stay as they were
    # (here also taught by the first model, which the recipe records).
    import keras

    warm = tmp_path / "warm" / "emotion_cnn.keras"
    init_argv = ["--out", str(warm), "--checkpoints", str(tmp_path / "warm_checkpoints"), "--init", str(out)]
    main([*argv, *init_argv, "--teacher", str(out), "--learning-rate", "0", "--warmup-epochs", "0"])
    recipe = read_metadata(warm)["recipe"]
    assert recipe["init_from"] == str(out)
    assert recipe["teachers"] == [str(out)]
    start, end = (
        keras.saving.load_model(path, compile=False).get_layer("conv0_0").kernel for path in (out, warm)
    )
    np.testing.assert_array_equal(np.asarray(start), np.asarray(end))


def test_random_erasing_covers_part_of_some_faces_with_noise(val_faces):
    import keras

    from emotion.training.augment import Augment

    keras.utils.set_random_seed(7)
    images = val_faces[0][:64, ..., None].astype("float32")
    always = Augment(**Recipe(erase_probability=1.0).augmentation())
    erased = keras.ops.convert_to_numpy(always.erase(images))
    changed = (erased != images).reshape(len(images), -1).mean(axis=1)
    # Every face loses a rectangle of 2-25 % of its area; on the pixel grid a rectangle with
    # fractional edges touches up to one more row and column (noise may match a pixel by chance).
    assert np.all(changed > 0.005) and np.all(changed <= 0.30)
    assert erased.min() >= 0 and erased.max() <= 255
    never = Augment(**Recipe(erase_probability=0.0).augmentation())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(never.erase(images)), images)


def test_teachers_blend_their_mirror_averaged_answers_into_the_labels(val_faces):
    images, labels = val_faces[0][:64], val_faces[1][:64]
    one_hot = np.eye(len(EMOTIONS), dtype="float32")[labels]
    np.testing.assert_array_equal(training_targets(images, labels, Recipe()), one_hot)

    taught = Recipe(teachers=(str(REPO / "model" / "emotion_cnn.keras"),), distill_weight=0.6)
    targets = training_targets(images, labels, taught)
    assert targets.shape == (64, len(EMOTIONS)) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    answers = (targets - 0.4 * one_hot) / 0.6  # what the teacher said, a distribution of its own
    assert answers.min() >= -1e-6
    np.testing.assert_allclose(answers.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(answers, answers[:1])  # it tells the faces apart
    # The teacher's answer is averaged over each face and its mirror image.
    np.testing.assert_allclose(training_targets(images[:, :, ::-1], labels, taught), targets, atol=1e-5)
    # A high temperature flattens the answer towards "any emotion".
    flat = training_targets(images, labels, Recipe(teachers=taught.teachers, distill_temperature=1e3))
    np.testing.assert_allclose(flat - 0.3 * one_hot, 0.7 / len(EMOTIONS), atol=1e-3)
