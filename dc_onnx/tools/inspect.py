"""`dc-onnx inspect`: what a compiled model holds, read from the model alone.

Every compressed layer is decoded with the reference decoder (`dc_onnx.tools.decompile`),
so the listing also proves that its streams pass every check of docs/format.md (CRC-32,
TOC, Huffman, positions). The nodes that still read a constant float weight are listed
with the reason the compiler left them dense.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

from dc_onnx.codecs import decode_codes
from dc_onnx.codecs.container import ContainerError, TocEntry, format_version, parse_header
from dc_onnx.codecs.huffman import HuffmanError
from dc_onnx.codecs.schema import (
    DENSE_OP,
    DOMAIN,
    HEADER_NAME,
    STREAM_KINDS,
    header_input,
    not_compiled,
    portable_weights,
    stream_names,
)
from dc_onnx.codecs.sparse_index import SparseIndexError
from dc_onnx.codecs.wiring import holds_streams
from dc_onnx.errors import InputError
from dc_onnx.io import load_proto
from dc_onnx.layers import DEFAULT_MIN_ELEMENTS
from dc_onnx.tools.decompile import decode_node_weight, node_attributes, read_encoded_weight

__all__ = ["DenseNode", "InspectResult", "LayerInfo", "inspect", "load_compiled"]

_DECODE_ERRORS = (ContainerError, HuffmanError, SparseIndexError, ValueError, KeyError)
# Constants smaller than this (shapes, scalars, small biases) are not worth listing.
MIN_LISTED_ELEMENTS = 64


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    name: str
    op: str  # the dense op it replaces
    shape: list[int]  # weight_shape attribute: the stored matrix, or Conv's W shape
    weights: int
    nonzeros: int
    codebook_size: int
    weight_bits: int  # ceil(log2 k): bits per code before Huffman
    index_bits: int
    codes_bytes: int
    gaps_bytes: int
    stream_bytes: int  # codebook + codes + gaps + code lengths
    verified: bool
    problem: str | None  # why it did not verify
    # The decoded weight and its codebook: what `--plot` draws; never serialised.
    matrix: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    codebook: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    # Row-scaled weights (format version 2): the scales, and the codes (flat, row-major of
    # the stored matrix), which the decoded values no longer give back one to one.
    row_scales: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    codes: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    readers: int = 1  # nodes reading this stored weight (an unrolled RNN's time steps)

    @property
    def label(self) -> str:
        """The name for a table: the first reader's, and how many more there are."""
        more = self.readers - 1
        names = self.name.split(",")
        # A shared weight in the decode form is named by all its readers (lower.py joins
        # them with commas): the first stands for them, as a kernel op's own name does.
        first = names[0] if more and len(names) == self.readers else self.name
        return f"{first} (and {more} more readers)" if more else self.name

    @property
    def density(self) -> float:
        return self.nonzeros / max(self.weights, 1)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del data["matrix"], data["codebook"], data["row_scales"], data["codes"]
        return {**data, "density": self.density}


@dataclasses.dataclass(frozen=True)
class DenseNode:
    name: str
    op: str
    weight: str
    elements: int
    reason: str


