"""How many bits the index streams of a compiled model need, against what they cost now.

    python models/stream_entropy.py MODEL.dc.onnx [MODEL.dc.onnx ...] [--original MODEL.onnx ...]

Measurement for issue 11 ("measure first"): the stream format is left as it is. For every
compressed layer the code matrix is decoded (the reference decoder) and both symbol streams
are measured in bits per stored (non-zero) weight:

- the gap stream (relative indices, escapes included, `docs/format.md`) re-derived for four
  scans of the stored matrix with the same escape rule: row-major (today's), column-major,
  and each of them over the matrix with its empty rows and columns removed ("compact"; the
  two bitmaps that say which were removed are charged, one bit per row and per column);
- the codebook-index stream in today's (row-major) order.

Each stream is costed four ways, each with and without a context (a separate table or
model per context value):

- `H`: the empirical (plug-in) entropy, sum over contexts of n_c * H(X | C = c). With many
  contexts and few symbols each it is biased low: it ignores the cost of the tables;
- `huffman`: a length-limited canonical Huffman code per context (the encoder's own
  `code_lengths`), plus one byte per alphabet symbol per table (today's code-length table);
- `rans`: a static rANS/tANS-style coder with frequencies normalised to 2**12 (the size of
  the Huffman decoder's table), charged -log2(f/4096) per symbol, plus per table one bit
  per alphabet symbol (used or not) and 12 bits per used symbol, plus a 32-bit final state;
- `adaptive`: an adaptive coder with Krichevsky-Trofimov counts per context and no tables,
  the honest figure where a context has too many values for `H` to mean much.

Gap contexts (known to a decoder at that point of the stream): `prev`, the previous gap's
bit length (escape and stream start apart); `pos`, where the cursor is along the scanned
line, in eighths; `empty`, whether the cursor sits on an all-zero cross index (an input
column with no weight in the row-major scan); `prev+pos`. Code contexts: `row` (output
feature), `col` (input feature), `prev` (previous code).

Prints Markdown tables: gaps, codes, and per model what each coding change would save
(bytes of the coded streams plus their tables, and the model's ratio with --original).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from dc_onnx.codecs import decode_codes, huffman, sparse_index
from dc_onnx.codecs.schema import DOMAIN
from dc_onnx.tools.decompile import read_encoded_weight

RANS_SCALE_BITS = 12
RANS_STATE_BITS = 32
POS_BUCKETS = 8


# ---- coders: total bits of a symbol stream, optionally split by a context stream ----


def _groups(symbols: np.ndarray, contexts: np.ndarray | None) -> list[np.ndarray]:
    symbols = np.asarray(symbols, dtype=np.int64)
    if contexts is None:
        return [symbols] if symbols.size else []
    order = np.argsort(contexts, kind="stable")
    ctx = np.asarray(contexts)[order]
    cuts = np.flatnonzero(np.diff(ctx)) + 1
    return np.split(symbols[order], cuts) if symbols.size else []


def entropy_bits(symbols: np.ndarray, contexts: np.ndarray | None = None) -> float:
    """Plug-in entropy of the stream in bits (n * H(X), or sum of n_c * H(X | c))."""
    total = 0.0
    for group in _groups(symbols, contexts):
        counts = np.bincount(group)
        counts = counts[counts > 0].astype(np.float64)
        total += float(-(counts * np.log2(counts / counts.sum())).sum())
    return total


def huffman_bits(symbols: np.ndarray, alphabet: int, contexts: np.ndarray | None = None) -> float:
    """Bits of a Huffman code per context (the encoder's code lengths), tables included."""
    total = 0.0
    for group in _groups(symbols, contexts):
        lengths = huffman.code_lengths(group, alphabet).astype(np.int64)
        total += float(lengths[group].sum()) + 8 * alphabet
    return total


def rans_frequencies(counts: np.ndarray) -> np.ndarray:
    """Counts normalised to sum 2**RANS_SCALE_BITS, every used symbol at least 1."""
    scale = 1 << RANS_SCALE_BITS
    used = counts > 0
    freq = np.where(used, np.maximum(1, np.floor(counts * scale / counts.sum())), 0).astype(
        np.int64
    )
    # Hand the rounding remainder out (or take it back) where it costs the least.
    while (short := scale - int(freq.sum())) != 0:
        step = 1 if short > 0 else -1
        gain = counts * (np.log2(np.maximum(freq + step, 1)) - np.log2(np.maximum(freq, 1)))
        gain[~used | (freq + step < 1)] = -np.inf
        freq[int(np.argmax(gain))] += step
    return freq


def rans_bits(symbols: np.ndarray, alphabet: int, contexts: np.ndarray | None = None) -> float:
    """Bits of a static rANS coder per context, its tables and final state included."""
    total = float(RANS_STATE_BITS)
    for group in _groups(symbols, contexts):
        counts = np.bincount(group, minlength=alphabet).astype(np.float64)
        freq = rans_frequencies(counts)
        used = counts > 0
        data = -(counts[used] * np.log2(freq[used] / (1 << RANS_SCALE_BITS))).sum()
        total += float(data) + alphabet + RANS_SCALE_BITS * int(used.sum())
    return total


def _earlier(keys: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements have the same key."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(sorted_keys)) + 1])
    sizes = np.diff(np.concatenate([starts, [keys.size]]))
    rank = np.empty(keys.size, dtype=np.int64)
    rank[order] = np.arange(keys.size) - np.repeat(starts, sizes)
    return rank


def adaptive_bits(symbols: np.ndarray, alphabet: int, contexts: np.ndarray | None = None) -> float:
    """Bits of an adaptive coder (Krichevsky-Trofimov counts per context, no tables): an
    honest cost for contexts too many or too sparse for the plug-in entropy."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size == 0:
        return 0.0
    ctx = np.zeros_like(symbols) if contexts is None else np.asarray(contexts, dtype=np.int64)
    seen_pair = _earlier(ctx * alphabet + symbols)
    seen_ctx = _earlier(ctx)
    return float(-np.log2((seen_pair + 0.5) / (seen_ctx + alphabet / 2)).sum())


def mask_bits_given_counts(mask: np.ndarray, axis: int) -> float:
    """log2 of the number of masks with the same count per line (lines along `axis`), plus
    the counts themselves: what positions cost if only per-line densities carry structure."""
    length = mask.shape[axis]
    counts = mask.sum(axis=axis).astype(np.float64)
    lg = np.vectorize(math.lgamma)
    log_binom = lg(length + 1.0) - lg(counts + 1) - lg(length - counts + 1)
    return float(log_binom.sum() / math.log(2) + counts.size * math.log2(length + 1))


CODERS: dict[str, Callable[[np.ndarray, int, np.ndarray | None], float]] = {
    "H": lambda s, _a, c: entropy_bits(s, c),
    "huffman": huffman_bits,
    "rans": rans_bits,
    "adaptive": adaptive_bits,
}


# ---- scans: the gap stream of one ordering of the stored matrix ----


@dataclasses.dataclass(frozen=True)
class Scan:
    """The entries of a code matrix walked in one order, with what a decoder knows."""

    name: str
    gaps: np.ndarray  # uint8, escapes included
    codes: np.ndarray  # uint8, one per stored weight, in scan order
    cursor: np.ndarray  # int64, the flat scan position before each gap is read
    line: int  # length of a scanned line (cols of the scanned matrix)
    empty_cross: np.ndarray  # bool [line]: that cross index holds no weight at all
    side_bits: int  # what a decoder must be told besides the streams
    kept_rows: np.ndarray  # rows of the original matrix the scanned lines index
    kept_cols: np.ndarray
    transposed: bool
    index_bits: int


def scan(codes2d: np.ndarray, index_bits: int, order: str, compact: bool) -> Scan:
    """Gaps of `codes2d` walked row-major (`order="row"`) or column-major (`"col"`),
    over the whole matrix or (compact) without its empty rows and columns."""
    rows, cols = codes2d.shape
    kept_rows, kept_cols = np.arange(rows), np.arange(cols)
    side = 0
    if compact:
        kept_rows = np.flatnonzero(codes2d.any(axis=1))
        kept_cols = np.flatnonzero(codes2d.any(axis=0))
        side = rows + cols
    matrix = codes2d[np.ix_(kept_rows, kept_cols)]
    if order == "col":
        matrix = matrix.T
    elif order != "row":
        raise ValueError(f"unknown scan order {order!r}")
    gaps, codes = sparse_index.to_entries(matrix, index_bits)
    escape = sparse_index.escape_symbol(index_bits)
    ends = np.cumsum(np.where(gaps != escape, gaps.astype(np.int64) + 1, escape))
    cursor = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    name = order + (" compact" if compact else "")
    return Scan(
        name, gaps, codes, cursor, matrix.shape[1], np.asarray(~matrix.any(axis=0)), side,
        kept_rows, kept_cols, order == "col", index_bits,
    )  # fmt: skip


def unscan(s: Scan, shape: tuple[int, int]) -> np.ndarray:
    """The original code matrix rebuilt from a scan's streams (what its decoder would do)."""
    lines = s.kept_cols.size if s.transposed else s.kept_rows.size
    flat = sparse_index.from_entries(s.gaps, s.codes, lines * s.line, s.index_bits)
    matrix = flat.reshape(lines, s.line)
    out = np.zeros(shape, dtype=np.uint8)
    out[np.ix_(s.kept_rows, s.kept_cols)] = matrix.T if s.transposed else matrix
    return out


def _bit_length(values: np.ndarray) -> np.ndarray:
    return np.where(values > 0, np.floor(np.log2(np.maximum(values, 1))) + 1, 0).astype(np.int64)


def gap_contexts(s: Scan) -> dict[str, np.ndarray | None]:
    """Context streams for a scan's gaps (see the module docstring)."""
    escape = sparse_index.escape_symbol(s.index_bits)
    prev_bucket = np.where(s.gaps == escape, 10, _bit_length(s.gaps.astype(np.int64)))
    prev = np.concatenate([[11], prev_bucket[:-1]]).astype(np.int64)
    along = s.cursor % s.line
    pos = along * POS_BUCKETS // s.line
    return {
        "none": None,
        "prev": prev,
        "pos": pos,
        "empty": s.empty_cross[along].astype(np.int64),
        "prev+pos": prev * POS_BUCKETS + pos,
    }


def code_contexts(codes2d: np.ndarray, k: int) -> tuple[np.ndarray, dict[str, np.ndarray | None]]:
    """The code stream in today's order and its contexts."""
    rows, cols = np.nonzero(codes2d)
    codes = codes2d[rows, cols].astype(np.int64)
    prev = np.concatenate([[k], codes[:-1]])
    return codes, {"none": None, "row": rows, "col": cols, "prev": prev}


# ---- per layer ----


@dataclasses.dataclass
class LayerStreams:
    model: str
    layer: str
    shape: tuple[int, int]
    nonzeros: int
    index_bits: int
    codebook: int
    gaps_bytes: int  # as stored today
    codes_bytes: int
    lengths_bytes: int
    gap_costs: dict[tuple[str, str, str], float]  # (scan, context, coder) -> bits
    code_costs: dict[tuple[str, str], float]  # (context, coder) -> bits
    empty_rows: int
    empty_cols: int
    mask_bits: dict[str, float]  # "row"/"col": mask_bits_given_counts along that line

    def per_nz(self, bits: float) -> float:
        return bits / max(self.nonzeros, 1)

    def random_mask_bits(self) -> float:
        """log2 C(n, nnz): the positions' cost if every mask of this density were alike."""
        n, k = self.shape[0] * self.shape[1], self.nonzeros
        return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)

    def best_gap(self, coder: str, scans: tuple[str, ...] | None = None,
                 contexts: tuple[str, ...] | None = None) -> tuple[float, str]:  # fmt: skip
        options = {
            f"{s}, {c}": v
            for (s, c, k), v in self.gap_costs.items()
            if k == coder and (scans is None or s in scans) and (contexts is None or c in contexts)
        }
        best = min(options, key=options.__getitem__)
        return options[best], best

    def best_code(self, coder: str, contexts: tuple[str, ...] | None = None) -> tuple[float, str]:
        options = {
            c: v
            for (c, k), v in self.code_costs.items()
            if k == coder and (contexts is None or c in contexts)
        }
        best = min(options, key=options.__getitem__)
        return options[best], best


def measure_layer(model: str, node: onnx.NodeProto, tensors: dict) -> LayerStreams:
    encoded, shape = read_encoded_weight(node, tensors)
    codes2d = decode_codes(encoded, shape[0] * shape[1]).reshape(shape)
    b, k = encoded.index_bits, encoded.codebook.size
    gap_costs: dict[tuple[str, str, str], float] = {}
    for order in ("row", "col"):
        for compact in (False, True):
            s = scan(codes2d, b, order, compact)
            for ctx_name, ctx in gap_contexts(s).items():
                if compact and ctx_name == "empty":
                    continue  # nothing is empty after compaction
                for coder, cost in CODERS.items():
                    gap_costs[(s.name, ctx_name, coder)] = cost(s.gaps, 1 << b, ctx) + s.side_bits
    codes, contexts = code_contexts(codes2d, k)
    code_costs = {
        (ctx_name, coder): cost(codes, k, ctx)
        for ctx_name, ctx in contexts.items()
        for coder, cost in CODERS.items()
    }
    layer = next((a.s.decode() for a in node.attribute if a.name == "layer"), node.name)
    mask = codes2d != 0
    return LayerStreams(
        model, layer, shape, int(codes.size), b, k, len(encoded.gaps), len(encoded.codes),
        int(encoded.code_lengths.size), gap_costs, code_costs,
        int((~mask.any(axis=1)).sum()), int((~mask.any(axis=0)).sum()),
        {"row": mask_bits_given_counts(mask, 1), "col": mask_bits_given_counts(mask, 0)},
    )  # fmt: skip


def measure_model(path: Path) -> list[LayerStreams]:
    """Every compressed layer of a compiled model that has a gap stream (layers stored in
    the dense form, index bits 0, have none and are left out)."""
    model = onnx.load(str(path), load_external_data=True)
    tensors = {t.name: t for t in model.graph.initializer}
    name = path.name.removesuffix(".onnx").removesuffix(".dc")
    sparse = [
        n
        for n in model.graph.node
        if n.domain == DOMAIN and any(a.name == "index_bits" and a.i > 0 for a in n.attribute)
    ]
    return [measure_layer(name, n, tensors) for n in sparse]


# ---- what each coding change would save ----

# name -> (gap cost, code cost) in bits for one layer; each layer keeps today's coding
# where the change would not pay.
CHANGES: dict[str, Callable[[LayerStreams], tuple[float, float]]] = {
    "scan order per layer (Huffman)": lambda s: (
        s.best_gap("huffman", scans=("row", "col"), contexts=("none",))[0],
        s.code_costs[("none", "huffman")],
    ),
    "empty rows/columns removed (Huffman)": lambda s: (
        s.best_gap("huffman", scans=("row", "row compact"), contexts=("none",))[0],
        s.code_costs[("none", "huffman")],
    ),
    "context tables, today's scan (Huffman)": lambda s: (
        s.best_gap("huffman", scans=("row",))[0],
        s.best_code("huffman")[0],
    ),
    "all of the above (Huffman)": lambda s: (s.best_gap("huffman")[0], s.best_code("huffman")[0]),
    "rANS, order 0, today's scan": lambda s: (
        s.gap_costs[("row", "none", "rans")],
        s.code_costs[("none", "rans")],
    ),
    "rANS, best scan and contexts": lambda s: (s.best_gap("rans")[0], s.best_code("rans")[0]),
}


def change_rows(layers: list[LayerStreams], original: int | None, compressed: int) -> list[str]:
    now = sum(s.gaps_bytes + s.codes_bytes + s.lengths_bytes for s in layers)
    rows = []
    ratio = f" {original / compressed:.1f}x |" if original else ""
    rows.append(f"| today (Huffman, row-major) | {now:,} | {compressed:,} |{ratio}")
    for name, cost in CHANGES.items():
        new = 0.0
        for s in layers:
            gap, code = cost(s)
            today = s.gaps_bytes + s.codes_bytes + s.lengths_bytes
            new += min(today, math.ceil(gap / 8) + math.ceil(code / 8))
        total = compressed - now + round(new)
        ratio = f" {original / total:.1f}x |" if original else ""
        rows.append(f"| {name} | {round(new):,} | {total:,} |{ratio}")
    return rows


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}:\n")
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


