"""How a compressed node reaches its streams (docs/format.md, "Wiring").

Format versions 1 and 2 give every stream its own initializer, named by the node's inputs.
From version 3 the header input is the whole side file, the stream inputs are empty, and a
node's streams are the slices of that one buffer that its `stream_ids` name in the TOC.
Every Python reader (the reference decoder, `inspect`, materialisation) goes through
`node_streams`, so both wirings are read the same way.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from dc_onnx.codecs.container import (
    WHOLE_FILE_VERSION,
    ContainerError,
    TocEntry,
    format_version,
    parse_header,
)
from dc_onnx.codecs.schema import (
    CONSTANT_OP,
    DTYPE_ATTRIBUTE,
    header_input,
    stream_kinds,
    stream_names,
)


def tensor_bytes(tensor: onnx.TensorProto) -> bytes:
    """The raw bytes of an initializer whose data is loaded (not external)."""
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return np.ascontiguousarray(numpy_helper.to_array(tensor)).tobytes()


def holds_streams(header: bytes) -> bool:
    """Whether a header initializer is the whole side file (format version 3 and later)."""
    return format_version(header) >= WHOLE_FILE_VERSION


def _attribute(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def codebook_type(node: onnx.NodeProto, tensors: Mapping[str, onnx.TensorProto]) -> int:
    """The ONNX element type of a node's codebook, which a CompressedConstant outputs:
    its codebook input's (versions 1-2), else its `dtype` attribute (float32 if absent)."""
    ids = _attribute(node, "stream_ids")
    names = stream_names(node.op_type, node.input, list(ids.ints) if ids else [0] * 4)
    if names[0]:
        return tensors[names[0]].data_type
    dtype = _attribute(node, DTYPE_ATTRIBUTE) if node.op_type == CONSTANT_OP else None
    return onnx.TensorProto.FLOAT if dtype is None else int(dtype.i)


@dataclasses.dataclass(frozen=True)
class NodeStreams:
    """One node's streams, each checked against its TOC entry (kind, size, CRC-32)."""

    toc: list[TocEntry]
    data: list[bytes]  # in `stream_kinds` order: codebook, codes, gaps, code_lengths[, scales]
    codebook_type: int  # ONNX element type


def node_streams(
    node: onnx.NodeProto, tensors: Mapping[str, onnx.TensorProto], layer: str
) -> NodeStreams:
    """Read and check a node's streams, under either wiring (ContainerError if damaged)."""
    header = tensor_bytes(tensors[node.input[header_input(node.op_type)]])
    toc = parse_header(header)
    ids = [int(i) for i in _attribute_ints(node, "stream_ids")]
    names = stream_names(node.op_type, node.input, ids)
    whole = holds_streams(header)
    data = []
    for kind, stream_id, name in zip(stream_kinds(ids), ids, names, strict=True):
        what = kind.name.lower()
        entry = toc[stream_id] if 0 <= stream_id < len(toc) else None
        if entry is None or entry.kind != kind:
            raise ContainerError(f"layer '{layer}': {what} does not match the TOC")
        if whole and name:
            raise ContainerError(
                f"layer '{layer}': format version {format_version(header)} reads its streams "
                f"from the side file, but the node names a {what} input"
            )
        if whole:
            if entry.offset + entry.nbytes > len(header):
                raise ContainerError(
                    f"layer '{layer}': {what} lies beyond the end of the side file (truncated?)"
                )
            chunk = header[entry.offset : entry.offset + entry.nbytes]
        elif name in tensors:
            chunk = tensor_bytes(tensors[name])
        else:
            raise ContainerError(f"layer '{layer}': the {what} input is missing")
        if len(chunk) != entry.nbytes:
            raise ContainerError(f"layer '{layer}': {what} does not match the TOC")
        if zlib.crc32(chunk) != entry.crc32:
            raise ContainerError(f"layer '{layer}': {what} CRC-32 mismatch")
        data.append(chunk)
    return NodeStreams(toc, data, codebook_type(node, tensors))


def _attribute_ints(node: onnx.NodeProto, name: str) -> Sequence[int]:
    attribute = _attribute(node, name)
    return [] if attribute is None else list(attribute.ints)
