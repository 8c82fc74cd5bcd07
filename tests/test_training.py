import json

import numpy as np
import pytest

from emotion import EMOTIONS, load_classifier
from emotion.model_file import read_metadata
from emotion.training.data import VOTE_COLUMNS
from emotion.training.model import build_model
from emotion.training.train import Recipe, Split, load_split, main, parse_args, training_targets
from tests.conftest import REPO


def test_model_output_width_is_pinned_to_emotions():
    model = build_model(**Recipe().architecture())
    assert model.output_shape == (None, len(EMOTIONS))
    assert model.input_shape == (None, 48, 48, 1)


def augment(images, recipe: Recipe) -> np.ndarray:
    from keras import ops

    from emotion.training.augment import Augment

    return ops.convert_to_numpy(Augment(**recipe.augmentation())(images, training=True))


def test_augmentation_keeps_shape_and_range(face_crops):
    images = face_crops[:16, ..., None].astype("float32")
    augmented = augment(images, Recipe())
    assert augmented.shape == images.shape
    assert augmented.min() >= 0 and augmented.max() <= 255
    assert not np.allclose(augmented, images)


def test_augmentation_acts_only_in_training(face_crops):
    from keras import ops

    from emotion.training.augment import Augment

    images = face_crops[:8, ..., None].astype("float32")
    layer = Augment(**Recipe().augmentation())
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(images)), images)
    assert Augment.from_config(layer.get_config()).get_config() == layer.get_config()  # checkpoints hold it
    # A model built with it has the same weights as the shipped one without it, and the same answers.
    trained = build_model(**Recipe().architecture(), augmentation=Recipe().augmentation())
    shipped = build_model(**Recipe().architecture())
    shipped.set_weights(trained.get_weights())
    np.testing.assert_allclose(
        shipped.predict(images, verbose=0), trained.predict(images, verbose=0), atol=1e-6
    )


def test_augmentation_without_randomness_is_identity(face_crops):
    still = Recipe(max_rotation_deg=0, max_zoom=0, max_shift_px=0, erase_probability=0.0)
    images = face_crops[:4, ..., None].astype("float32")
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


OURS_IN_VOTE_COLUMNS = [4, 5, 6, 1, 3, 2, 0]  # EMOTIONS order -> vote column


def write_vote_split(path, count: int, seed: int) -> dict:
    """A FER+-style archive of `count` noise faces with ten random votes each; returns its fields."""
    random = np.random.default_rng(seed)
    all_votes = np.zeros((count, len(VOTE_COLUMNS)), np.uint8)
    for row in range(count):
        np.add.at(
            all_votes[row],
            random.choice(len(VOTE_COLUMNS), 10, p=[0.2, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.1, 0.05]),
            1,
        )
    all_votes[0] = [0, 0, 0, 0, 0, 0, 0, 0, 6, 4]  # unreadable: left out
    all_votes[1] = [5, 0, 0, 0, 0, 0, 0, 0, 3, 2]  # unreadable to half of them: kept
    votes = all_votes[:, OURS_IN_VOTE_COLUMNS]
    fields = {
        "images": random.integers(0, 256, (count, 48, 48), dtype=np.uint8),
        "votes": votes,
        "all_votes": all_votes,
        "labels": np.where(votes.max(axis=1) > 5, votes.argmax(axis=1), -1).astype(np.int8),
        "fer2013_label": random.integers(0, len(EMOTIONS), count).astype(np.int8),
        "row": np.arange(count, dtype=np.int32),
        "classes": np.array(EMOTIONS),
        "vote_columns": np.array(VOTE_COLUMNS),
    }
    np.savez(path, **fields)
    return fields


@pytest.fixture
def vote_data(tmp_path):
    folder = tmp_path / "ferplus"
    folder.mkdir()
    write_vote_split(folder / "train.npz", 200, seed=1)
    write_vote_split(folder / "val.npz", 100, seed=2)
    return folder


def test_vote_shares_are_the_targets_and_unreadable_faces_are_left_out(vote_data):
    fields = dict(np.load(vote_data / "train.npz"))
    faces = load_split(vote_data, "train")
    unreadable = fields["all_votes"][:, -2:].sum(axis=1)  # unknown + not a face
    kept = (2 * unreadable <= 10) & (fields["votes"].sum(axis=1) > 0)
    assert faces.has_votes and not kept[0] and kept[1] and len(faces.images) == kept.sum()
    np.testing.assert_array_equal(faces.images, fields["images"][kept])
    np.testing.assert_allclose(faces.targets[0], np.eye(len(EMOTIONS))[EMOTIONS.index("neutral")])
    votes = fields["votes"][kept]
    expected = votes / votes.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(faces.targets, expected, atol=1e-6)
    np.testing.assert_array_equal(faces.original_labels, fields["fer2013_label"][kept])
    # Mixing in the original labels moves each target towards its one-hot label by that share.
    mixed = training_targets(faces, Recipe(original_label_weight=0.25))
    np.testing.assert_allclose(
        mixed, 0.75 * expected + 0.25 * np.eye(len(EMOTIONS))[faces.original_labels], atol=1e-6
    )


