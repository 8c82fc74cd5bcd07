import hashlib

import numpy as np
import pytest

from emotion.classifier import BUNDLED_MODEL
from emotion.faces import blazeface
from emotion.model_file import read_metadata, read_runtime
from emotion.tflite_shapes import ModelShapeError, with_input_shape


def run(content: bytes, tensor: np.ndarray, resize: bool) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    input_index = interpreter.get_input_details()[0]["index"]
    if resize:
        interpreter.resize_tensor_input(input_index, tensor.shape, strict=False)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_index, tensor)
    interpreter.invoke()
    return [interpreter.get_tensor(detail["index"]) for detail in interpreter.get_output_details()]


def test_the_emotion_runtime_at_batch_1_answers_as_the_dynamic_one():
    runtime = read_runtime(BUNDLED_MODEL, read_metadata(BUNDLED_MODEL))
    shaped = with_input_shape(runtime, (1, 48, 48, 1))
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_content=shaped.content).get_input_details()[0]
    assert details["shape_signature"].tolist() == [1, 48, 48, 1]
    assert shaped.sha256 == hashlib.sha256(shaped.content).hexdigest()
    assert len(shaped.content) == len(runtime)  # numbers changed in place
    faces = np.random.default_rng(0).integers(0, 256, (1, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(run(shaped.content, faces, False)[0], run(runtime, faces, True)[0], atol=1e-6)


def test_blazeface_at_a_webcam_pictures_shape_answers_as_the_resized_model():
    original = blazeface.MODEL_FILE.read_bytes()
    shaped = with_input_shape(original, (1, 192, 240, 3))
    picture = np.random.default_rng(1).uniform(-1, 1, (1, 192, 240, 3)).astype(np.float32)
    fixed, resized = run(shaped.content, picture, False), run(original, picture, True)
    assert sorted(output.shape for output in fixed) == [(1, 2520, 1), (1, 2520, 16)]
    for ours, theirs in zip(sorted(fixed, key=np.shape), sorted(resized, key=np.shape), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_a_shape_of_another_rank_is_refused():
    with pytest.raises(ModelShapeError, match=r"does not run|rank"):
        with_input_shape(blazeface.MODEL_FILE.read_bytes(), (1, 128, 128))
