"""Finding the weights of a model, deciding the form each is stored in, and the layouts.

A *layer* is a Gemm, MatMul or Conv node of the main graph whose weight is a float32
initializer, or a Gather (axis 0) on a float32 or float16 table (an embedding): its weight
gets a compute kernel (a `WeightGroup`). Compression works per weight, not per node: a
weight shared by several nodes is compressed once, as a layer weight only when every node
that reads it is a layer that stores it the same way.

Every other initializer at or above a size threshold gets the *storage* form
(`StoredWeight`): decoded once at session creation and handed to whatever reads it (LSTM,
Gather on other axes, elementwise ops, layers inside If/Loop bodies, weights shared oddly). Integer
weights (int8/uint8) are stored losslessly, after the requantize pass gave them fewer values
where the budget chose to. What cannot be stored is listed with a reason
(`Skipped`), so the report can say why a big tensor stayed as it was.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from dc_onnx import scratch
from dc_onnx.errors import InputError

logger = logging.getLogger(__name__)

LayerKind = Literal["conv", "fc", "embedding"]
# Kinds whose stored matrix is the weight flattened after its first axis (no transpose).
_ROW_MAJOR_KINDS = ("conv", "embedding")


def weight_values(value: ir.Value) -> np.ndarray:
    """An initializer's values, in its own dtype."""
    tensor = value.const_value
    assert tensor is not None
    return tensor.numpy()


def set_weight_values(value: ir.Value, array: np.ndarray) -> None:
    """Replace an initializer's values, rounded to its own dtype (round to nearest even)."""
    dtype = weight_values(value).dtype
    value.const_value = ir.Tensor(np.asarray(array).astype(dtype), name=value.name)


# Per-weight settings the allocate pass leaves on a weight for the prune, cluster and
# lower passes: "sparsity", "bits", "index_bits", or "keep" (left dense, not a layer);
# "keep" with "float16": stored as float16 instead (passes/half.py).
ANNOTATION_PREFIX = "dc_onnx."
ANNOTATIONS = ("sparsity", "bits", "index_bits", "keep", "float16")
KEPT_REASON = "kept exact: compressing it would cost more error than the budget allows"
FLOAT16_REASON = (
    "stored as float16, cast back to float32 at load: a codebook would cost more error than "
    "the budget allows"
)