GAP_ENTROPIES = [
    ("H row", "row", "none"),
    ("H col", "col", "none"),
    ("H row \\| prev", "row", "prev"),
    ("H row \\| pos", "row", "pos"),
    ("H row \\| empty", "row", "empty"),
    ("H row \\| prev+pos", "row", "prev+pos"),
    ("H row compact", "row compact", "none"),
    ("H col compact", "col compact", "none"),
]
CODE_COSTS = [
    ("H", "none", "H"),
    ("H \\| row", "row", "H"),
    ("H \\| prev", "prev", "H"),
    ("A", "none", "adaptive"),
    ("A \\| row", "row", "adaptive"),
    ("A \\| col", "col", "adaptive"),
    ("A \\| prev", "prev", "adaptive"),
    ("rANS order 0", "none", "rans"),
]


def print_tables(layers: list[LayerStreams]) -> None:
    def bits(s: LayerStreams, value: float) -> str:
        return f"{s.per_nz(value):.2f}"

    gap_rows, bound_rows, code_rows = [], [], []
    for s in layers:
        density = s.nonzeros / (s.shape[0] * s.shape[1])
        gap_rows.append(
            [s.model, s.layer, f"{s.shape[0]}x{s.shape[1]}", f"{density:.1%}", str(s.index_bits)]
            + [bits(s, 8 * s.gaps_bytes)]
            + [bits(s, s.gap_costs[(scan_, ctx, "H")]) for _, scan_, ctx in GAP_ENTROPIES]
        )
        rans, rans_at = s.best_gap("rans")
        adaptive, adaptive_at = s.best_gap("adaptive")
        bound_rows.append(
            [
                s.model,
                s.layer,
                f"{s.empty_rows}/{s.shape[0]}",
                f"{s.empty_cols}/{s.shape[1]}",
                bits(s, s.random_mask_bits()),
                bits(s, s.mask_bits["row"]),
                bits(s, s.mask_bits["col"]),
                bits(s, s.gap_costs[("row", "none", "rans")]),
                bits(s, rans),
                rans_at,
                bits(s, adaptive),
                adaptive_at,
            ]
        )
        best, best_at = s.best_code("rans")
        code_rows.append(
            [s.model, s.layer, str(s.codebook), bits(s, 8 * s.codes_bytes)]
            + [bits(s, s.code_costs[(ctx, coder)]) for _, ctx, coder in CODE_COSTS]
            + [bits(s, best), best_at]
        )
    _table(
        "Gap stream (relative indices), bits per stored weight: plug-in entropy H by scan and"
        " context (`row` is today's order; compact scans include the row and column bitmaps)",
        ["model", "layer", "matrix", "density", "b", "Huffman now"]
        + [h for h, *_ in GAP_ENTROPIES],
        gap_rows,
    )
    _table(
        "Gap stream: bounds and coders, bits per stored weight (random mask: log2 C(n, nnz);"
        " mask \\| counts: positions uniform given each line's count, the counts included)",
        [
            "model",
            "layer",
            "empty rows",
            "empty cols",
            "random mask",
            "mask \\| row counts",
            "mask \\| col counts",
            "rANS row",
            "rANS best",
            "scan, context",
            "adaptive best",
            "scan, context",
        ],
        bound_rows,
    )
    _table(
        "Codebook-index stream (today's order), bits per stored weight: plug-in entropy H,"
        " adaptive coder A (honest with many contexts), static rANS",
        ["model", "layer", "k", "Huffman now"]
        + [h for h, *_ in CODE_COSTS]
        + ["rANS best", "context"],
        code_rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="compiled models (.dc.onnx)")
    parser.add_argument(
        "--original", type=Path, action="append", default=[],
        help="the uncompiled model of each compiled one, in the same order (for ratios)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.original and len(args.original) != len(args.models):
        parser.error("give one --original per model, or none")
    per_model = [(path, measure_model(path)) for path in args.models]
    print_tables([s for _, model in per_model for s in model])
    for i, (path, model) in enumerate(per_model):
        files = [path, path.with_suffix(".dcw")]
        compressed = sum(f.stat().st_size for f in files if f.exists())
        original = args.original[i].stat().st_size if args.original else None
        print(f"\n{path.name}: coded streams (gaps + codes + their tables) and whole model:\n")
        print("| coding | stream bytes | model bytes |" + (" ratio |" if original else ""))
        print("|---|---|---|" + ("---|" if original else ""))
        print("\n".join(change_rows(model, original, compressed)))


if __name__ == "__main__":
    main()