def test_logit_adjusted_loss_is_cross_entropy_after_shifting_the_logits():
    from keras import ops

    from emotion.training.evaluate import softmax
    from emotion.training.losses import AdjustedCrossEntropy

    random = np.random.default_rng(0)
    logits = random.normal(size=(5, len(EMOTIONS)))
    targets = softmax(random.normal(size=(5, len(EMOTIONS))))
    offsets = np.log(np.array([0.1, 0.01, 0.05, 0.3, 0.15, 0.14, 0.25]))
    loss = AdjustedCrossEntropy(offsets=offsets.tolist())
    expected = -(targets * np.log(softmax(logits + offsets))).sum(axis=1).mean()
    result = float(ops.convert_to_numpy(loss(targets.astype("float32"), softmax(logits).astype("float32"))))
    assert result == pytest.approx(expected, rel=1e-4)
    plain = AdjustedCrossEntropy(offsets=[0.0] * len(EMOTIONS))
    unshifted = float(
        ops.convert_to_numpy(plain(targets.astype("float32"), softmax(logits).astype("float32")))
    )
    assert unshifted == pytest.approx(-(targets * np.log(softmax(logits))).sum(axis=1).mean(), rel=1e-4)


def test_every_recipe_field_is_an_option_with_the_recipe_default():
    args = parse_args(["--data", "x"])
    assert Recipe(**{name: getattr(args, name) for name in Recipe.__dataclass_fields__}) == Recipe()
    args = parse_args(
        ["--data", "x", "--widths", "8,16", "--teachers", "a.keras,b.keras", "--init-from", "c.keras"]
    )
    assert args.widths == (8, 16) and args.teachers == ("a.keras", "b.keras") and args.init_from == "c.keras"


def test_one_epoch_on_a_slice_writes_a_loadable_model_and_resumes(tmp_path, vote_data):
    out = tmp_path / "model" / "emotion_cnn.keras"
    checkpoints = tmp_path / "checkpoints"
    argv = [
        "--data",
        str(vote_data),
        "--out",
        str(out),
        "--checkpoints",
        str(checkpoints),
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--logit-adjustment",
        "1.0",
    ]
    main(argv)

    log_rows = (checkpoints / "log.csv").read_text().strip().splitlines()
    columns = set(log_rows[0].split(","))
    assert {"epoch", "loss", "val_loss", "val_label_accuracy", "val_mean_recall"} <= columns
    assert len(log_rows) == 2  # header + one epoch
    metrics = json.loads((out.parent / "metrics.json").read_text())
    for name in ("val_accuracy", "val_mean_recall", "val_accuracy_original_labels", "ece", "ece_votes"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["temperature"] > 0 and metrics["kl_votes"] >= 0 and 0 <= metrics["prior_correction"] <= 1.5
    assert set(metrics["per_class"]) == set(EMOTIONS)
    assert (
        metrics["val_images"] == len(load_split(vote_data, "val").images) < 100
    )  # unreadable faces left out
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["val_labelled_images"]
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
    init_argv = [
        "--out",
        str(warm),
        "--checkpoints",
        str(tmp_path / "warm_checkpoints"),
        "--init-from",
        str(out),
    ]
    main([*argv, *init_argv, "--teachers", str(out), "--peak-learning-rate", "0", "--warmup-epochs", "0"])
    recipe = read_metadata(warm)["recipe"]
    assert recipe["init_from"] == str(out)
    assert recipe["teachers"] == [str(out)]
    start, end = (
        keras.saving.load_model(path, compile=False).get_layer("conv0_0").kernel for path in (out, warm)
    )
    np.testing.assert_array_equal(np.asarray(start), np.asarray(end))


def test_random_erasing_covers_part_of_some_faces_with_noise(face_crops):
    import keras

    from emotion.training.augment import Augment

    keras.utils.set_random_seed(7)
    images = face_crops[:64, ..., None].astype("float32")
    always = Augment(**Recipe(erase_probability=1.0).augmentation())
    erased = keras.ops.convert_to_numpy(always.erase(images))
    changed = (erased != images).reshape(len(images), -1).mean(axis=1)
    # Every face loses a rectangle of 2-25 % of its area; on the pixel grid a rectangle with
    # fractional edges touches up to one more row and column (noise may match a pixel by chance).
    assert np.all(changed > 0.005) and np.all(changed <= 0.30)
    assert erased.min() >= 0 and erased.max() <= 255
    never = Augment(**Recipe(erase_probability=0.0).augmentation())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(never.erase(images)), images)


def as_split(images, labels) -> Split:
    one_hot = np.eye(len(EMOTIONS), dtype="float32")[labels]
    return Split(images=images, labels=labels, targets=one_hot, original_labels=None, has_votes=False)


def test_teachers_blend_their_mirror_averaged_answers_into_the_labels(face_crops):
    images, labels = face_crops[:64], np.arange(64) % len(EMOTIONS)
    one_hot = np.eye(len(EMOTIONS), dtype="float32")[labels]
    np.testing.assert_array_equal(training_targets(as_split(images, labels), Recipe()), one_hot)

    taught = Recipe(teachers=(str(REPO / "model" / "emotion_cnn.keras"),), distill_weight=0.6)
    targets = training_targets(as_split(images, labels), taught)
    assert targets.shape == (64, len(EMOTIONS)) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    answers = (targets - 0.4 * one_hot) / 0.6  # what the teacher said, a distribution of its own
    assert answers.min() >= -1e-6
    np.testing.assert_allclose(answers.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(answers, answers[:1])  # it tells the faces apart
    # The teacher's answer is averaged over each face and its mirror image.
    mirrored = training_targets(as_split(images[:, :, ::-1], labels), taught)
    np.testing.assert_allclose(mirrored, targets, atol=1e-5)
    # A high temperature flattens the answer towards "any emotion".
    flat = training_targets(
        as_split(images, labels), Recipe(teachers=taught.teachers, distill_temperature=1e3)
    )
    np.testing.assert_allclose(flat - 0.3 * one_hot, 0.7 / len(EMOTIONS), atol=1e-3)