def annotation(weight: ir.Value, key: str) -> float | None:
    """A per-weight setting written by the allocate pass (ANNOTATIONS), if any."""
    text = weight.metadata_props.get(ANNOTATION_PREFIX + key)
    return None if text is None else float(text)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One node that reads a compressible weight."""

    node: ir.Node
    weight: ir.Value
    kind: LayerKind
    transposed: bool  # the stored [out, in] matrix is the weight transposed
    weight_side: int  # the weight's input index: MatMul 1 for X @ W, 0 for W @ X;
    # Gemm and Conv 1; Gather 0 (the table)
    # No sparse kernel (Conv 3-D, ConvTranspose): the weight is pruned and clustered as a
    # layer's, then lowered to the decode op (CompressedConstant) feeding the node itself.
    decoded: bool = False

    @property
    def name(self) -> str:
        return self.node.name or str(self.weight.name)

    @property
    def layout(self) -> tuple[str, bool]:
        return (self.node.op_type, self.transposed)


@dataclasses.dataclass(frozen=True)
class WeightGroup:
    """A compressible weight and the layers that read it."""

    weight: ir.Value
    layers: tuple[Layer, ...]

    @property
    def kind(self) -> LayerKind:
        return self.layers[0].kind

    @property
    def decoded(self) -> bool:
        return self.layers[0].decoded

    @property
    def name(self) -> str:
        return ",".join(layer.name for layer in self.layers)

    def matches(self, pattern: str) -> bool:
        names = [str(self.weight.name)] + [layer.name for layer in self.layers]
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)

    def annotation(self, key: str) -> float | None:
        """A per-weight setting written by the allocate pass (ANNOTATIONS), if any."""
        return annotation(self.weight, key)

    def array(self) -> np.ndarray:
        return weight_values(self.weight)

    def set_array(self, array: np.ndarray) -> None:
        """Replace the weight's values, keeping its dtype (float16 tables stay float16);
        a large one goes to a scratch file (dc_onnx/scratch.py)."""
        dtype = weight_values(self.weight).dtype
        self.set_tensor(scratch.as_tensor(np.asarray(array).astype(dtype), self.weight.name))

    def set_tensor(self, tensor: ir.TensorProtocol) -> None:
        scratch.discard(self.weight.const_value)  # a previous scratch file goes now
        self.weight.const_value = tensor

    def release(self) -> None:
        """Unmap the weight if it is memory-mapped; a large model is read one weight at a time."""
        scratch.release(self.weight.const_value)

    @property
    def row_axis(self) -> int:
        """The weight's axis that indexes the stored matrix's rows (the output channels)."""
        if self.kind in _ROW_MAJOR_KINDS:
            return 0
        return 1 if self.layers[0].transposed else 0

    def stored_matrix(self, array: np.ndarray | None = None) -> np.ndarray:
        """The weight as the [out, in] matrix of docs/format.md."""
        w = self.array() if array is None else array
        if self.kind in _ROW_MAJOR_KINDS:
            return w.reshape(w.shape[0], -1)
        return w.T if self.layers[0].transposed else w

    def from_stored(self, matrix: np.ndarray) -> np.ndarray:
        original = self.array()
        if self.kind in _ROW_MAJOR_KINDS:
            return matrix.reshape(original.shape)
        return matrix.T if self.layers[0].transposed else matrix


def _constant_weight(
    value: ir.Value | None,
    ndims: Iterable[int],
    dtypes: tuple[ir.DataType, ...] = (ir.DataType.FLOAT,),
) -> bool:
    if value is None or not value.is_initializer() or value.is_graph_input():
        return False
    tensor = value.const_value
    return tensor is not None and tensor.dtype in dtypes and len(tensor.shape) in ndims


# Gather tables: the vocabulary axis plus up to 7 row axes (the kernel's limit), fp32/fp16.
_TABLE_RANKS = range(1, 9)
_TABLE_DTYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)


def _embedding(node: ir.Node) -> Layer | None:
    """A Gather on axis 0 of a constant table with run-time indices."""
    table, indices = node.inputs[0], node.inputs[1]
    if not _constant_weight(table, _TABLE_RANKS, _TABLE_DTYPES) or indices is None:
        return None
    if indices.is_initializer() and not indices.is_graph_input():
        return None  # both constant: a folded constant, not an embedding look-up
    assert table is not None and table.const_value is not None
    shape = table.const_value.shape.numpy()
    if 0 in shape or max(shape) > 2**31 - 1:
        return None  # the kernel takes dims in 1..2^31-1
    axis = node.attributes.get_int("axis", 0)
    if axis not in (0, -len(shape)):
        return None
    return Layer(node, table, "embedding", transposed=False, weight_side=0)


def _as_layer(node: ir.Node) -> Layer | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    inputs = list(node.inputs)
    if node.op_type == "Gemm" and len(inputs) >= 2 and _constant_weight(inputs[1], (2,)):
        trans_b = node.attributes.get_int("transB", 0)
        assert inputs[1] is not None
        return Layer(node, inputs[1], "fc", transposed=not trans_b, weight_side=1)
    if node.op_type == "MatMul" and len(inputs) == 2:
        a, b = inputs
        if _constant_weight(b, (2,)) and not _constant_weight(a, (1, 2, 3, 4, 5, 6)):
            assert b is not None
            return Layer(node, b, "fc", transposed=True, weight_side=1)
        if _constant_weight(a, (2,)) and not _constant_weight(b, (1, 2, 3, 4, 5, 6)):
            assert a is not None
            return Layer(node, a, "fc", transposed=False, weight_side=0)
    if node.op_type == "Gather" and len(inputs) == 2:
        return _embedding(node)
    if node.op_type == "Conv" and len(inputs) >= 2 and _constant_weight(inputs[1], (3, 4, 5)):
        assert inputs[1] is not None and inputs[1].const_value is not None
        three_d = len(inputs[1].const_value.shape) == 5
        return Layer(node, inputs[1], "conv", transposed=False, weight_side=1, decoded=three_d)
    is_deconv = node.op_type == "ConvTranspose" and len(inputs) >= 2
    if is_deconv and _constant_weight(inputs[1], (3, 4, 5)):
        assert inputs[1] is not None
        return Layer(node, inputs[1], "conv", transposed=False, weight_side=1, decoded=True)
    return None


def _compute_groups(graph: ir.Graph) -> tuple[list[WeightGroup], list[ir.Value]]:
    """Layer weights in graph order, and the layer weights that are shared oddly."""
    by_weight: dict[int, list[Layer]] = {}
    weights: dict[int, ir.Value] = {}
    for node in graph:
        layer = _as_layer(node)
        if layer is not None:
            by_weight.setdefault(id(layer.weight), []).append(layer)
            weights[id(layer.weight)] = layer.weight
    groups, odd = [], []
    for key, layers in by_weight.items():
        weight = weights[key]
        # Every use must be a layer's weight input: a node reading the weight twice
        # (Gemm(A, W, W)) would still need the dense W after lowering.
        shared_oddly = len(weight.uses()) != len(layers) or len({lay.layout for lay in layers}) != 1
        if weight.metadata_props.get(ANNOTATION_PREFIX + "keep"):
            continue  # the allocation left it dense
        if shared_oddly or weight.is_graph_output():
            odd.append(weight)
            continue
        groups.append(WeightGroup(weight, tuple(layers)))
    return groups, odd


def find_weight_groups(graph: ir.Graph) -> list[WeightGroup]:
    """Layer weights (compute kernels), in graph order; only the main graph has layers:
    the kernels read their streams as constant initializers of their own graph."""
    return _compute_groups(graph)[0]


# Storage form: the dtypes the decode op outputs (docs/format.md, CompressedConstant).
FLOAT_DTYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)
INTEGER_DTYPES = (ir.DataType.INT8, ir.DataType.UINT8)
DEFAULT_MIN_ELEMENTS = 4096
# Ops outside the standard domain known to read their weights as ordinary inputs (ORT
# pre-packs them when constant, and computes from the input otherwise).
_CONTRIB_READERS = {("com.microsoft", "DynamicQuantizeLSTM")}
StoredKind = Literal["storage", "integer"]


@dataclasses.dataclass(frozen=True)
class StoredWeight:
    """A weight kept in storage form: decoded once, read by any op (subgraphs included)."""

    weight: ir.Value
    kind: StoredKind  # "integer": int8/uint8, stored losslessly unless the budget requantizes
    readers: tuple[str, ...]  # op types of the nodes that read it

    @property
    def name(self) -> str:
        return str(self.weight.name)

    @property
    def dtype(self) -> ir.DataType:
        tensor = self.weight.const_value
        assert tensor is not None
        return tensor.dtype

    def matches(self, pattern: str) -> bool:
        return fnmatch.fnmatchcase(self.name, pattern)

    def array(self) -> np.ndarray:
        """The weight in its own dtype (ml_dtypes.bfloat16 for bf16)."""
        return weight_values(self.weight)

    def set_array(self, array: np.ndarray) -> None:
        """Store new values, rounded to the weight's own dtype (round to nearest even)."""
        set_weight_values(self.weight, array)

    def annotation(self, key: str) -> float | None:
        """A per-weight setting written by the allocate pass (ANNOTATIONS), if any."""
        return annotation(self.weight, key)

    def stored_matrix(self, array: np.ndarray | None = None) -> np.ndarray:
        """The [rows, cols] matrix the storage form encodes: the first dim by the rest."""
        w = self.array() if array is None else array
        return w.reshape(w.shape[0] if w.ndim >= 2 else 1, -1)


