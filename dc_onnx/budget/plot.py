"""Sensitivity curves as a PNG (matplotlib, from the optional `plot` extra)."""

from __future__ import annotations

import math
import os

from dc_onnx.budget.candidates import BITS, SPARSITIES
from dc_onnx.budget.sensitivity import Analysis
from dc_onnx.errors import DcOnnxError

# Below this the curves would sit on the axis of a log plot.
_FLOOR = 1e-6


def plot_sensitivity(analysis: Analysis, path: str | os.PathLike[str]) -> None:
    """Error against sparsity and against k-means bits, one line per layer."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DcOnnxError(
            "--plot needs matplotlib: pip install 'dc-onnx[plot]' (or pip install matplotlib)"
        ) from None
    fig, (ax_s, ax_b) = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    for layer in analysis.layers:
        label = layer.name if len(layer.name) <= 40 else layer.name[:37] + "..."
        # The whole curve as a line (predicted between measured points unless --exact), a
        # dot on each measured point; sparsity 0 has no point on a log scale.
        for ax, curve, knobs, scale in (
            (ax_s, layer.sparsity, SPARSITIES[1:], 100.0),
            (ax_b, layer.bits, BITS, 1.0),
        ):
            xs = [k for k in knobs if math.isfinite(curve.error(k))]
            (line,) = ax.plot(
                [scale * k for k in xs], [max(curve.error(k), _FLOOR) for k in xs],
                label=label, linewidth=1,
            )  # fmt: skip
            dots = [k for k in xs if k in curve.measured]
            ax.plot(
                [scale * k for k in dots], [max(curve.measured[k], _FLOOR) for k in dots],
                "o", markersize=3, color=line.get_color(),
            )  # fmt: skip
    ax_s.set(xlabel="sparsity (% of weights pruned)", title="pruning alone")
    ax_b.set(xlabel="k-means bits (2^bits - 1 shared values + zero)", title="quantization alone")
    ax_b.invert_xaxis()
    for ax in (ax_s, ax_b):
        ax.set_yscale("log")
        ax.set_ylabel("relative L2 output error (worst output)")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax_s.get_legend_handles_labels()
    if len(analysis.layers) <= 24:
        ax_s.legend(handles, labels, fontsize="small")
    fig.suptitle(
        f"Per-layer sensitivity ({analysis.calibration.samples} calibration samples, "
        f"{analysis.calibration.source} inputs; dots measured"
        f"{'' if analysis.exact else ', lines between them predicted'})"
    )
    fig.savefig(os.fspath(path), dpi=120)
    plt.close(fig)
