"""Reference decoding of a compiled model back to a dense ONNX model.

This is the Python twin of the C++ kernels' decoder (docs/format.md): the dense model it
builds holds exactly the weights the custom ops compute with, so it is what tests compare
the compiled model against, and a way to run a compiled model without our library.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dc_onnx.codecs import EncodedWeight, decode_weight
from dc_onnx.codecs.container import ContainerError
from dc_onnx.codecs.schema import (
    BIAS_INPUT,
    CONSTANT_OP,
    DENSE_OP,
    DOMAIN,
    HEADER_NAME,
    OWN_ATTRIBUTES,
    STREAM_KINDS,
    not_compiled,
    portable_weights,
)
from dc_onnx.codecs.wiring import codebook_type, node_streams
from dc_onnx.errors import InputError

# Codebook dtypes by ONNX element type: float32 for the compute ops, the weight's own
# dtype for CompressedConstant. bfloat16 is kept as its uint16 bit pattern.
_CODEBOOK_DTYPES: dict[int, np.dtype[Any]] = {
    onnx.TensorProto.FLOAT: np.dtype("<f4"),
    onnx.TensorProto.FLOAT16: np.dtype("<f2"),
    onnx.TensorProto.BFLOAT16: np.dtype("<u2"),
    onnx.TensorProto.INT8: np.dtype("i1"),
    onnx.TensorProto.UINT8: np.dtype("u1"),
}


def node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values; strings (the `layer` name) as str, not bytes."""
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def read_encoded_weight(
    node: onnx.NodeProto, tensors: dict[str, onnx.TensorProto]
) -> tuple[EncodedWeight, tuple[int, int]]:
    """The encoded streams of one compressed node, checked against the TOC, and the
    [rows, cols] matrix they describe (stream analyses read the streams as stored)."""
    attrs = node_attributes(node)
    layer = attrs.get("layer", node.name)
    ids = list(attrs["stream_ids"])
    if len(ids) not in (len(STREAM_KINDS), len(STREAM_KINDS) + 1):
        raise ContainerError(
            f"layer '{layer}': stream_ids must hold 4 TOC indices (5 with row scales)"
        )
    streams = node_streams(node, tensors, layer)
    codebook_dtype = _CODEBOOK_DTYPES.get(streams.codebook_type)
    if codebook_dtype is None:
        raise ContainerError(f"layer '{layer}': codebook has an unsupported element type")
    raw, toc = streams.data, streams.toc
    encoded = EncodedWeight(
        codebook=np.frombuffer(raw[0], dtype=codebook_dtype).copy(),
        codes=raw[1],
        gaps=raw[2],
        code_lengths=np.frombuffer(raw[3], dtype=np.uint8),
        num_entries=int(attrs["num_entries"]),
        num_codes=toc[ids[1]].count,
        index_bits=int(attrs["index_bits"]),
        row_scales=np.frombuffer(raw[4], dtype="<f4").copy() if len(raw) > 4 else None,
    )
    if encoded.row_scales is not None and toc[ids[4]].count != encoded.row_scales.size:
        raise ContainerError(f"layer '{layer}': row_scales count differs from the TOC")
    shape = [int(d) for d in attrs["weight_shape"]]
    if node.op_type == CONSTANT_OP and len(shape) < 2:
        return encoded, (1, int(np.prod(shape)))
    return encoded, (shape[0], int(np.prod(shape[1:])))


def decode_node_weight(node: onnx.NodeProto, tensors: dict[str, onnx.TensorProto]) -> np.ndarray:
    """The stored weight of one compressed node, every check applied: [rows, cols] for the
    compute ops, the original shape for CompressedConstant; in the codebook's dtype
    (bfloat16 as uint16 bit patterns)."""
    encoded, matrix = read_encoded_weight(node, tensors)
    weight = decode_weight(encoded, matrix)
    if node.op_type != CONSTANT_OP:
        return weight
    return weight.reshape([int(d) for d in node_attributes(node)["weight_shape"]])