@dataclasses.dataclass(frozen=True)
class InspectResult:
    path: str
    format_version: int
    opset_version: int
    file_bytes: dict[str, int]  # file name -> bytes
    layers: list[LayerInfo]
    dense: list[DenseNode]
    portable: list[str] = dataclasses.field(default_factory=list)  # --target portable's

    @property
    def problems(self) -> list[str]:
        return [f"layer '{layer.name}': {layer.problem}" for layer in self.layers if layer.problem]

    def totals(self) -> dict[str, Any]:
        weights = sum(layer.weights for layer in self.layers)
        nonzeros = sum(layer.nonzeros for layer in self.layers)
        return {
            "layers": len(self.layers),
            "weights": weights,
            "nonzeros": nonzeros,
            "density": nonzeros / max(weights, 1),
            "stream_bytes": sum(layer.stream_bytes for layer in self.layers),
            "file_bytes": sum(self.file_bytes.values()),
            "dense_weights": sum(d.elements for d in self.dense),
        }

    def _dense_lines(self) -> list[str]:
        if not self.dense:
            return []
        values = sum(d.elements for d in self.dense)
        lines = [f"dense:    {len(self.dense)} nodes read constant weights ({values:,} values)"]
        return lines + [
            f"  {d.name} ({d.op}, {d.weight}, {d.elements:,}): {d.reason}" for d in self.dense
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format_version": self.format_version,
            "opset_version": self.opset_version,
            "files": self.file_bytes,
            "totals": self.totals(),
            "layers": [layer.to_json() for layer in self.layers],
            "dense": [dataclasses.asdict(d) for d in self.dense],
            "problems": self.problems,
            "portable": self.portable,
        }

    def format_table(self) -> str:
        if self.portable:
            return not_compiled(self.path, self.portable)
        if self.format_version == 0:
            return "\n".join([
                f"no compressed layers: the model has no {HEADER_NAME} (dc-onnx compile left "
                "every weight as it was, or did not write it)",
                *self._dense_lines(),
            ])  # fmt: skip
        head = ("layer", "op", "shape", "density", "k", "bits", "idx bits", "codes B", "gaps B",
                "streams B", "checks")  # fmt: skip
        rows = [head]
        for r in self.layers:
            rows.append((
                r.label, r.op, "x".join(map(str, r.shape)), f"{100 * r.density:.1f}%",
                str(r.codebook_size), str(r.weight_bits), str(r.index_bits),
                f"{r.codes_bytes:,}", f"{r.gaps_bytes:,}", f"{r.stream_bytes:,}",
                "ok" if r.verified else "FAILED",
            ))  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        align = [str.ljust, str.ljust] + [str.rjust] * (len(head) - 2)
        lines = ["  ".join(a(c, w) for a, c, w in zip(align, row, widths, strict=True))
                 for row in rows]  # fmt: skip
        lines.insert(1, "  ".join("-" * w for w in widths))
        t = self.totals()
        files = " + ".join(f"{name} {size:,}" for name, size in self.file_bytes.items())
        lines += [
            "",
            f"format:   version {self.format_version}, {DOMAIN} opset {self.opset_version}",
            f"layers:   {t['layers']}, {t['weights']:,} weights, "
            f"{100 * t['density']:.1f}% kept, {t['stream_bytes']:,} stream bytes",
            f"files:    {t['file_bytes']:,} bytes ({files})",
        ]
        lines += self._dense_lines()
        for problem in self.problems:
            lines.append(f"FAILED:   {problem}")
        return "\n".join(lines)


def load_compiled(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """A compiled model's graph, its external data not yet read (InputError if unusable)."""
    p = Path(path)
    model = load_proto(p, external_data=False)
    names = [t.name for t in model.graph.initializer]
    if HEADER_NAME not in names:
        raise InputError(not_compiled(p, portable_weights(names)))
    return model


def _load_data(tensor: onnx.TensorProto, base: Path) -> str | None:
    """Read one tensor's external data in place; the reason if the side file cannot give it."""
    if not external_data_helper.uses_external_data(tensor):
        return None
    info = external_data_helper.ExternalDataInfo(tensor)
    location = base / info.location
    if not location.is_file():
        return f"side file {info.location} is missing"
    size = location.stat().st_size
    if info.offset is not None and info.length is not None and info.offset + info.length > size:
        return f"side file {info.location} is truncated ({size:,} bytes)"
    try:
        external_data_helper.load_external_data_for_tensor(tensor, str(base))
    except Exception as e:
        return f"cannot read {info.location}: {e}"
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]
    return None


def _load_header(tensor: onnx.TensorProto, base: Path) -> str | None:
    """Read the header initializer in place, like `_load_data`; but a whole side file
    (format version 3) cut short keeps the bytes that are there, so that each layer
    whose streams were lost says so and the others still verify."""
    problem = _load_data(tensor, base)
    if problem is None or not external_data_helper.uses_external_data(tensor):
        return problem
    info = external_data_helper.ExternalDataInfo(tensor)
    location = base / info.location
    if not location.is_file():
        return problem
    with open(location, "rb") as f:
        f.seek(info.offset or 0)
        data = f.read(info.length) if info.length else f.read()
    if not holds_streams(data):
        return problem
    tensor.raw_data = data
    tensor.dims[:] = [len(data)]
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]
    return None


