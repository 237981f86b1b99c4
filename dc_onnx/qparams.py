"""What the values of an already-quantized (int8 / uint8) weight mean: its zero point and scale.

A quantized weight W_q stands for (W_q - zero_point) * scale. The zero point is the integer
that means 0 (what "pruning" sets a weight to), and the scale weighs an error of one step:
a step in a channel with twice the scale moves the output twice as much. Neither is stored
with the weight: they are inputs or constants of the ops that read it, so they are read off
those readers here. Each is returned broadcastable to the weight's shape (per tensor, per
channel along an axis, or per block).

Readers understood: DequantizeLinear, MatMulInteger, ConvInteger, QLinearConv,
QLinearMatMul, and ORT's com.microsoft DynamicQuantizeLSTM, DynamicQuantizeMatMul and
MatMulIntegerToFloat; a Cast to float (then 0 means 0), optionally followed by a Sub of a
constant (the zero point) and a Mul by a constant (the scale). Where the scale is applied
later (MatMulInteger's output is scaled downstream) it is taken as 1: the same for the
whole weight, so it does not change which values are worth sharing. A reader not in that
list leaves the zero point unknown, and the weight is then never pruned.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

_STANDARD = ("", "ai.onnx")
_MICROSOFT = ("com.microsoft",)
# (domains, op) -> {weight input index: (scale input or None, zero point input or None,
# "row" / "col": per-channel axis of a 2-D weight, "out": axis 0, "lstm": [dirs, 1, gates])}
_READERS: dict[tuple[tuple[str, ...], str], dict[int, tuple[int | None, int | None, str]]] = {
    (_STANDARD, "MatMulInteger"): {0: (None, 2, "row"), 1: (None, 3, "col")},
    (_STANDARD, "ConvInteger"): {1: (None, 3, "out")},
    (_STANDARD, "QLinearConv"): {3: (4, 5, "out")},
    (_STANDARD, "QLinearMatMul"): {0: (1, 2, "row"), 3: (4, 5, "col")},
    (_MICROSOFT, "DynamicQuantizeLSTM"): {1: (8, 9, "lstm"), 2: (10, 11, "lstm")},
    (_MICROSOFT, "DynamicQuantizeMatMul"): {1: (2, 3, "col")},
    (_MICROSOFT, "MatMulIntegerToFloat"): {1: (3, 5, "col")},
}
_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


@dataclasses.dataclass(frozen=True)
class QuantParams:
    """Zero point and scale of an integer weight, each broadcastable to its shape."""

    zero_point: np.ndarray | None  # int64; None: unknown, so the weight is never pruned
    scale: np.ndarray  # float64 > 0; ones where the readers do not say
    source: str  # the readers they were read from, for the stats

    @property
    def per_tensor_zero(self) -> int | None:
        """The zero point when it is one value for the whole weight."""
        if self.zero_point is None or np.unique(self.zero_point).size != 1:
            return None
        return int(self.zero_point.reshape(-1)[0])


UNKNOWN = QuantParams(None, np.ones(1), "unknown")


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None or not value.is_initializer() or value.is_graph_input():
        return None
    tensor = value.const_value
    return None if tensor is None else tensor.numpy()


def _input(node: ir.Node, index: int | None) -> ir.Value | None:
    if index is None or index >= len(node.inputs):
        return None
    return node.inputs[index]


def _shaped(array: np.ndarray, shape: tuple[int, ...], layout: str) -> np.ndarray | None:
    """A per-tensor or per-channel parameter as an array broadcastable to `shape`."""
    if array.size == 1:
        return array.reshape([1] * len(shape))
    if layout == "lstm" and len(shape) == 3:  # [dirs] or [dirs, gates * hidden]
        if array.shape == (shape[0],):
            return array.reshape(shape[0], 1, 1)
        if array.shape == (shape[0], shape[2]):
            return array.reshape(shape[0], 1, shape[2])
        return None
    if array.ndim != 1 or len(shape) < 2:
        return None
    axis = {"row": len(shape) - 2, "col": len(shape) - 1, "out": 0}.get(layout)
    if axis is None or array.size != shape[axis]:
        return None
    dims = [1] * len(shape)
    dims[axis] = array.size
    return array.reshape(dims)


def _dequantize_linear(node: ir.Node, shape: tuple[int, ...]) -> QuantParams | None:
    """DequantizeLinear(W, scale, zero_point): per tensor, per axis, or per block."""
    scale = _constant(_input(node, 1))
    if scale is None:
        return None
    zp_value = _input(node, 2)
    zero = np.zeros(1, np.int64) if zp_value is None else _constant(zp_value)
    if zero is None:
        return None
    axis = node.attributes.get_int("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    block = node.attributes.get_int("block_size", 0)
    params = []
    for array in (scale, zero):
        if array.size == 1:
            params.append(array.reshape([1] * len(shape)))
        elif block > 0 and array.ndim == len(shape) and 0 <= axis < len(shape):
            params.append(np.repeat(array, block, axis=axis).take(range(shape[axis]), axis=axis))
        elif array.ndim == 1 and 0 <= axis < len(shape) and array.size == shape[axis]:
            dims = [1] * len(shape)
            dims[axis] = array.size
            params.append(array.reshape(dims))
        else:
            return None
    return QuantParams(params[1].astype(np.int64), params[0].astype(np.float64), node.op_type)


def _through_cast(node: ir.Node, shape: tuple[int, ...]) -> QuantParams | None:
    """Cast(W) to a float type, then an optional Sub(zero point) and Mul(scale) by constants."""
    if node.attributes.get_int("to", 0) not in [t.value for t in _FLOATS]:
        return None
    zero, scale = np.zeros([1] * len(shape), np.int64), np.ones([1] * len(shape))
    value = node.outputs[0]
    source = ["Cast"]
    for op in ("Sub", "Mul"):
        uses = list(value.uses())
        if len(uses) != 1 or uses[0][1] != 0 or uses[0][0].op_type != op:
            continue
        nxt = uses[0][0]
        other = _constant(_input(nxt, 1))
        if other is None or other.ndim > len(shape):
            continue
        try:
            np.broadcast_to(other, shape)
        except ValueError:
            continue
        other = other.reshape([1] * (len(shape) - other.ndim) + list(other.shape))
        if op == "Sub":
            if not np.array_equal(other, np.rint(other)):
                return None  # a zero point between two integers: no value means 0
            zero = other.astype(np.int64)
        else:
            scale = np.abs(other.astype(np.float64))
        source.append(op)
        value = nxt.outputs[0]
    return QuantParams(zero, scale, "->".join(source))


def _from_reader(node: ir.Node, index: int, shape: tuple[int, ...]) -> QuantParams | None:
    if node.op_type == "DequantizeLinear" and node.domain in _STANDARD + _MICROSOFT and index == 0:
        return _dequantize_linear(node, shape)
    if node.op_type == "Cast" and node.domain in _STANDARD and index == 0:
        return _through_cast(node, shape)
    for (domains, op), inputs in _READERS.items():
        if node.op_type != op or node.domain not in domains or index not in inputs:
            continue
        scale_index, zero_index, layout = inputs[index]
        zp_value = _input(node, zero_index)
        zero: np.ndarray | None = np.zeros(1, np.int64)
        if zp_value is not None:
            zero = _constant(zp_value)
        scale: np.ndarray | None = np.ones(1)
        if scale_index is not None:
            scale = _constant(_input(node, scale_index))
        if zero is None or scale is None:
            return None
        zero, scale = _shaped(zero, shape, layout), _shaped(scale, shape, layout)
        if zero is None or scale is None:
            return None
        return QuantParams(zero.astype(np.int64), np.abs(scale.astype(np.float64)), op)
    return None


def read_params(weight: ir.Value) -> QuantParams:
    """The zero point and scale of the integer initializer `weight`, read off its readers.
    Readers that disagree on the zero point, or any reader not understood, leave it
    unknown; the scale is the first reader's that gives one."""
    tensor = weight.const_value
    if tensor is None:
        return UNKNOWN
    shape = tuple(int(d) for d in tensor.shape.numpy())
    found = []
    for node, index in weight.uses():
        params = _from_reader(node, index, shape)
        if params is None:
            return dataclasses.replace(UNKNOWN, source=f"read by {node.op_type}")
        found.append(params)
    if not found:
        return UNKNOWN
    first = found[0]
    full = [np.broadcast_to(p.zero_point, shape) for p in found if p.zero_point is not None]
    if any(not np.array_equal(full[0], z) for z in full[1:]):
        return dataclasses.replace(UNKNOWN, source="readers disagree on the zero point")
    scale = first.scale
    if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        scale = np.ones(1)
    source = ",".join(sorted({p.source for p in found}))
    return QuantParams(first.zero_point, scale, source)