def _constant_tensor(
    node: onnx.NodeProto, tensors: dict[str, onnx.TensorProto]
) -> onnx.TensorProto:
    """The initializer a CompressedConstant stands for, in its original dtype."""
    array = decode_node_weight(node, tensors)
    if codebook_type(node, tensors) == onnx.TensorProto.BFLOAT16:
        return helper.make_tensor(
            node.output[0],
            onnx.TensorProto.BFLOAT16,
            array.shape,
            array.astype("<u2").tobytes(),
            raw=True,
        )
    return numpy_helper.from_array(np.ascontiguousarray(array), node.output[0])


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _activation_node(
    kind: str, params: list[float], x: str, y: str, opset: int
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """The standard node a fused `activation` stands for (docs/format.md), reading `x`
    and writing `y`, plus the initializers it needs (Clip's bounds from opset 11 on)."""
    name = f"{y}.{kind.lower()}"
    if kind == "LeakyRelu":
        return helper.make_node(kind, [x], [y], name=name, alpha=params[0]), []
    if kind == "Clip" and opset < 11:
        return helper.make_node(kind, [x], [y], name=name, min=params[0], max=params[1]), []
    if kind == "Clip":
        bounds = [numpy_helper.from_array(np.float32(v), f"{name}.{b}")
                  for v, b in zip(params, ("min", "max"), strict=True)]  # fmt: skip
        return helper.make_node(kind, [x, *(t.name for t in bounds)], [y], name=name), bounds
    if kind == "Relu":
        return helper.make_node(kind, [x], [y], name=name), []
    raise InputError(f"unknown fused activation '{kind}' (known: Relu, Clip, LeakyRelu)")


def _names_read(nodes: list[onnx.NodeProto]) -> set[str]:
    """Every name the nodes read, subgraph bodies (outer-scope references) included."""
    names: set[str] = set()
    for node in nodes:
        names.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _names_read(list(sub.node))
    return names


def _fold_transposes(
    nodes: list[onnx.NodeProto], dense: list[onnx.TensorProto]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The Transpose after a weight decoded in its stored [out, in] order (the decode form
    of a Gemm / MatMul, docs/format.md) folded into the weight, as it was before compiling."""
    decoded = {t.name: t for t in dense if t.data_type == onnx.TensorProto.FLOAT}
    kept = []
    for node in nodes:
        if (
            node.op_type == "Transpose"
            and node.domain in ("", "ai.onnx")
            and node.input[0] in decoded
        ):
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            array = numpy_helper.to_array(decoded[node.input[0]])
            folded = np.ascontiguousarray(np.transpose(array, perm))
            dense.append(numpy_helper.from_array(folded, node.output[0]))
            continue
        kept.append(node)
    return kept, dense


def decode_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """A dense model computing what the compiled model at `path` computes."""
    try:
        model = onnx.load(os.fspath(path), load_external_data=True)
    except Exception as e:
        raise InputError(f"{path}: cannot load the compiled model ({e})") from None
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    if HEADER_NAME not in tensors:
        raise InputError(not_compiled(path, portable_weights(tensors)))
    graph_outputs = {o.name for o in graph.output}
    nodes, dense = [], []
    for node in graph.node:
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        if node.op_type == CONSTANT_OP:
            dense.append(_constant_tensor(node, tensors))
            continue
        attrs = node_attributes(node)
        matrix = decode_node_weight(node, tensors)
        name = f"{attrs.get('layer', node.name)}.decoded_weight"
        kept = {k: v for k, v in attrs.items() if k not in OWN_ATTRIBUTES}
        x, bias = node.input[0], [b for b in node.input[BIAS_INPUT : BIAS_INPUT + 1] if b]
        op = DENSE_OP[node.op_type]
        if op == "Gemm":
            dense.append(numpy_helper.from_array(matrix, name))
            inputs, kept["transB"] = [x, name, *bias], 1
        elif op == "MatMul":
            side = attrs["weight_side"]
            dense.append(
                numpy_helper.from_array(np.ascontiguousarray(matrix.T if side else matrix), name)
            )
            inputs = [x, name] if side else [name, x]
        elif op == "Gather":
            shape = [int(d) for d in attrs["weight_shape"]]
            dense.append(numpy_helper.from_array(matrix.reshape(shape), name))
            inputs = [name, x]
        else:
            shape = [int(d) for d in attrs["weight_shape"]]
            dense.append(numpy_helper.from_array(matrix.reshape(shape), name))
            inputs = [x, name, *bias]
        outputs = list(node.output)
        activation = attrs.get("activation")
        if activation is not None:  # the dense op, then the activation it was fused with
            outputs = [f"{node.output[0]}.before_{activation.lower()}"]
        dense_node = helper.make_node(op, inputs, outputs, name=node.name)
        dense_node.attribute.extend(helper.make_attribute(k, v) for k, v in kept.items())
        nodes.append(dense_node)
        if activation is not None:
            params = [float(p) for p in attrs.get("activation_params", [])]
            act, act_tensors = _activation_node(
                activation, params, outputs[0], node.output[0], _opset(model)
            )
            nodes.append(act)
            dense += act_tensors
    nodes, dense = _fold_transposes(nodes, dense)
    used = _names_read(nodes)
    initializers = [t for t in graph.initializer if t.name in used]
    initializers += [t for t in dense if t.name in used or t.name in graph_outputs]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    opsets = [o for o in model.opset_import if o.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    return model
