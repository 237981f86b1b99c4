"""Paper-style figures of a compiled model (`compile --plot DIR`, `inspect --plot DIR`).

One PNG per kind of figure, one panel per layer, after Han et al. 2016:

- `weights.png`: the histogram of each layer's weights (before compression when the
  original is known, else the stored ones) with the chosen centroids marked (Fig. 4);
- `codes.png`: how often each codebook index is stored, with its Huffman code length (Fig. 5);
- `gaps.png`: the same for the relative indices (gaps; the last symbol is the escape);
- `layers.png`: density and bits per layer, before and after Huffman coding (Table 2).

matplotlib is an optional extra (`plot`); without it `require_matplotlib` says how to get it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dc_onnx.codecs import huffman, sparse_index
from dc_onnx.codecs.schema import split_codebook
from dc_onnx.errors import InputError
from dc_onnx.tools.inspect import LayerInfo

__all__ = ["FIGURES", "plot_layers", "require_matplotlib"]

FIGURES = ("weights.png", "codes.png", "gaps.png", "layers.png")
_BAR, _LINE, _MARK = "#4C72B0", "#C44E52", "#DD8452"


def require_matplotlib() -> Any:
    """matplotlib.pyplot on a file-only backend, or an InputError saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError(
            "--plot needs matplotlib: pip install 'dc-onnx[plot]' (or pip install matplotlib)"
        ) from None
    return plt


def _grid(plt: Any, n: int, title: str) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, flat[:n]


def _with_code_lengths(ax: Any, counts: np.ndarray, lengths: np.ndarray, xlabel: str) -> None:
    """Bars: how often each symbol occurs; line: its Huffman code length (right axis)."""
    symbols = np.arange(counts.size)
    # One filled outline rather than a patch per symbol: 256 bars draw slowly.
    ax.stairs(counts, np.arange(counts.size + 1) - 0.5, fill=True, color=_BAR, label="count")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    right = ax.twinx()
    used = lengths > 0
    right.step(symbols[used], lengths[used], where="mid", color=_LINE, label="code bits")
    right.set_ylabel("Huffman code length (bits)", color=_LINE)
    right.set_ylim(0, max(int(lengths.max(initial=1)) + 1, 2))
    last = int(np.flatnonzero(counts).max(initial=0))  # 8-bit gaps rarely use all 256
    ax.set_xlim(-0.5, last + 1.5)


def _weights(plt: Any, layers: Sequence[LayerInfo], originals: Mapping[str, np.ndarray]) -> Any:
    before = all(layer.name in originals for layer in layers)
    fig, axes = _grid(plt, len(layers), "weight distribution " + (
        "before compression, with the shared weights (centroids)" if before
        else "as stored, with the shared weights (centroids)"))  # fmt: skip
    for ax, layer in zip(axes, layers, strict=True):
        assert layer.matrix is not None and layer.codebook is not None
        values = originals.get(layer.name, layer.matrix).ravel()
        if layer.row_scales is not None:  # the shared values are normalised: so are these
            rows = layer.row_scales.size
            values = (layer.matrix.reshape(rows, -1) / layer.row_scales[:, None]).ravel()
        ax.hist(values[values != 0], bins=120, color=_BAR, histtype="stepfilled")
        ax.set_yscale("log")
        centroids = layer.codebook[1:]
        ax.vlines(centroids, 0, 1, transform=ax.get_xaxis_transform(), colors=_MARK,
                  linewidth=0.8, alpha=0.8, label=f"{centroids.size} centroids")  # fmt: skip
        ax.set_title(f"{layer.name} ({layer.op})")
        ax.set_xlabel("weight value")
        ax.legend(loc="upper right", fontsize="small")
    return fig


