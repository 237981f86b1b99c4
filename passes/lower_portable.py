"""lower-portable: store every clustered weight with standard ONNX ops only (`--target portable`).

The custom-op form needs our library; this one loads in any ONNX runtime. A weight with
at most 256 distinct values (after `cluster`) becomes a float32 codebook and uint8 codes,
and a few standard nodes rebuild the dense weight from them:

- dense codes:  W = Gather(codebook, Cast(codes[W.shape] -> int32))
- sparse codes: the non-zeros only, as uint8 relative indices (the gap to the previous
  non-zero; a run of zeros longer than 255 adds filler entries with code 0, as in
  Han et al. 2016 section 2) plus uint8 codes;
  positions = CumSum(Cast(gaps) + 1) - 1,
  W = Reshape(ScatterND(zeros[n], positions[m, 1], Gather(codebook, Cast(codes))), W.shape)

Every input of those nodes is an initializer, so ORT folds them into a dense initializer
at session creation: the runtime cost is paid once, the file stays small. The original
layer nodes are not touched: they read the rebuilt weight instead of the initializer.
There is no Huffman coding here (no standard op decodes it); zip does that part, so the
compile report gives the zipped size too. Sparse storage is used where it takes fewer
bytes (2 bytes per entry against 1 byte per weight), and needs opset 11 (CumSum,
ScatterND); before that every weight is stored dense.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import onnx_ir as ir

from dc_onnx.codecs.schema import CodebookOverflowError, split_codebook
from dc_onnx.errors import CompileError
from dc_onnx.layers import (
    DEFAULT_MIN_ELEMENTS,
    Skipped,
    StoredWeight,
    WeightGroup,
    add_initializer,
    clear_annotations,
    find_stored_weights,
    find_weight_groups,
    from_stored_matrix,
    row_annotation,
    row_axis_of,
    stored_matrix_of,
)
from dc_onnx.passes.lower import LayerStats, LowerStats, row_codes
from dc_onnx.pipeline import CompilerPass
from dc_onnx.progress import track

__all__ = ["PortableLowerPass", "Sparse", "relative_entries"]

logger = logging.getLogger(__name__)

Sparse = Literal["auto", "always", "never"]
MAX_GAP = 255  # uint8 relative indices
SPARSE_OPSET = 11  # CumSum and ScatterND


def relative_entries(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, codes) as uint8 entries of the flat code array; fillers carry code 0.

    Entry i lands at position `sum(gaps[:i+1] + 1) - 1`; a run of r zeros before a
    non-zero becomes r // 256 fillers (each covers 255 zeros and writes one more zero
    itself) and a gap of r % 256.
    """
    flat = codes.ravel()
    positions = np.flatnonzero(flat)
    runs = np.diff(positions, prepend=-1) - 1
    fillers = runs // (MAX_GAP + 1)
    count = positions.size + int(fillers.sum())
    gaps = np.full(count, MAX_GAP, dtype=np.uint8)
    values = np.zeros(count, dtype=np.uint8)
    # The real entry of non-zero j comes after its own fillers and everything before it.
    slots = np.cumsum(fillers + 1) - 1
    gaps[slots] = runs % (MAX_GAP + 1)
    values[slots] = flat[positions]
    return gaps, values


class _Builder:
    """Appends constant-foldable nodes that rebuild one weight."""

    def __init__(self, graph: ir.Graph, base: str) -> None:
        self.graph, self.base = graph, base
        self.nodes: list[ir.Node] = []

    def const(self, suffix: str, array: np.ndarray) -> ir.Value:
        return add_initializer(self.graph, f"{self.base}.{suffix}", array)

    def op(self, op_type: str, inputs: list[ir.Value], **attributes: int | ir.Tensor) -> ir.Value:
        attrs = [ir.convenience.convert_attribute(k, v) for k, v in attributes.items()]
        node = ir.Node("", op_type, inputs, attrs, num_outputs=1,
                       name=f"{self.base}/{op_type}_{len(self.nodes)}")  # fmt: skip
        self.nodes.append(node)
        return node.outputs[0]

    def lookup(self, codebook: ir.Value, codes: ir.Value) -> ir.Value:
        index = self.op("Cast", [codes], to=int(ir.DataType.INT32))
        return self.op("Gather", [codebook, index], axis=0)


def _rebuild_dense(b: _Builder, codebook: np.ndarray, codes: np.ndarray) -> ir.Value:
    return b.lookup(b.const("codebook", codebook), b.const("codes", codes))


def _rebuild_sparse(
    b: _Builder, codebook: np.ndarray, codes: np.ndarray, gaps: np.ndarray, values: np.ndarray
) -> ir.Value:
    one = b.const("one", np.array(1, dtype=np.int64))
    steps = b.op("Add", [b.op("Cast", [b.const("gaps", gaps)], to=int(ir.DataType.INT64)), one])
    positions = b.op("Sub", [b.op("CumSum", [steps, b.const("axis", np.array(0, np.int64))]), one])
    index = b.op("Reshape", [positions, b.const("index_shape", np.array([-1, 1], np.int64))])
    stored = b.lookup(b.const("codebook", codebook), b.const("codes", values))
    zero = ir.Tensor(np.zeros(1, dtype=codebook.dtype), name=f"{b.base}.zero")
    zeros = b.op("ConstantOfShape", [b.const("size", np.array([codes.size], np.int64))],
                 value=zero)  # fmt: skip
    flat = b.op("ScatterND", [zeros, index, stored])
    return b.op("Reshape", [flat, b.const("shape", np.array(codes.shape, np.int64))])