# The weights the error budget analyses and allocates: layer weights (compute kernels),
# float storage-form weights (LSTM/GRU, tables read otherwise, weights lifted out of If/Loop
# bodies) and integer ones (requantized in place, dc_onnx.requantize; lossless when kept).
AnalysedWeight = WeightGroup | StoredWeight


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A weight at or above the threshold that keeps its original form, and why."""

    name: str
    dtype: str
    elements: int
    reason: str


@dataclasses.dataclass(frozen=True)
class Survey:
    """Every weight of a model, by the form it will be stored in."""

    groups: list[WeightGroup]
    stored: list[StoredWeight]
    skipped: list[Skipped]
    small: int  # initializers below the threshold (left as they are)
    small_bytes: int

    def to_stats(self) -> SurveyStats:
        found = [
            {"name": str(g.weight.name), "kind": g.kind, "dtype": _dtype_name(g.weight),
             "elements": int(g.array().size), "readers": [lay.node.op_type for lay in g.layers]}
            for g in self.groups
        ] + [
            {"name": s.name, "kind": s.kind, "dtype": s.dtype.name,
             "elements": int(s.array().size), "readers": list(s.readers)}
            for s in self.stored
        ]  # fmt: skip
        return SurveyStats(found, list(self.skipped), self.small, self.small_bytes)


@dataclasses.dataclass(frozen=True)
class SurveyStats:
    """What the report says about the weights found (canonicalize's survey)."""

    weights: list[dict[str, Any]]  # name, kind, dtype, elements, readers
    left: list[Skipped]  # at or above the threshold, left as they are
    small_tensors: int
    small_bytes: int


def _dtype_name(value: ir.Value) -> str:
    tensor = value.const_value
    assert tensor is not None
    return tensor.dtype.name


def _nbytes(tensor: ir.TensorProtocol) -> int:
    try:
        return int(tensor.nbytes)
    except (TypeError, ValueError):  # strings have no fixed width
        return 0


def _readers(value: ir.Value) -> list[ir.Node]:
    seen: dict[int, ir.Node] = {}
    for user, _ in value.uses():
        seen[id(user)] = user
    return list(seen.values())


def _storage_refusal(value: ir.Value, main: ir.Graph) -> str | None:
    """Why `value` cannot take the storage form (None: it can)."""
    tensor = value.const_value
    assert tensor is not None
    if tensor.dtype not in FLOAT_DTYPES + INTEGER_DTYPES:
        return f"dtype {tensor.dtype.name} has no storage form"
    if value.is_graph_input():
        return "also a graph input (callers may override it)"
    if value.graph is not main:
        return "initializer of a subgraph that could not be lifted to the main graph"
    for node in _readers(value):
        if (
            node.domain not in ("", "ai.onnx")
            and (node.domain, node.op_type) not in _CONTRIB_READERS
        ):
            return f"read by {node.domain}::{node.op_type}, which may need a constant input"
    if tensor.dtype in FLOAT_DTYPES:
        array = tensor.numpy().astype(np.float32)
        if not np.all(np.isfinite(array)):
            return "holds NaN or infinite values"
    return None


def survey(graph: ir.Graph, min_elements: int = DEFAULT_MIN_ELEMENTS) -> Survey:
    """Sort every initializer of `graph` (and of its subgraphs) by storage form."""
    groups, odd = _compute_groups(graph)
    layer_weights = {id(g.weight) for g in groups}
    odd_ids = {id(v) for v in odd}
    stored, skipped = [], []
    small = small_bytes = 0
    graphs = [graph, *graph.subgraphs()]
    for owner in graphs:
        for value in owner.initializers.values():
            tensor = value.const_value
            if id(value) in layer_weights or tensor is None:
                continue
            if not value.uses() and not value.is_graph_output():
                continue  # unused: canonicalize drops it
            size = int(np.prod(tensor.shape.numpy())) if tensor.shape.numpy() else 1
            if size < min_elements:
                small += 1
                small_bytes += _nbytes(tensor)
                if id(value) in odd_ids:
                    logger.debug("weight '%s' is shared by nodes that store it differently "
                                 "and below the threshold: it stays dense", value.name)  # fmt: skip
                continue
            if value.metadata_props.get(ANNOTATION_PREFIX + "keep"):
                # The error budget keeps it exact (or float16): not a layer, nor stored.
                half = value.metadata_props.get(ANNOTATION_PREFIX + "float16")
                why = FLOAT16_REASON if half else KEPT_REASON
                skipped.append(Skipped(str(value.name), tensor.dtype.name, size, why))
                continue
            reason = _storage_refusal(value, graph)
            if reason is not None:
                skipped.append(Skipped(str(value.name), tensor.dtype.name, size, reason))
                continue
            kind: StoredKind = "integer" if tensor.dtype in INTEGER_DTYPES else "storage"
            readers = tuple(node.op_type for node in _readers(value))
            stored.append(StoredWeight(value, kind, readers))
    return Survey(groups, stored, skipped, small, small_bytes)


def find_stored_weights(graph: ir.Graph, min_elements: int) -> list[StoredWeight]:
    return survey(graph, min_elements).stored


def find_analysed_weights(graph: ir.Graph, min_elements: int) -> list[AnalysedWeight]:
    """The weights the error budget analyses (AnalysedWeight), layer weights first, then
    the storage-form ones, float and integer."""
    return [*find_weight_groups(graph), *find_stored_weights(graph, min_elements)]


def annotate(weight: ir.Value, **settings: float) -> None:
    """Record per-weight settings (see ANNOTATIONS) on a weight value."""
    for key, value in settings.items():
        assert key in ANNOTATIONS, key
        weight.metadata_props[ANNOTATION_PREFIX + key] = repr(value)


# The cluster pass's row-scaled form (dc_onnx.quantize.RowScaled), for the lower pass: the
# scales and the shared codebook, as the hex of their float32 bytes.
_ROW_KEYS = ("row_scales", "row_codebook")


def annotate_rows(weight: ir.Value, scales: np.ndarray, codebook: np.ndarray) -> None:
    """Record that the weight's values are float32(scales[r] * codebook[code]) per stored row."""
    for key, array in zip(_ROW_KEYS, (scales, codebook), strict=True):
        weight.metadata_props[ANNOTATION_PREFIX + key] = np.asarray(array, "<f4").tobytes().hex()


def row_annotation(weight: ir.Value) -> tuple[np.ndarray, np.ndarray] | None:
    """(scales, codebook) recorded by annotate_rows, if any."""
    scales, codebook = (weight.metadata_props.get(ANNOTATION_PREFIX + key) for key in _ROW_KEYS)
    if scales is None or codebook is None:
        return None
    return tuple(np.frombuffer(bytes.fromhex(t), "<f4").copy() for t in (scales, codebook))


def stored_matrix_of(weight: WeightGroup | StoredWeight, array: np.ndarray) -> np.ndarray:
    """`array` (the weight's values) as the [rows, cols] matrix the encoder stores
    (docs/format.md): a layer's [out, in]; a storage weight's first dim by the rest."""
    if isinstance(weight, WeightGroup):
        return weight.stored_matrix(array)
    return array.reshape(array.shape[0] if array.ndim >= 2 else 1, -1)


def from_stored_matrix(
    weight: WeightGroup | StoredWeight, array: np.ndarray, matrix: np.ndarray
) -> np.ndarray:
    """The inverse of stored_matrix_of, back to `array`'s layout."""
    if isinstance(weight, WeightGroup):
        return weight.from_stored(matrix)
    return matrix.reshape(array.shape)


def row_axis_of(weight: WeightGroup | StoredWeight) -> int:
    """The axis of the weight that indexes its stored matrix's rows."""
    return weight.row_axis if isinstance(weight, WeightGroup) else 0


def clear_row_annotation(weight: ir.Value) -> None:
    for key in _ROW_KEYS:
        weight.metadata_props.pop(ANNOTATION_PREFIX + key, None)


def clear_annotations(graph: ir.Graph) -> None:
    for value in graph.initializers.values():
        for key in (*ANNOTATIONS, *_ROW_KEYS):
            value.metadata_props.pop(ANNOTATION_PREFIX + key, None)


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register `array` as a new initializer named `name` (suffixed until unique)."""
    base, n = name, 0
    while name in graph.initializers:
        n += 1
        name = f"{base}_{n}"
    value = ir.Value(name=name, const_value=ir.Tensor(array, name=name))
    value.type = ir.TensorType(ir.DataType.from_numpy(array.dtype))
    value.shape = ir.Shape(array.shape)
    graph.register_initializer(value)
    return value


def first_match(group: WeightGroup | StoredWeight, patterns: dict[str, float]) -> float | None:
    """The value of the first glob that matches the weight's or a node's name."""
    for pattern, value in patterns.items():
        if group.matches(pattern):
            return value
    return None


def refuse_unmatched(flag: str, patterns: Iterable[str], weights: Sequence[Any]) -> None:
    """Refuse per-layer patterns that name no weight: most likely a typo, which would
    silently change the result. A pattern matches a weight's name exactly or as a glob."""
    unmatched = [
        p for p in patterns
        if not any(p == str(w.weight.name) or w.matches(p) for w in weights)
    ]  # fmt: skip
    if unmatched:
        names = ", ".join(w.name for w in weights) or "none"
        raise InputError(
            f"{flag}: {', '.join(repr(p) for p in unmatched)} matches no layer (layers: {names})"
        )
