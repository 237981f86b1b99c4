"""Folding of constant-only chains, so a consumer reads its weight as an initializer.

Models often reach a weight through Cast (fp16 storage), Transpose (a layout change),
Reshape / Squeeze / Unsqueeze or Identity. When every input of such a node is a constant
and the node is the only reader of its data input, the node's output becomes a new
initializer holding the folded value, and the chain is gone: the weight is then found
and compressed like any other. A data input read by other nodes too is left alone, so
folding never stores the same weight twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)

# Casts whose numpy result matches ONNX Runtime's bit for bit (IEEE round to nearest even
# for float narrowing; widening is exact). Casts to integers or to bfloat16 are left alone.
_CAST_TARGETS = {
    ir.DataType.FLOAT: np.float32,
    ir.DataType.FLOAT16: np.float16,
    ir.DataType.DOUBLE: np.float64,
}
_CAST_SOURCES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None or not value.is_initializer() or value.is_graph_input():
        return None
    tensor = value.const_value
    return None if tensor is None else tensor.numpy()


def _axes(node: ir.Node) -> list[int] | None:
    """Squeeze/Unsqueeze axes: the input (opset >= 13) or the attribute (older)."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = _constant(node.inputs[1])
        return None if axes is None else [int(a) for a in axes.reshape(-1)]
    attr = node.attributes.get("axes")
    return None if attr is None else [int(a) for a in attr.as_ints()]


def _reshape(node: ir.Node, x: np.ndarray) -> np.ndarray | None:
    shape = _constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if shape is None:
        return None
    dims = [int(d) for d in shape.reshape(-1)]
    if not node.attributes.get_int("allowzero", 0):
        dims = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _squeeze(node: ir.Node, x: np.ndarray) -> np.ndarray | None:
    axes = _axes(node)
    if axes is None:
        return np.squeeze(x) if len(node.inputs) < 2 else None
    return np.squeeze(x, axis=tuple(a % x.ndim for a in axes))


def _unsqueeze(node: ir.Node, x: np.ndarray) -> np.ndarray | None:
    axes = _axes(node)
    if axes is None:
        return None
    rank = x.ndim + len(axes)
    out = x
    for a in sorted(a % rank for a in axes):
        out = np.expand_dims(out, a)
    return out


def _transpose(node: ir.Node, x: np.ndarray) -> np.ndarray:
    perm = node.attributes.get("perm")
    return np.transpose(x, None if perm is None else [int(p) for p in perm.as_ints()])


def _cast(node: ir.Node, x: np.ndarray) -> np.ndarray | None:
    source = node.inputs[0]
    assert source is not None and source.const_value is not None
    target = ir.DataType(node.attributes.get_int("to", 0))
    if source.const_value.dtype not in _CAST_SOURCES or target not in _CAST_TARGETS:
        return None
    return x.astype(np.float32).astype(_CAST_TARGETS[target])


_FOLDERS: dict[str, Callable[[ir.Node, np.ndarray], np.ndarray | None]] = {
    "Identity": lambda node, x: x,
    "Cast": _cast,
    "Transpose": _transpose,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
}


def _fold(node: ir.Node) -> np.ndarray | None:
    """The folded output of `node`, or None when it must stay."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in _FOLDERS:
        return None
    if len(node.outputs) != 1 or not node.inputs or node.outputs[0].is_graph_output():
        return None
    data = node.inputs[0]
    x = _constant(data)
    if x is None or data is None or data.is_graph_output():
        return None
    if len({id(user) for user, _ in data.uses()}) != 1:
        return None  # shared data: the folded copy would store the weight twice
    assert data.const_value is not None
    if data.const_value.dtype == ir.DataType.STRING:
        return None  # not a weight; and onnx-ir stores string tensors differently
    if x.dtype == np.float64 and node.op_type != "Cast":
        return None
    try:
        folded = _FOLDERS[node.op_type](node, x)
    except ValueError as e:  # a shape that does not fit: ORT would fail too; leave it
        logger.warning("cannot fold %s '%s': %s", node.op_type, node.name, e)
        return None
    return None if folded is None else np.ascontiguousarray(folded)


def fold_constant_chains(model: ir.Model) -> list[str]:
    """Fold every foldable node (to a fixed point); returns the folded nodes' names."""
    folded: list[str] = []
    changed = True
    while changed:
        changed = False
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            array = _fold(node)
            if array is None:
                continue
            graph = node.graph
            assert graph is not None
            output = node.outputs[0]
            data = node.inputs[0]
            assert data is not None and data.graph is not None
            value = ir.Value(
                name=output.name,
                type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                shape=ir.Shape(array.shape),
                const_value=ir.Tensor(array, name=output.name),
            )
            # Subgraph outputs are read only inside their graph; main-graph data may be read
            # by subgraphs (outer scope), so the folded value lives where the node lived.
            output.replace_all_uses_with(value)
            graph.remove(node, safe=True)
            graph.register_initializer(value)
            if not data.uses():
                data.graph.initializers.pop(str(data.name))
            folded.append(node.name or str(output.name))
            changed = True
    return folded