class PortableLowerPass(CompilerPass):
    """Replace each compressible weight by codes + codebook rebuilt with standard ops.

    The layers' weights must fit a codebook (run `cluster` first); the other weights of
    `min_weight_elements` or more (storage form, as `lower` finds them) are rebuilt the
    same way when they fit one, else left as they are.
    """

    name = "lower-portable"

    def __init__(self, min_weight_elements: int = DEFAULT_MIN_ELEMENTS,
                 sparse: Sparse = "auto") -> None:  # fmt: skip
        super().__init__()
        self.min_weight_elements = min_weight_elements
        self.sparse = sparse

    def _use_sparse(self, model: ir.Model, n: int, entries: int) -> bool:
        if model.graph.opset_imports.get("", 1) < SPARSE_OPSET or self.sparse == "never":
            return False
        return self.sparse == "always" or 2 * entries < n

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        weights: list[WeightGroup | StoredWeight] = [*find_weight_groups(graph)]
        weights += find_stored_weights(graph, self.min_weight_elements)
        layers: dict[str, LayerStats] = {}
        left: list[Skipped] = []
        new_nodes: list[ir.Node] = []
        for group in track(weights, "lower-portable"):
            array = group.array()
            scaled = row_annotation(group.weight)
            try:
                if scaled is not None:  # normalised values, then a Mul by the row scales
                    codebook = np.concatenate([[0.0], scaled[1]]).astype(np.float32)
                    matrix = stored_matrix_of(group, array)
                    codes_matrix = row_codes(matrix, scaled[0], scaled[1], group.name)
                    codes = np.ascontiguousarray(from_stored_matrix(group, array, codes_matrix))
                else:
                    codebook, codes = split_codebook(array)
            except CodebookOverflowError as e:
                if isinstance(group, WeightGroup):
                    raise CompileError(f"layer '{group.name}' has {e}") from None
                dtype = array.dtype.name
                left.append(Skipped(group.name, dtype, int(array.size), str(e)))
                continue
            codebook = codebook.astype(array.dtype)  # exact: the values came from `array`
            gaps, values = relative_entries(codes)
            name = str(group.weight.name)
            b = _Builder(graph, name)
            sparse = self._use_sparse(model, codes.size, gaps.size)
            if not sparse and array.dtype.itemsize == 1:  # int8/uint8: codes are no smaller
                reason = "one byte per value already; uint8 codes would not be smaller"
                left.append(Skipped(group.name, array.dtype.name, int(array.size), reason))
                continue
            if sparse:
                rebuilt = _rebuild_sparse(b, codebook, codes, gaps, values)
            else:
                rebuilt = _rebuild_dense(b, codebook, codes)
            if scaled is not None:
                # Mul rounds each product to float32 once, as the custom ops' decoder does.
                view = [1] * array.ndim
                view[row_axis_of(group)] = scaled[0].size
                rebuilt = b.op("Mul", [rebuilt, b.const("row_scales", scaled[0].reshape(view))])
            new_nodes += b.nodes
            ir.convenience.replace_all_uses_with(group.weight, rebuilt)
            graph.initializers.pop(name)
            rebuilt.name = name
            rebuilt.type = ir.TensorType(ir.DataType.from_numpy(array.dtype))
            rebuilt.shape = ir.Shape(array.shape)
            logger.info("%s: %s codes", group.name, "sparse" if sparse else "dense")
            layers[group.name] = _layer_stats(group, array, codebook, gaps, sparse)
        if new_nodes:
            graph.insert_before(graph.node(0), new_nodes)
        clear_annotations(graph)
        self.stats = LowerStats(layers, left)
        return ir.passes.PassResult(model, bool(layers))


def _layer_stats(
    group: WeightGroup | StoredWeight, weight: np.ndarray, codebook: np.ndarray,
    gaps: np.ndarray, sparse: bool,
) -> LayerStats:  # fmt: skip
    """The report's figures: raw bytes (one per code, one per gap), no Huffman."""
    n = int(weight.size)
    is_layer = isinstance(group, WeightGroup)
    return LayerStats(
        kind=group.kind,
        op=group.layers[0].node.op_type if is_layer else ",".join(group.readers),  # type: ignore[union-attr]
        weights=n,
        nonzeros=int(np.count_nonzero(weight)),
        entries=int(gaps.size) if sparse else 0,
        stored=int(gaps.size) if sparse else n,
        codebook_size=int(codebook.size),
        index_bits=8,
        codes_bytes=int(gaps.size) if sparse else n,
        gaps_bytes=int(gaps.size) if sparse else 0,
        dtype_bits=8 * weight.dtype.itemsize,
    )
