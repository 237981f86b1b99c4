"""How many output positions each Conv computes per image, for the lower pass's choice
between the sparse kernel and ORT's own Conv (passes/lower.py, `conv_dense_threshold`).

Few models carry their activations' shapes, and most leave the image size symbolic, so
ONNX shape inference runs on the model with its inputs at the calibration inputs' shapes.
The weights do not take part: large initializers become typed graph inputs for the call
(no copy of their data) and are put back afterwards, whatever happens.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import onnx
import onnx_ir as ir

logger = logging.getLogger(__name__)

_INLINE_BYTES = 4096  # initializers up to this size stay in the call (shape constants)


def conv_output_positions(
    model: ir.Model, input_shapes: Mapping[str, Sequence[int]]
) -> dict[str, int]:
    """Output height x width (length, for 1-D) of every Conv of the main graph and its
    subgraphs whose output shape inference can tell, by output value name, with the
    graph inputs named in `input_shapes` at those shapes."""
    try:
        proto = _without_weights(model)
    except Exception as e:  # a graph the serializer refuses: the sizes stay unknown
        logger.info("conv output sizes unknown: %s", e)
        return {}
    for value in proto.graph.input:
        dims = input_shapes.get(value.name)
        shape = value.type.tensor_type.shape
        if dims is None or len(shape.dim) != len(dims):
            continue
        for d, n in zip(shape.dim, dims, strict=True):
            d.Clear()
            d.dim_value = int(n)
    try:
        inferred = ir.from_proto(onnx.shape_inference.infer_shapes(proto, data_prop=True))
    except Exception as e:  # onnx raises several kinds; the sizes then stay unknown
        logger.info("conv output sizes unknown: shape inference failed: %s", e)
        return {}
    positions: dict[str, int] = {}
    for node in ir.traversal.RecursiveGraphIterator(inferred.graph):
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        shape = node.outputs[0].shape
        if shape is None or len(shape) < 3:
            continue
        spatial = [n for n in list(shape)[2:] if isinstance(n, int) and n > 0]
        if len(spatial) == len(shape) - 2:  # every one known
            positions[str(node.outputs[0].name)] = math.prod(spatial)
    return positions


def _without_weights(model: ir.Model) -> onnx.ModelProto:
    """The model as a proto whose large initializers are typed graph inputs instead."""
    graph = model.graph
    moved = [
        v
        for v in graph.initializers.values()
        if v.const_value is not None and v.const_value.nbytes > _INLINE_BYTES
    ]
    inputs = list(graph.inputs)
    initializers = list(graph.initializers.values())  # put back in this order
    kept = {str(v.name): (v.const_value, v.shape, v.dtype) for v in moved}
    try:
        for v in moved:
            tensor = v.const_value
            assert tensor is not None
            v.shape = v.shape or tensor.shape  # type: ignore[assignment]
            v.dtype = v.dtype or tensor.dtype
            graph.initializers.pop(str(v.name))
            v.const_value = None
            if v not in graph.inputs:
                graph.inputs.append(v)
        return ir.to_proto(model)
    finally:
        graph.inputs.clear()
        graph.inputs.extend(inputs)
        for v in moved:
            v.const_value, v.shape, v.dtype = kept[str(v.name)]  # type: ignore[assignment]
        graph.initializers.clear()
        for v in initializers:
            graph.register_initializer(v)