def _codes_and_gaps(plt: Any, layers: Sequence[LayerInfo]) -> tuple[Any, Any]:
    codes_fig, code_axes = _grid(plt, len(layers), "codebook indices: frequency and code length")
    gaps_fig, gap_axes = _grid(plt, len(layers), "relative indices: frequency and code length")
    for layer, code_ax, gap_ax in zip(layers, code_axes, gap_axes, strict=True):
        assert layer.matrix is not None and layer.codebook is not None
        if layer.codes is not None:  # row-scaled: the codes come from the stream itself
            codebook, codes = layer.codebook, layer.codes
        else:
            codebook, codes = split_codebook(layer.matrix)
        if layer.index_bits == 0:  # the dense form: a code per position, zeros too
            code_ax.set_title(layer.name)
            gap_ax.set_title(layer.name)
            gap_ax.text(0.5, 0.5, "dense form:\nno relative indices", ha="center", va="center")
            symbols = codes.ravel()
            counts = np.bincount(symbols.astype(np.int64), minlength=codebook.size)
            lengths = huffman.code_lengths(symbols, codebook.size)
            _with_code_lengths(code_ax, counts, lengths, "codebook index (0 = zero)")
            continue
        gaps, stored = sparse_index.to_entries(codes.ravel(), layer.index_bits)
        for ax, symbols, alphabet, what in (
            (code_ax, stored, codebook.size, "codebook index"),
            (gap_ax, gaps, 1 << layer.index_bits, f"gap ({layer.index_bits}-bit, last = escape)"),
        ):
            counts = np.bincount(symbols.astype(np.int64), minlength=alphabet)
            _with_code_lengths(ax, counts, huffman.code_lengths(symbols, alphabet), what)
            ax.set_title(layer.name)
    return codes_fig, gaps_fig


def _layers(plt: Any, layers: Sequence[LayerInfo]) -> Any:
    fig, (dense_ax, bits_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    names = [layer.name for layer in layers]
    x = np.arange(len(layers))
    dense_ax.bar(x, [100 * layer.density for layer in layers], color=_BAR)
    dense_ax.set_ylabel("weights kept (%)")
    dense_ax.set_title("density per layer")
    stored = [max(layer.nonzeros, 1) for layer in layers]
    bars: dict[str, list[float]] = {
        "weight bits": [layer.weight_bits for layer in layers],
        "weight bits, Huffman": [
            8 * x.codes_bytes / n for x, n in zip(layers, stored, strict=True)
        ],
        "index bits": [layer.index_bits for layer in layers],
        "index bits, Huffman": [8 * x.gaps_bytes / n for x, n in zip(layers, stored, strict=True)],
    }
    width = 0.2
    for i, (label, values) in enumerate(bars.items()):
        bits_ax.bar(x + (i - 1.5) * width, values, width, label=label)
    bits_ax.set_ylabel("bits per stored weight")
    bits_ax.set_title("bits per layer (Huffman: per non-zero, escapes included)")
    bits_ax.set_ylim(0, 1.4 * max(max(v) for v in bars.values()))  # room for the legend
    bits_ax.legend(fontsize="small", ncol=2, loc="upper center")
    for ax in (dense_ax, bits_ax):
        ax.set_xticks(x, names, rotation=30, ha="right")
    return fig


def plot_layers(
    layers: Sequence[LayerInfo], out_dir: str | Path,
    originals: Mapping[str, np.ndarray] | None = None,
) -> list[Path]:  # fmt: skip
    """Write the FIGURES for the decoded `layers` (from `inspect`) into `out_dir`.

    `originals` maps a layer name to its weights before compression, when known.
    """
    plt = require_matplotlib()
    layers = [layer for layer in layers if layer.matrix is not None]
    if not layers:
        raise InputError("no decoded layer to plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    codes_fig, gaps_fig = _codes_and_gaps(plt, layers)
    figures = [_weights(plt, layers, originals or {}), codes_fig, gaps_fig, _layers(plt, layers)]
    paths = []
    for name, fig in zip(FIGURES, figures, strict=True):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    return paths
