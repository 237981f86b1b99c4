"""lower: replace every compressible layer by one `ai.dc_onnx` op reading encoded streams.

Each weight becomes a codebook (its distinct values, 0 first) and two Huffman-coded
streams (codebook indices and relative indices, docs/format.md). The streams and a shared
header are ordinary uint8/float32 initializers here; `dc_onnx.io.save_compiled` moves them
into the side file. Nodes other than the replaced layers are left untouched.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from dc_onnx.codecs import EncodedWeight, encode_weight
from dc_onnx.codecs.container import Stream, StreamKind, layout
from dc_onnx.codecs.schema import (
    BIAS_INPUT,
    COMPRESSED_OP,
    DOMAIN,
    HEADER_NAME,
    KEPT_ATTRIBUTES,
    OPSET_VERSION,
    STREAM_KINDS,
    CodebookOverflowError,
    split_codebook,
)
from dc_onnx.errors import CompileError
from dc_onnx.layers import Layer, WeightGroup, add_initializer, find_weight_groups
from dc_onnx.options import LowerOptions
from dc_onnx.pipeline import CompilerPass

__all__ = ["DOMAIN", "LayerStats", "LowerOptions", "LowerPass", "LowerStats", "encode_group"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """What lowering one weight produced (the report's per-layer row is computed from it)."""

    kind: str  # conv or fc
    op: str  # the dense op type
    weights: int
    nonzeros: int
    entries: int  # relative indices, escapes included
    stored: int  # codes stored (non-zeros plus escape fillers)
    codebook_size: int
    index_bits: int
    codes_bytes: int
    gaps_bytes: int


@dataclasses.dataclass(frozen=True)
class LowerStats:
    layers: dict[str, LayerStats]


def encode_group(group: WeightGroup, index_bits: int) -> EncodedWeight:
    """Codebook and streams of one weight, which must fit a codebook (schema.MAX_CODEBOOK)."""
    stored = np.ascontiguousarray(group.stored_matrix())
    try:
        codebook, codes = split_codebook(stored)
    except CodebookOverflowError as e:
        raise CompileError(f"layer '{group.name}' has {e}") from None
    return encode_weight(codes, codebook, index_bits)


def _stream_arrays(encoded: EncodedWeight) -> list[np.ndarray]:
    return [
        encoded.codebook,
        np.frombuffer(encoded.codes, dtype=np.uint8).copy(),
        np.frombuffer(encoded.gaps, dtype=np.uint8).copy(),
        encoded.code_lengths,
    ]


def _stream(array: np.ndarray, k: int, encoded: EncodedWeight) -> Stream:
    """A TOC stream; `count` is symbols for the Huffman streams, elements otherwise."""
    kind = STREAM_KINDS[k]
    count = {StreamKind.CODES: encoded.num_codes, StreamKind.GAPS: encoded.num_entries}
    return Stream(kind, array.tobytes(), count.get(kind, int(array.size)))


def _compressed_node(
    layer: Layer,
    header: ir.Value,
    streams: list[ir.Value],
    stream_ids: list[int],
    weight_shape: tuple[int, ...],
    encoded: EncodedWeight,
) -> ir.Node:
    node = layer.node
    op = node.op_type
    inputs: list[ir.Value | None] = [node.inputs[1 - layer.weight_side], header, *streams]
    if op in ("Gemm", "Conv") and len(node.inputs) > 2 and node.inputs[2] is not None:
        inputs.append(node.inputs[2])
    attributes = [node.attributes[a] for a in KEPT_ATTRIBUTES[op] if a in node.attributes]
    attributes += [
        ir.AttrInt64s("weight_shape", list(weight_shape)),
        ir.AttrInt64("num_entries", encoded.num_entries),
        ir.AttrInt64("index_bits", encoded.index_bits),
        ir.AttrInt64s("stream_ids", stream_ids),
        ir.AttrString("layer", layer.name),
    ]
    if op == "MatMul":
        attributes.append(ir.AttrInt64("weight_side", layer.weight_side))
    return ir.Node(
        DOMAIN,
        COMPRESSED_OP[op],
        inputs,
        attributes,
        num_outputs=1,
        name=node.name,
        version=OPSET_VERSION,
    )


class LowerPass(CompilerPass):
    name = "lower"

    def __init__(self, options: LowerOptions) -> None:
        super().__init__()
        self.options = options

    def requires(self, model: ir.Model) -> None:
        if HEADER_NAME in model.graph.initializers:
            raise CompileError("the model is already compiled (it has a dc-onnx header)")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        groups = find_weight_groups(graph)
        if not groups:
            self.stats = LowerStats({})
            return ir.passes.PassResult(model, False)
        encoded = []
        for i, group in enumerate(groups, 1):
            logger.info("encode %d/%d %s", i, len(groups), group.name)
            encoded.append(encode_group(group, self.options.index_bits(group.kind)))
        # Codebooks first in the side file so they stay 4-byte aligned (docs/format.md).
        order = [(g, kind) for kind in range(4) for g in range(len(groups))]
        stream_ids = {key: n for n, key in enumerate(order)}
        arrays = [_stream_arrays(e) for e in encoded]
        header_bytes, _ = layout([_stream(arrays[g][k], k, encoded[g]) for g, k in order])
        header = add_initializer(graph, HEADER_NAME, np.frombuffer(header_bytes, np.uint8).copy())
        layers: dict[str, LayerStats] = {}
        for g, (group, enc) in enumerate(zip(groups, encoded, strict=True)):
            base = str(group.weight.name)
            streams = [
                add_initializer(graph, f"{base}.{kind.name.lower()}", array)
                for kind, array in zip(STREAM_KINDS, arrays[g], strict=True)
            ]
            ids = [stream_ids[(g, k)] for k in range(4)]
            shape = group.array().shape if group.kind == "conv" else group.stored_matrix().shape
            for layer in group.layers:
                new = _compressed_node(layer, header, streams, ids, shape, enc)
                ir.convenience.replace_nodes_and_values(
                    graph, layer.node, [layer.node], [new], layer.node.outputs, new.outputs
                )
            graph.initializers.pop(base)
            layers[group.name] = _layer_stats(group, enc)
        graph.opset_imports[DOMAIN] = OPSET_VERSION
        self.stats = LowerStats(layers)
        return ir.passes.PassResult(model, True)

    def ensures(self, model: ir.Model) -> None:
        for node in model.graph:
            if node.domain == DOMAIN and len(node.inputs) < BIAS_INPUT:
                raise AssertionError(f"{node.name}: compressed op lacks its stream inputs")


def _layer_stats(group: WeightGroup, enc: EncodedWeight) -> LayerStats:
    stored = group.stored_matrix()
    return LayerStats(
        kind=group.kind,
        op=group.layers[0].node.op_type,
        weights=int(stored.size),
        nonzeros=int(np.count_nonzero(stored)),
        entries=enc.num_entries,
        stored=enc.num_codes,
        codebook_size=int(enc.codebook.size),
        index_bits=enc.index_bits,
        codes_bytes=len(enc.codes),
        gaps_bytes=len(enc.gaps),
    )
