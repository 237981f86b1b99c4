"""Rewrite a compiled model as the format version 1-2 writer wrote it, to test that such
models still load: the side file keeps its bytes (only its version field changes), the
header initializer covers the header and TOC alone, and every stream becomes an
initializer of its own (external data into the same file) that the node names as an input.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto

from dc_onnx.codecs.container import StreamKind, header_size, parse_header
from dc_onnx.codecs.schema import (
    DOMAIN,
    DTYPE_ATTRIBUTE,
    HEADER_NAME,
    header_input,
    row_scales_input,
    stream_inputs,
    stream_kinds,
)
from dc_onnx.codecs.wiring import codebook_type
from dc_onnx.io import side_file_of

_ELEMENT_BYTES = {TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2}


def _external(name: str, dtype: int, nbytes: int, location: str, offset: int) -> TensorProto:
    tensor = TensorProto(name=name, data_type=dtype)
    tensor.dims.append(nbytes // _ELEMENT_BYTES.get(dtype, 1))
    if nbytes == 0:  # the old writer kept empty streams embedded
        tensor.raw_data = b""
        return tensor
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", nbytes)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)
    return tensor


def downgrade(compiled: Path, version: int = 2) -> None:
    """Rewrite the compiled model at `compiled` (and its side file) in place."""
    model = onnx.load(str(compiled), load_external_data=False)
    side = side_file_of(compiled)
    assert side is not None, "a --single-file model has no side file to point into"
    data = bytearray(side.read_bytes())
    data[8:10] = version.to_bytes(2, "little")  # the version field has no CRC
    side.write_bytes(bytes(data))
    toc = parse_header(bytes(data))
    graph = model.graph
    header = next(t for t in graph.initializer if t.name == HEADER_NAME)
    header.dims[:] = [header_size(len(toc))]
    next(e for e in header.external_data if e.key == "length").value = str(header.dims[0])
    for n, node in enumerate(n for n in graph.node if n.domain == DOMAIN):
        ids = list(next(a.ints for a in node.attribute if a.name == "stream_ids"))
        dtype = codebook_type(node, {})
        names = []
        for kind, stream_id in zip(stream_kinds(ids), ids, strict=True):
            entry = toc[stream_id]
            element = {StreamKind.CODEBOOK: dtype, StreamKind.ROW_SCALES: TensorProto.FLOAT}
            name = f"stream{n}.{kind.name.lower()}"
            graph.initializer.append(
                _external(
                    name, element.get(kind, TensorProto.UINT8), entry.nbytes, side.name,
                    entry.offset,
                )
            )  # fmt: skip
            names.append(name)
        inputs = list(node.input)
        width = max(len(inputs), stream_inputs(node.op_type).stop)
        if len(names) > 4:
            width = max(width, row_scales_input(node.op_type) + 1)
        inputs += [""] * (width - len(inputs))
        inputs[stream_inputs(node.op_type)] = names[:4]
        if len(names) > 4:
            inputs[row_scales_input(node.op_type)] = names[4]
        assert inputs[header_input(node.op_type)] == HEADER_NAME
        del node.input[:]
        node.input.extend(inputs)
        kept = [a for a in node.attribute if a.name != DTYPE_ATTRIBUTE]
        del node.attribute[:]
        node.attribute.extend(kept)
    onnx.save(model, str(compiled))
