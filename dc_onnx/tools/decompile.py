"""Reference decoding of a compiled model back to a dense ONNX model.

This is the Python twin of the C++ kernels' decoder (docs/format.md): the dense model it
builds holds exactly the weights the custom ops compute with, so it is what tests compare
the compiled model against, and a way to run a compiled model without our library.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dc_onnx.codecs import EncodedWeight, decode_weight
from dc_onnx.codecs.container import ContainerError, parse_header
from dc_onnx.codecs.schema import (
    BIAS_INPUT,
    DENSE_OP,
    DOMAIN,
    FIRST_STREAM_INPUT,
    HEADER_NAME,
    OWN_ATTRIBUTES,
    STREAM_KINDS,
)
from dc_onnx.errors import InputError


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def decode_node_weight(node: onnx.NodeProto, tensors: dict[str, onnx.TensorProto]) -> np.ndarray:
    """The stored [rows, cols] weight matrix of one compressed node, every check applied."""
    attrs = _attributes(node)
    layer = attrs.get("layer", node.name)
    toc = parse_header(numpy_helper.to_array(tensors[node.input[1]]).tobytes())
    raw = []
    inputs = node.input[FIRST_STREAM_INPUT:BIAS_INPUT]
    for kind, stream_id, name in zip(STREAM_KINDS, attrs["stream_ids"], inputs, strict=True):  # type: ignore[call-overload]
        data = numpy_helper.to_array(tensors[name]).tobytes()
        entry = toc[stream_id] if stream_id < len(toc) else None
        if entry is None or entry.kind != kind or entry.nbytes != len(data):
            raise ContainerError(f"layer '{layer}': {kind.name.lower()} does not match the TOC")
        if zlib.crc32(data) != entry.crc32:
            raise ContainerError(f"layer '{layer}': {kind.name.lower()} CRC-32 mismatch")
        raw.append(data)
    encoded = EncodedWeight(
        codebook=np.frombuffer(raw[0], dtype="<f4").astype(np.float32),
        codes=raw[1],
        gaps=raw[2],
        code_lengths=np.frombuffer(raw[3], dtype=np.uint8),
        num_entries=int(attrs["num_entries"]),  # type: ignore[call-overload]
        num_codes=toc[attrs["stream_ids"][1]].count,  # type: ignore[index]
        index_bits=int(attrs["index_bits"]),  # type: ignore[call-overload]
    )
    shape = [int(d) for d in attrs["weight_shape"]]  # type: ignore[attr-defined]
    rows, cols = shape[0], int(np.prod(shape[1:]))
    return decode_weight(encoded, (rows, cols))


def decode_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """A dense model computing what the compiled model at `path` computes."""
    try:
        model = onnx.load(os.fspath(path), load_external_data=True)
    except Exception as e:
        raise InputError(f"{path}: cannot load the compiled model ({e})") from None
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    if HEADER_NAME not in tensors:
        raise InputError(f"{path}: not a compiled dc-onnx model")
    nodes, dense = [], []
    for node in graph.node:
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        attrs = _attributes(node)
        matrix = decode_node_weight(node, tensors)
        name = f"{attrs['layer']}.decoded_weight"
        kept = {k: v for k, v in attrs.items() if k not in OWN_ATTRIBUTES}
        x, bias = node.input[0], list(node.input[BIAS_INPUT : BIAS_INPUT + 1])
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
        else:
            shape = [int(d) for d in attrs["weight_shape"]]  # type: ignore[attr-defined]
            dense.append(numpy_helper.from_array(matrix.reshape(shape), name))
            inputs = [x, name, *bias]
        dense_node = helper.make_node(op, inputs, list(node.output), name=node.name)
        dense_node.attribute.extend(helper.make_attribute(k, v) for k, v in kept.items())
        nodes.append(dense_node)
    used = {i for n in nodes for i in n.input}
    initializers = [t for t in graph.initializer if t.name in used] + dense
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    opsets = [o for o in model.opset_import if o.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    return model