def _why_dense(
    node: onnx.NodeProto, index: int, tensor: onnx.TensorProto, constants: Collection[str]
) -> str:
    """Why a constant weight that a node reads was left as it is (the likely reason: the
    compile options are not recorded in the model)."""
    elements = math.prod(tensor.dims)
    if node.op_type in ("Gemm", "Conv") and index == 2:
        return "a bias: stored as it is"
    if node.op_type == "MatMul" and all(name in constants for name in node.input):
        return "both MatMul inputs are constant: nothing to compute with a compressed kernel"
    if node.op_type == "Cast" and tensor.data_type == onnx.TensorProto.FLOAT16:
        return ("float16, cast to float32 at load (the compile report's stored_float16 where "
                "the budget chose it; else the input's own)")  # fmt: skip
    if elements < DEFAULT_MIN_ELEMENTS:
        return (f"{elements} values: below the storage-form threshold "
                f"(--min-weight-elements, default {DEFAULT_MIN_ELEMENTS})")  # fmt: skip
    return ("left as it is by the compiler (the compile report names it: kept_dense where "
            "the budget kept it exact, else left_uncompressed with the reason)")  # fmt: skip


def _dense_nodes(
    graph: onnx.GraphProto, outer: Mapping[str, onnx.TensorProto] | None = None
) -> list[DenseNode]:
    """Nodes that read a constant weight of MIN_LISTED_ELEMENTS or more: initializers and
    Constant nodes, in the graph, its outer scopes and its subgraphs (If, Loop, Scan)."""
    tensors = dict(outer or {})
    tensors.update({t.name: t for t in graph.initializer})
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None:
            tensors[node.output[0]] = value
    dense = []
    for node in graph.node:
        if node.domain == DOMAIN or node.op_type == "Constant":
            continue
        for index, name in enumerate(node.input):
            tensor = tensors.get(name)
            if tensor is None or tensor.data_type not in _WEIGHT_TYPES:
                continue
            elements = math.prod(tensor.dims)
            if elements < MIN_LISTED_ELEMENTS:
                continue
            reason = _why_dense(node, index, tensor, tensors)
            dense.append(DenseNode(node.name or node.op_type, node.op_type, name, elements, reason))
        for attr in node.attribute:
            for body in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                dense += _dense_nodes(body, tensors)
    return dense


# Weights worth listing: floats, and the integers of quantized models (int32 / int64
# constants are shapes and indices).
_WEIGHT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                 onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8,
                 onnx.TensorProto.INT16, onnx.TensorProto.UINT16)  # fmt: skip


def _layer(
    node: onnx.NodeProto,
    tensors: dict[str, onnx.TensorProto],
    toc: list[TocEntry] | None,
    problem: str | None,
) -> LayerInfo:
    attrs = node_attributes(node)
    shape = [int(d) for d in attrs["weight_shape"]]
    matrix = scales = codes = codebook = None
    if problem is None:
        try:
            matrix = decode_node_weight(node, tensors)
            encoded, stored = read_encoded_weight(node, tensors)
            codebook = encoded.codebook
            if encoded.row_scales is not None:
                scales = encoded.row_scales
                codes = decode_codes(encoded, stored[0] * stored[1])
        except _DECODE_ERRORS as e:
            problem = str(e).removeprefix(f"layer '{attrs.get('layer', node.name)}': ")
    sizes, k = _stream_sizes(node, [int(i) for i in attrs["stream_ids"]], tensors, toc)
    return LayerInfo(
        name=str(attrs.get("layer", node.name)),
        op=DENSE_OP.get(node.op_type, node.op_type),
        shape=shape,
        weights=math.prod(shape),
        nonzeros=int(np.count_nonzero(matrix)) if matrix is not None else 0,
        codebook_size=k,
        weight_bits=max(1, math.ceil(math.log2(max(k, 1)))),
        index_bits=int(attrs["index_bits"]),
        codes_bytes=sizes[1],
        gaps_bytes=sizes[2],
        stream_bytes=sum(sizes),
        verified=problem is None,
        problem=problem,
        matrix=matrix,
        codebook=codebook,
        row_scales=scales,
        codes=codes,
    )


