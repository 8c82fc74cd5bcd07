"""A TensorFlow Lite model with its input shape fixed, for runtimes that take no other.

LiteRT.js (the browser's runtime, see ui/device_webcam.py) runs a model at the shapes written in
its file: it refuses the emotion runtime's dynamic batch ([-1, 48, 48, 1]) and cannot resize
BlazeFace's 128x128 input to a webcam picture's, which LiteRT's Python interpreter does at
run time (`resize_tensor_input`). `with_input_shape` writes a copy whose every tensor has the
shape that interpreter computes after such a resize, and whose reshapes say so too. Each shape
keeps its rank, so the copy is the file with some of its numbers changed in place: no
TensorFlow, no new flatbuffer.

The offsets below follow LiteRT's schema.fbs: Model.subgraphs (field 2); SubGraph.tensors (0),
.operators (3); Tensor.shape (0), .shape_signature (7); Operator.opcode_index (0),
.outputs (2), .builtin_options (4); OperatorCode.deprecated_builtin_code (0), .builtin_code (3);
ReshapeOptions.new_shape (0).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

RESHAPE = 22  # LiteRT's BuiltinOperator.RESHAPE


class ModelShapeError(ValueError):
    """The model cannot be given that input shape."""


class ShapedModel(NamedTuple):
    """A model file's bytes at one input shape, and their SHA-256 (which the browser checks)."""

    content: bytes
    sha256: str
    input_shape: tuple[int, ...]


class _Table:
    """A flatbuffer table in `data` at `position`: its fields by index, read as LiteRT writes them."""

    def __init__(self, data: bytes | bytearray, position: int):
        self.data, self.position = data, position
        self._vtable = position - struct.unpack_from("<i", data, position)[0]
        self._vtable_size = struct.unpack_from("<H", data, self._vtable)[0]

    def _field(self, index: int) -> int:
        """The field's absolute position, or 0 when the table leaves it out."""
        entry = 4 + 2 * index
        if entry >= self._vtable_size:
            return 0
        offset = struct.unpack_from("<H", self.data, self._vtable + entry)[0]
        return self.position + offset if offset else 0

    def scalar(self, index: int, form: str, default: int = 0) -> int:
        field = self._field(index)
        return struct.unpack_from("<" + form, self.data, field)[0] if field else default

    def vector(self, index: int) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) when absent."""
        field = self._field(index)
        if not field:
            return 0, 0
        start = field + struct.unpack_from("<I", self.data, field)[0]
        return start + 4, struct.unpack_from("<I", self.data, start)[0]

    def table(self, index: int) -> _Table | None:
        field = self._field(index)
        return _Table(self.data, field + struct.unpack_from("<I", self.data, field)[0]) if field else None

    def tables(self, index: int) -> list[_Table]:
        start, length = self.vector(index)
        positions = (start + 4 * item for item in range(length))
        return [_Table(self.data, at + struct.unpack_from("<I", self.data, at)[0]) for at in positions]


def _write_ints(model: bytearray, vector: tuple[int, int], values: Sequence[int], what: str) -> None:
    start, length = vector
    if not start:
        return
    if length != len(values):
        raise ModelShapeError(f"{what} has rank {length}; the new shape {tuple(values)} does not")
    struct.pack_into(f"<{length}i", model, start, *values)


def computed_shapes(content: bytes, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Every tensor's shape once LiteRT's interpreter has resized the first input, by index."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without XNNPACK: its delegate would keep the shapes of the tensors it holds as they were.
    interpreter = Interpreter(
        model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    input_index = interpreter.get_input_details()[0]["index"]
    try:
        interpreter.resize_tensor_input(input_index, tuple(input_shape), strict=False)
        interpreter.allocate_tensors()
        # Shapes are settled by a run: allocation alone leaves some as written in the file.
        interpreter.set_tensor(input_index, np.zeros(input_shape, np.float32))
        interpreter.invoke()
    except (ValueError, RuntimeError) as error:
        shape = tuple(input_shape)
        raise ModelShapeError(f"the model does not run at input shape {shape}: {error}") from error
    details = interpreter.get_tensor_details()
    shapes = {detail["index"]: tuple(int(side) for side in detail["shape"]) for detail in details}
    return [shapes.get(index, ()) for index in range(max(shapes) + 1)]


def with_input_shape(content: bytes, input_shape: Sequence[int]) -> ShapedModel:
    """A copy of the TensorFlow Lite model `content` that takes exactly `input_shape` (its
    first input), with every tensor's shape and signature and every reshape's target written
    for it. Raises ModelShapeError when it cannot take it."""
    input_shape = tuple(int(side) for side in input_shape)
    shapes = computed_shapes(content, input_shape)
    model = bytearray(content)
    root = _Table(model, struct.unpack_from("<I", model, 0)[0])
    # LiteRT reads an operator's code as the larger of the old int8 field and the new int32 one.
    codes = [max(code.scalar(0, "b"), code.scalar(3, "i")) for code in root.tables(1)]
    subgraphs = root.tables(2)
    if len(subgraphs) != 1:
        raise ModelShapeError(f"the model has {len(subgraphs)} subgraphs, not one")
    tensors = subgraphs[0].tables(0)
    if len(tensors) > len(shapes):
        raise ModelShapeError("the interpreter reports fewer tensors than the model holds")
    for index, tensor in enumerate(tensors):
        shape = shapes[index]
        _write_ints(model, tensor.vector(0), shape, f"tensor {index}")
        _write_ints(model, tensor.vector(7), shape, f"tensor {index}'s signature")
    for operator in subgraphs[0].tables(3):
        if codes[operator.scalar(0, "I")] != RESHAPE:
            continue
        options = operator.table(4)
        outputs_start, _ = operator.vector(2)
        if options is None or not outputs_start:
            continue
        output = struct.unpack_from("<i", model, outputs_start)[0]
        _write_ints(model, options.vector(0), shapes[output], f"reshape {output}'s target")
    content = bytes(model)
    return ShapedModel(content, hashlib.sha256(content).hexdigest(), input_shape)
