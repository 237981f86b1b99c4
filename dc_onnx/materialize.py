"""Storage-form weights materialised once at session creation, for `dc_onnx.InferenceSession`.

A `CompressedConstant` node copies its decoded weight to its output on every Run (ORT
never constant-folds custom-domain ops), and the op that reads it sees a non-constant
input, so ORT cannot pre-pack it either: an LSTM step then costs several times more
(docs/format.md). Here the decode nodes run once, in a session of their own (the C++
decoder, so the same bits), and the model handed to ORT gets the decoded tensors back
as plain initializers. Runs then cost what the original model's runs cost.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dc_onnx.codecs.schema import CONSTANT_OP, DOMAIN
from dc_onnx.codecs.wiring import codebook_type
from dc_onnx.io import external_data_files

logger = logging.getLogger(__name__)

# Protobuf refuses messages of 2 GiB; leave room for the rest of the model.
_MAX_EMBEDDED_BYTES = 1 << 30


def _decoders(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == CONSTANT_OP]


def _decode_all(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], options: Any
) -> dict[str, onnx.TensorProto]:
    """Run the decode nodes alone, once; their outputs as initializers."""
    import onnxruntime as ort

    tensors = {t.name: t for t in model.graph.initializer}
    needed = {name for node in nodes for name in node.input if name}
    outputs, extra = [], []
    for node in nodes:
        elem = codebook_type(node, tensors)
        if elem == TensorProto.BFLOAT16:  # ORT's Python API has no bfloat16 arrays
            extra.append(
                helper.make_node("Cast", [node.output[0]], [f"{node.output[0]}.f32"], to=1)
            )
            outputs.append(helper.make_tensor_value_info(f"{node.output[0]}.f32", 1, None))
        else:
            outputs.append(helper.make_tensor_value_info(node.output[0], elem, None))
    graph = helper.make_graph(
        [*nodes, *extra], "decode", [], outputs, [tensors[n] for n in sorted(needed)]
    )
    decode = helper.make_model(graph, opset_imports=list(model.opset_import))
    decode.ir_version = model.ir_version
    session = ort.InferenceSession(
        decode.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    values = session.run(None, {})
    result = {}
    for node, value in zip(nodes, values, strict=True):
        name = node.output[0]
        if codebook_type(node, tensors) == TensorProto.BFLOAT16:
            # float32 holds bfloat16 values exactly: its top 16 bits are the bfloat16 bits.
            bits = np.ascontiguousarray(value, dtype=np.float32).view(np.uint32) >> 16
            result[name] = helper.make_tensor(
                name, TensorProto.BFLOAT16, value.shape, bits.astype("<u2").tobytes(), raw=True
            )
        else:
            result[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
    return result


def materialize(source: str | os.PathLike[str] | bytes, options: Any) -> bytes | None:
    """The model with its decode nodes replaced by their outputs, or None when it has
    none (or is too large to embed in one protobuf message: it then runs as it is)."""
    if isinstance(source, bytes):
        model = onnx.load_from_string(source)
    else:
        path = Path(source)
        if not path.is_file():
            return None  # ORT reports the missing file itself
        head = onnx.load(str(path), load_external_data=False)
        if not _decoders(head):
            return None
        size = path.stat().st_size + sum(
            f.stat().st_size for f in external_data_files(path, head) if f.is_file()
        )
        if size > _MAX_EMBEDDED_BYTES:
            logger.info("%s: too large to materialise; decode ops copy on each run", path)
            return None
        model = onnx.load(str(path), load_external_data=True)
    nodes = _decoders(model)
    if not nodes:
        return None
    decoded = _decode_all(model, nodes, options)
    graph = model.graph
    kept = [n for n in graph.node if not (n.domain == DOMAIN and n.op_type == CONSTANT_OP)]
    del graph.node[:]
    graph.node.extend(kept)
    read = _names_read(graph)
    initializers = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend([*initializers, *decoded.values()])
    return model.SerializeToString()


def _names_read(graph: onnx.GraphProto) -> set[str]:
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _names_read(sub)
    return names