def _stream_sizes(
    node: onnx.NodeProto,
    ids: list[int],
    tensors: dict[str, onnx.TensorProto],
    toc: list[TocEntry] | None,
) -> tuple[list[int], int]:
    """Bytes of each stream and the codebook's entries: from the TOC, else (a damaged
    header) from the stream initializers of a version 1-2 model; zeros when neither."""
    if toc is not None and all(0 <= i < len(toc) for i in ids):
        return [toc[i].nbytes for i in ids], toc[ids[0]].count
    names = stream_names(node.op_type, node.input, ids)
    if all(name in tensors for name in names[: len(STREAM_KINDS)]):
        codebook = tensors[names[0]]
        return [_stored_bytes(tensors[n]) for n in names if n], math.prod(codebook.dims)
    return [0] * len(ids), 0


def _stored_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a stream, from its external-data length when it was not read."""
    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return int(numpy_helper.to_array(tensor).nbytes)


def _file_bytes(path: Path, model: onnx.ModelProto) -> dict[str, int]:
    sizes = {path.name: path.stat().st_size}
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            side = path.parent / entry.value
            if entry.key == "location" and side.is_file():
                sizes[entry.value] = side.stat().st_size
    return sizes


def _decoded_readers(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]]) -> int:
    """The nodes that read what a compressed node stands for: itself for a kernel op; for
    the decode op, the nodes fed its output (through the Transpose of a weight stored
    transposed), so a shared weight in the decode form still counts its readers."""
    if node.op_type != "CompressedConstant":
        return 1
    count = 0
    for reader in consumers.get(node.output[0], []):
        count += len(consumers.get(reader.output[0], [])) if reader.op_type == "Transpose" else 1
    return max(count, 1)


def inspect(path: str | os.PathLike[str]) -> InspectResult:
    """Decode and describe every compressed layer of the compiled model at `path`.

    A damaged layer does not stop the listing: it is marked, and `problems` names it.
    """
    p = Path(path)
    model = load_proto(p, external_data=False)
    graph = model.graph
    files = _file_bytes(p, model)
    tensors = {t.name: t for t in graph.initializer}
    if HEADER_NAME not in tensors:  # e.g. what compile wrote when no layer was worth it
        portable = portable_weights(tensors)
        dense = [] if portable else _dense_nodes(graph)  # there: the codes and codebooks
        return InspectResult(str(p), 0, 0, files, [], dense, portable)
    header_problem = _load_header(tensors[HEADER_NAME], p.parent)
    if header_problem:
        raise InputError(f"{p}: the side-file header cannot be read: {header_problem}")
    header = numpy_helper.to_array(tensors[HEADER_NAME]).tobytes()
    version = format_version(header)
    try:
        toc: list[TocEntry] | None = parse_header(header)
    except ContainerError:  # each layer then says what is wrong
        toc = None
    # Readers of one stored weight name the same streams: it is listed, and decoded, once.
    readers: dict[tuple[str, ...], list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.domain != DOMAIN:
            continue
        ids = next((list(a.ints) for a in node.attribute if a.name == "stream_ids"), [])
        streams = [s for s in stream_names(node.op_type, node.input, ids) if s]
        shape = str(node_attributes(node).get("weight_shape"))
        key = (node.input[header_input(node.op_type)], *streams, str(ids), shape)
        readers.setdefault(key, []).append(node)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers = []
    for key, nodes in readers.items():
        node, names = nodes[0], list(key[:-2])  # the header and the stream inputs
        problems = [_load_data(tensors[n], p.parent) for n in names]
        layer = _layer(node, tensors, toc, next((q for q in problems if q), None))
        count = sum(_decoded_readers(n, consumers) for n in nodes)
        layers.append(dataclasses.replace(layer, readers=count))
    opset = next((o.version for o in model.opset_import if o.domain == DOMAIN), 0)
    return InspectResult(str(p), version, opset, files, layers, _dense_nodes(graph))
