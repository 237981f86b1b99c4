"""lower: replace every compressible layer by one `ai.dc_onnx` op reading encoded streams.

Each weight becomes a codebook (its distinct values, 0 first) and two Huffman-coded
streams (codebook indices and relative indices, docs/format.md). All of them, behind the
header and its TOC, form the side file, held here as one uint8 initializer that every
compressed node reads (format version 3: a node names its streams by TOC index, not by
input); `dc_onnx.writer.save_compiled` moves it to the `.dcw`. Nodes other than the
replaced layers are left untouched.

Storage-form weights (dc_onnx.layers.StoredWeight) become one `CompressedConstant` node
each, at the top of the main graph, whose output takes the weight's name: every reader,
in the main graph or in an If / Loop / Scan body, now reads the decoded tensor. Their
codebook keeps the weight's dtype. A storage weight with more distinct values than a
codebook holds, or whose streams would not be smaller than it, is left as it is and
reported.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from dc_onnx.codecs import EncodedWeight, encode_weight
from dc_onnx.codecs.container import Stream, StreamKind, pack
from dc_onnx.codecs.schema import (
    BIAS_INPUT,
    COMPRESSED_OP,
    CONSTANT_OP,
    DOMAIN,
    DTYPE_ATTRIBUTE,
    HEADER_NAME,
    KEPT_ATTRIBUTES,
    MAX_NONZERO_VALUES,
    OPSET_VERSION,
    CodebookOverflowError,
    header_input,
    split_codebook,
)
from dc_onnx.errors import CompileError
from dc_onnx.large_weights import encode_large, is_large
from dc_onnx.layers import (
    DEFAULT_MIN_ELEMENTS,
    Layer,
    Skipped,
    StoredWeight,
    WeightGroup,
    add_initializer,
    clear_annotations,
    find_stored_weights,
    find_weight_groups,
    row_annotation,
)
from dc_onnx.options import LowerOptions
from dc_onnx.output_positions import conv_output_positions
from dc_onnx.pipeline import CompilerPass
from dc_onnx.progress import track

__all__ = ["DOMAIN", "LayerStats", "LowerOptions", "LowerPass", "LowerStats", "encode_group"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """What lowering one weight produced (the report's per-layer row is computed from it)."""

    kind: str  # conv, fc, storage or integer
    op: str  # the dense op type (storage: the readers' op types)
    weights: int
    nonzeros: int
    entries: int  # relative indices, escapes included
    stored: int  # codes stored (non-zeros plus escape fillers)
    codebook_size: int
    index_bits: int
    codes_bytes: int
    gaps_bytes: int
    dtype_bits: int = 32  # bits of one weight in the original model
    readers: int = 1  # nodes that read the weight (one stored copy, decoded once)


@dataclasses.dataclass(frozen=True)
class LowerStats:
    layers: dict[str, LayerStats]
    left: list[Skipped] = dataclasses.field(default_factory=list)  # storage weights refused


def _index_bits(options: LowerOptions, group: WeightGroup | StoredWeight) -> int:
    """The allocate pass's index bits for this weight, else those of its kind."""
    allocated = group.annotation("index_bits")
    return options.index_bits(group.kind) if allocated is None else int(allocated)


def row_codes(
    matrix: np.ndarray, scales: np.ndarray, codebook: np.ndarray, name: str
) -> np.ndarray:
    """The codes (0 = zero, i + 1 = codebook[i]) that decode `matrix` exactly as
    float32(scales[r] * codebook[code]): the cluster pass's row-scaled form (RowScaled)."""
    rows = matrix.shape[0]
    if scales.shape != (rows,) or not (scales > 0).all() or not np.isfinite(scales).all():
        raise CompileError(f"layer '{name}': its row scales do not fit its {rows} rows")
    codes = np.zeros(matrix.shape, np.uint8)
    full = np.concatenate([[0.0], codebook]).astype(np.float32)
    if codebook.size:
        # The two codebook values around each normalised weight; the one whose product
        # gives the weight back (the nearer first: they differ only within an ulp).
        q = matrix / scales[:, None]
        hi = np.clip(np.searchsorted(codebook, q), 0, codebook.size - 1)
        lo = np.maximum(hi - 1, 0)
        lo_nearer = np.abs(q - codebook[lo]) <= np.abs(q - codebook[hi])
        first, second = np.where(lo_nearer, lo, hi), np.where(lo_nearer, hi, lo)
        exact = (codebook[first] * scales[:, None]).astype(np.float32) == matrix
        nonzero = matrix != 0
        codes[nonzero] = (np.where(exact, first, second)[nonzero] + 1).astype(np.uint8)
    decoded = (full[codes] * scales[:, None]).astype(np.float32)
    if not np.array_equal(decoded, matrix):
        raise CompileError(
            f"layer '{name}': its weights are no longer the row-scaled values the cluster "
            "pass chose (a pass in between changed them)"
        )
    return codes


def encode_group(group: WeightGroup, index_bits: int) -> EncodedWeight:
    """Codebook and streams of one weight, which must fit a codebook (schema.MAX_CODEBOOK),
    or be the cluster pass's row-scaled form."""
    rows = row_annotation(group.weight)
    if rows is not None:
        stored = np.ascontiguousarray(group.stored_matrix())
        scales, values = rows
        codes = row_codes(stored, scales, values, group.name)
        codebook = np.concatenate([[0.0], values]).astype(np.float32)
        return encode_weight(codes, codebook, index_bits, scales, dense_if_smaller=True)
    if is_large(group):  # block by block: never copied whole
        return encode_large(group, index_bits)
    stored = np.ascontiguousarray(group.stored_matrix())
    try:
        codebook, codes = split_codebook(stored)
    except CodebookOverflowError as e:
        raise CompileError(f"layer '{group.name}' has {e}") from None
    return encode_weight(codes, codebook, index_bits, dense_if_smaller=True)


def stored_matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """[rows, cols] of a storage-form weight: its first dim by the rest (rank < 2: one row)."""
    size = int(np.prod(shape))
    rows = int(shape[0]) if len(shape) >= 2 else 1
    return rows, size // rows


def encode_stored(weight: StoredWeight, index_bits: int) -> EncodedWeight | str:
    """Codebook (in the weight's dtype) and streams, or why the weight cannot be encoded."""
    w = weight.array()
    rows, cols = stored_matrix_shape(w.shape)
    if rows > 2**31 - 1 or cols > 2**31 - 1:
        return f"shape {list(w.shape)} has more than 2^31-1 elements per row"
    scaled = row_annotation(weight.weight)
    if scaled is not None:
        matrix = w.reshape(rows, cols)
        codes = row_codes(matrix, scaled[0], scaled[1], weight.name)
        codebook = np.concatenate([[0.0], scaled[1]]).astype(np.float32)
        encoded = encode_weight(codes, codebook, index_bits, scaled[0], dense_if_smaller=True)
        return _larger_than(encoded, w.nbytes) or encoded
    # float32 holds every fp16, bf16, int8 and uint8 value exactly: compare there.
    flat = w.reshape(rows, cols).astype(np.float32)
    nonzero = flat != 0
    values = np.unique(flat[nonzero])
    if values.size > MAX_NONZERO_VALUES:
        return f"{values.size} distinct non-zero values; a codebook holds {MAX_NONZERO_VALUES}"
    codebook = np.concatenate([[0.0], values]).astype(np.float32).astype(w.dtype)
    codes = np.zeros(flat.shape, dtype=np.uint8)
    codes[nonzero] = np.searchsorted(values, flat[nonzero]) + 1
    encoded = encode_weight(codes, codebook, index_bits, dense_if_smaller=True)
    return _larger_than(encoded, w.nbytes) or encoded


def _larger_than(encoded: EncodedWeight, nbytes: int) -> str | None:
    """Why the streams are not worth it (they take `nbytes` or more), else None."""
    stored = len(encoded.codes) + len(encoded.gaps) + encoded.codebook.nbytes
    stored += encoded.code_lengths.size
    stored += 0 if encoded.row_scales is None else encoded.row_scales.nbytes
    if stored >= nbytes:
        return f"incompressible: its streams would take {stored} bytes, it has {nbytes}"
    return None


def _streams(encoded: EncodedWeight) -> list[Stream]:
    """The weight's TOC streams in `stream_kinds` order: the four, then the row scales if
    any; `count` is symbols for the Huffman streams, elements otherwise."""
    streams = [
        Stream(StreamKind.CODEBOOK, encoded.codebook.tobytes(), int(encoded.codebook.size)),
        Stream(StreamKind.CODES, encoded.codes, encoded.num_codes),
        Stream(StreamKind.GAPS, encoded.gaps, encoded.num_entries),
        Stream(
            StreamKind.CODE_LENGTHS,
            encoded.code_lengths.tobytes(),
            int(encoded.code_lengths.size),
        ),
    ]
    if encoded.row_scales is not None:
        scales = encoded.row_scales
        streams.append(Stream(StreamKind.ROW_SCALES, scales.tobytes(), int(scales.size)))
    return streams


def _compressed_node(
    layer: Layer,
    header: ir.Value,
    stream_ids: list[int],
    weight_shape: tuple[int, ...],
    encoded: EncodedWeight,
) -> list[ir.Node]:
    """The compressed op replacing `layer.node`, followed by a Cast when the weight is not
    float32 (the ops compute in float32; a float16 table's values are exact in float32).
    Its streams are slices of the side file (`header`) named by `stream_ids`: the stream
    inputs stay empty, and the bias, if any, keeps its slot after them."""
    node = layer.node
    op = node.op_type
    inputs: list[ir.Value | None] = [node.inputs[1 - layer.weight_side], header]
    if op in ("Gemm", "Conv") and len(node.inputs) > 2 and node.inputs[2] is not None:
        inputs += [None] * (BIAS_INPUT - len(inputs)) + [node.inputs[2]]
    kept = [a for a in KEPT_ATTRIBUTES[op] if a in node.attributes]
    if op == "Conv" and node.attributes.get_string("auto_pad", "NOTSET") == "VALID":
        # VALID is zero padding: say it with pads alone, since the kernel's dense path
        # hands its attributes to ORT's Conv, which refuses auto_pad and pads together.
        kept = [a for a in kept if a not in ("auto_pad", "pads")]
    attributes = [node.attributes[a] for a in kept]
    attributes += [
        ir.AttrInt64s("weight_shape", list(weight_shape)),
        ir.AttrInt64("num_entries", encoded.num_entries),
        ir.AttrInt64("index_bits", encoded.index_bits),
        ir.AttrInt64s("stream_ids", stream_ids),
    ]
    if layer.name != node.name:  # readers fall back to the node's name (docs/format.md)
        attributes.append(ir.AttrString("layer", layer.name))
    if op == "MatMul":
        attributes.append(ir.AttrInt64("weight_side", layer.weight_side))
    new = ir.Node(
        DOMAIN,
        COMPRESSED_OP[op],
        inputs,
        attributes,
        num_outputs=1,
        name=node.name,
        version=OPSET_VERSION,
    )
    tensor = layer.weight.const_value
    assert tensor is not None
    if tensor.dtype == ir.DataType.FLOAT:
        return [new]
    new.outputs[0].name = f"{node.outputs[0].name}.float32"
    cast = ir.Node(
        "",
        "Cast",
        new.outputs,
        [ir.AttrInt64("to", tensor.dtype.value)],
        num_outputs=1,
        name=f"{node.name}.cast" if node.name else None,
    )
    return [new, cast]


class LowerPass(CompilerPass):
    name = "lower"

    def __init__(
        self,
        options: LowerOptions,
        min_weight_elements: int = DEFAULT_MIN_ELEMENTS,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        """`input_shapes`: the graph inputs' shapes on the calibration inputs, from which
        each Conv's output size is inferred for its choice of form (conv_dense_threshold)."""
        super().__init__()
        self.options = options
        self.min_weight_elements = min_weight_elements
        self.input_shapes = dict(input_shapes or {})

    def requires(self, model: ir.Model) -> None:
        if HEADER_NAME in model.graph.initializers:
            raise CompileError("the model is already compiled (it has a dc-onnx header)")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        groups = find_weight_groups(graph)
        # Before any layer is replaced: shape inference cannot see through our ops.
        sized = self.options.conv_dense_density is None and any(g.kind == "conv" for g in groups)
        positions = conv_output_positions(model, self.input_shapes) if sized else {}
        jobs: list[tuple[WeightGroup | StoredWeight, EncodedWeight]] = []
        left: list[Skipped] = []
        for i, group in enumerate(track(groups, "encode"), 1):
            logger.info("encode %d/%d %s", i, len(groups), group.name)
            encoded = encode_group(group, _index_bits(self.options, group))
            # A small table (token types, ...) is cheaper as it is: its codebook alone
            # can outweigh it. Compute layers keep the paper's rule: every one is encoded.
            tensor = group.weight.const_value
            assert tensor is not None
            embedding = group.kind == "embedding"
            larger = _larger_than(encoded, tensor.nbytes) if embedding else None
            if larger is not None:
                logger.info("table '%s' stays as it is: %s", group.weight.name, larger)
                size = int(group.array().size)
                left.append(Skipped(str(group.weight.name), tensor.dtype.name, size, larger))
                continue
            if self._decode_form(group, positions):
                group = dataclasses.replace(
                    group, layers=tuple(dataclasses.replace(x, decoded=True) for x in group.layers)
                )
            jobs.append((group, encoded))
            group.release()  # a large model is held in memory one weight at a time
        for weight in find_stored_weights(graph, self.min_weight_elements):
            logger.info("encode %s (%s, read by %s)", weight.name, weight.kind, weight.readers)
            enc = encode_stored(weight, _index_bits(self.options, weight))
            if isinstance(enc, str):
                logger.warning("weight '%s' stays uncompressed: %s", weight.name, enc)
                array = weight.array()
                left.append(Skipped(weight.name, weight.dtype.name, int(array.size), enc))
                continue
            jobs.append((weight, enc))
        self.stats = LowerStats({}, left)
        if not jobs:
            clear_annotations(graph)
            return ir.passes.PassResult(model, False)
        streams = [_streams(e) for _, e in jobs]
        # Codebooks first in the side file, widest dtype first, so each stays aligned to its
        # element size (docs/format.md); then the byte streams.
        # The row scales (float32) lead, so they stay aligned too.
        by_width = sorted(range(len(jobs)), key=lambda j: -jobs[j][1].codebook.dtype.itemsize)
        order = [(j, 4) for j in range(len(jobs)) if len(streams[j]) > 4]
        order += [(j, 0) for j in by_width] + [(j, k) for k in (1, 2, 3) for j in range(len(jobs))]
        stream_ids = {key: n for n, key in enumerate(order)}
        # The whole side file is one initializer (format version 3): the writer moves it
        # to the .dcw, and every node slices its streams from it by TOC index.
        side_file, _ = pack([streams[j][k] for j, k in order])
        header = add_initializer(graph, HEADER_NAME, np.frombuffer(side_file, np.uint8))
        layers: dict[str, LayerStats] = {}
        decoders: list[ir.Node] = []
        for j, (job, enc) in enumerate(jobs):
            base = str(job.weight.name)
            ids = [stream_ids[(j, k)] for k in range(len(streams[j]))]
            if isinstance(job, StoredWeight):
                decoders.extend(_replace_stored(graph, job, header, ids, enc))
                layers[job.name] = _stored_stats(job, enc)
                continue
            if job.decoded:  # Conv 3-D, ConvTranspose, dense layers: ORT's own op reads it
                readers = tuple(layer.node.op_type for layer in job.layers)
                stored = StoredWeight(job.weight, "storage", readers)
                # Codes are in the stored [out, in] order; a weight stored transposed gets
                # it back through a Transpose, which ORT folds once the decode is materialised.
                transposed = job.kind == "fc" and job.layers[0].transposed
                decoders.extend(
                    _replace_stored(graph, stored, header, ids, enc, job.name, transposed)
                )
                layers[job.name] = _layer_stats(job, enc)
                continue
            fc = job.kind == "fc"
            shape = job.stored_matrix().shape if fc else job.array().shape
            for layer in job.layers:
                new = _compressed_node(layer, header, ids, shape, enc)
                ir.convenience.replace_nodes_and_values(
                    graph, layer.node, [layer.node], new, layer.node.outputs, new[-1].outputs
                )
            graph.initializers.pop(base)
            layers[job.name] = _layer_stats(job, enc)
        if decoders:
            graph.insert_before(graph[0], decoders)
        graph.opset_imports[DOMAIN] = OPSET_VERSION
        clear_annotations(graph)
        self.stats = LowerStats(layers, left)
        return ir.passes.PassResult(model, True)

    def _decode_form(self, group: WeightGroup, positions: Mapping[str, int]) -> bool:
        """Whether a layer runs faster as ORT's own op, fed by the decode op, than as the
        sparse kernel (docs/benchmarks.md, "Sparse or dense convolution" and "Sparse or
        dense FC"): a Conv at least `conv_dense_density` non-zero (by default
        `conv_dense_threshold`'s, from its output size), or depthwise (one input
        channel per group: ORT's kernel wins at every density measured); a Gemm / MatMul
        at least `fc_dense_density` non-zero, by default `fc_dense_threshold`'s.
        `positions`: each Conv's output positions per image, by output name, where known."""
        if group.kind not in ("conv", "fc") or group.decoded:
            return False
        w = group.array()
        density = np.count_nonzero(w) / max(w.size, 1)
        depthwise = False
        if group.kind == "conv":
            groups = group.layers[0].node.attributes.get_int("group", 1)
            depthwise = groups > 1 and w.shape[1] == 1
            if self.options.conv_dense_density is not None:
                threshold = self.options.conv_dense_density
            else:
                threshold = min(
                    conv_dense_threshold(positions.get(str(layer.node.outputs[0].name)))
                    for layer in group.layers
                )
        elif self.options.fc_dense_density is not None:
            threshold = self.options.fc_dense_density
        else:
            many_rows = any(_many_rows(layer) for layer in group.layers)
            threshold = fc_dense_threshold(w.size, many_rows)
        if density < threshold and not depthwise:
            return False
        why = "depthwise" if depthwise else f"{100 * density:.0f}% non-zero"
        op = group.layers[0].node.op_type
        logger.info("%s: %s: decoded once, ORT's %s runs it", group.name, why, op)
        return True

    def ensures(self, model: ir.Model) -> None:
        for node in model.graph:
            if node.domain != DOMAIN:
                continue
            if node.inputs[header_input(node.op_type)] is None:
                raise AssertionError(f"{node.name}: compressed op lacks its header")


def conv_dense_threshold(positions: int | None) -> float:
    """The share of non-zero weights from which a Conv takes the decode form (ORT's own
    Conv), by the output positions of one image (docs/benchmarks.md, "Small images: the
    sparse convolution's per-Run costs, and the crossover by output size"). The sparse
    kernel's fixed costs per Run and per output channel weigh most on small images: at 1
    position (squeeze-and-excitation blocks) it never won, at 49-100 its crossover was
    15-22%. From 150 positions it was 18-40% on AVX-512 and about 35% on AVX2; 35% holds
    there, as below it the decode form would also cost the memory of an fp32 weight.
    Unknown sizes count as large."""
    if positions is None or positions >= 150:
        return 0.35
    return 0.0 if positions < 16 else 0.15


def fc_dense_threshold(weights: int, many_rows: bool) -> float:
    """The share of non-zero weights from which ORT's GEMM beats the sparse rows on a
    Gemm / MatMul weight of `weights` elements (docs/benchmarks.md, "Many-row FC panels,
    and sparse or dense FC by size"). ORT's small GEMMs cost little besides their
    arithmetic, large ones are bound by reading the weight: the crossover rises with the
    size, from about 10-15% at 384 x 384 to 70% at 4096 x 4096 for a row or a few. Where
    a Run has many rows of activations (the panel kernel) it rises less: about 20% at
    384 x 384, 40% at 4096 x 4096."""
    decades = math.log10(max(weights, 1) / (384 * 384))
    if many_rows:
        return min(max(0.2 + 0.1 * decades, 0.1), 0.45)
    return min(max(0.15 + 0.27 * decades, 0.1), 0.7)


def _many_rows(layer: Layer) -> bool:
    """Whether every Run gives the layer more than 8 rows of activations whatever the
    batch (the panel kernel's regime): MatMul X @ W with X of rank 3 or more whose middle
    dims hold 9+ rows or are symbolic (a sequence), or W @ X with 9+ or symbolic columns.
    A 2-D X @ W or a Gemm has as many rows as the batch: not known, taken as few."""
    node = layer.node
    if node.op_type != "MatMul":
        return False
    x = node.inputs[1 - layer.weight_side]
    shape = x.shape if x is not None else None
    if shape is None:
        return False
    dims = list(shape)
    if len(dims) < 2:  # a vector: one row
        return False
    per_run = dims[-1:] if layer.weight_side == 0 else dims[1:-1]
    static = [d for d in per_run if isinstance(d, int)]
    if len(static) < len(per_run):  # a symbolic sequence or image axis
        return True
    return bool(static) and math.prod(static) > 8


def _replace_stored(
    graph: ir.Graph,
    weight: StoredWeight,
    header: ir.Value,
    stream_ids: list[int],
    encoded: EncodedWeight,
    layer: str | None = None,
    transposed: bool = False,
) -> list[ir.Node]:
    """A CompressedConstant node that takes the place (and the name) of the initializer;
    its errors name `layer` (the reading node, for a compute layer), else the weight. Its
    output type is its codebook's: named by `dtype` when that is not float32. With
    `transposed`, the streams hold the 2-D weight transposed: it decodes that, and a
    Transpose node takes the initializer's place."""
    value = weight.weight
    name = str(value.name)
    shape = [int(d) for d in weight.array().shape]
    attributes = [
        ir.AttrInt64s("weight_shape", shape[::-1] if transposed else shape),
        ir.AttrInt64("num_entries", encoded.num_entries),
        ir.AttrInt64("index_bits", encoded.index_bits),
        ir.AttrInt64s("stream_ids", stream_ids),
        ir.AttrString("layer", layer or name),
    ]
    dtype = value.const_value.dtype if value.const_value is not None else ir.DataType.FLOAT
    if dtype != ir.DataType.FLOAT:
        attributes.append(ir.AttrInt64(DTYPE_ATTRIBUTE, dtype.value))
    node = ir.Node(
        DOMAIN,
        CONSTANT_OP,
        [header],
        attributes,
        num_outputs=1,
        name=f"{name}.decode",
        version=OPSET_VERSION,
    )
    nodes = [node]
    if transposed:
        decoded = node.outputs[0]
        decoded.name, decoded.type = f"{name}.stored", value.type
        decoded.shape = ir.Shape(shape[::-1])
        nodes.append(
            ir.Node("", "Transpose", [decoded], [ir.AttrInt64s("perm", [1, 0])], name=f"{name}.T")
        )
    output = nodes[-1].outputs[0]
    output.type, output.shape = value.type, value.shape
    value.replace_all_uses_with(output, replace_graph_outputs=True)
    graph.initializers.pop(name)
    output.name = name  # readers in subgraphs find it by name, as they found the initializer
    return nodes


def _stored_stats(weight: StoredWeight, enc: EncodedWeight) -> LayerStats:
    w = weight.array()
    op = "/".join(sorted(set(weight.readers)))
    return _stats(weight.kind, op, w.astype(np.float32), 8 * w.dtype.itemsize, enc)


def _layer_stats(group: WeightGroup, enc: EncodedWeight) -> LayerStats:
    stored = group.stored_matrix()  # float16 tables: 16 bits a weight
    op = group.layers[0].node.op_type
    stats = _stats(group.kind, op, stored, 8 * stored.dtype.itemsize, enc)
    return dataclasses.replace(stats, readers=len(group.layers))


def _stats(kind: str, op: str, w: np.ndarray, dtype_bits: int, enc: EncodedWeight) -> LayerStats:
    return LayerStats(
        kind=kind,
        op=op,
        weights=int(w.size),
        nonzeros=int(np.count_nonzero(w)),
        entries=enc.num_entries,
        stored=enc.num_codes,
        codebook_size=int(enc.codebook.size),
        index_bits=enc.index_bits,
        codes_bytes=len(enc.codes),
        gaps_bytes=len(enc.gaps),
        dtype_bits=dtype_bits,
    )
