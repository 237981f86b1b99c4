"""Would input-channel scales (AWQ-style) bring 8-bit weight sharing within 1%? A simulation.

A layer y = W x whose input channels differ in size weighs its weights' errors unevenly:
an error on a column multiplying a large input counts more. Scaling each column by
s_c = (RMS of input channel c)^alpha before sharing the values, and dividing the shared
values by it afterwards (in a compiled model: a Mul by 1/s on the layer's input), gives
those columns finer steps. This script tries alpha in 0, 0.25, ..., 1 on every Conv /
Gemm / MatMul weight of a zoo model that has input statistics (the compiler's own H,
`dc_onnx.budget.activations`), with 255 shared values (8-bit codes, no pruning, mse
k-means: `models/representations.py`'s `tensor`), keeps each layer's best alpha by its
output error through H, then runs the whole model with every such weight replaced:

    python models/column_scales.py [--only ppocr-v4-rec,ppocr-v4-det] [--cache DIR]
    python models/column_scales.py --only minilm-l3-fp32 --min-rows-per-column 0

Per layer: its shape, the spread of its input channels' RMS (largest / median), its
relative output error tr(dW H dW^T) / tr(W H W^T) at each alpha; then the model's error
(worst output, relative L2 on the zoo's fixed inputs) without and with the scales. The
model's other weights stay float32, so both figures isolate these layers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).resolve().parent))
import representations  # sibling scripts, not a package
import zoo
from quant_error import relative_l2

from dc_onnx.budget import activations
from dc_onnx.budget.calibration import Calibration
from dc_onnx.layers import find_weight_groups

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
ENTRIES = 255  # 8-bit codes, zero not among them (no pruning)


def output_error(dw: np.ndarray, h: np.ndarray) -> float:
    """tr(dW H dW^T), with one H per group of rows for a grouped convolution."""
    if h.ndim == 2:
        return float(np.einsum("ij,jk,ik->", dw, h, dw))
    parts = np.split(dw, h.shape[0])
    return sum(float(np.einsum("ij,jk,ik->", d, h[g], d)) for g, d in enumerate(parts))


def channel_rms(h: np.ndarray, taps: int) -> np.ndarray:
    """[groups, input channels per group]: each input channel's RMS over its taps."""
    diag = np.diagonal(h.reshape(-1, *h.shape[-2:]), axis1=-2, axis2=-1)
    rms = np.sqrt(diag.reshape(diag.shape[0], -1, taps).mean(-1))
    # A channel (nearly) dead on these inputs would get a scale near 0 and its weights,
    # divided by it, any size: it is held at a thousandth of the median instead.
    return np.maximum(rms, 1e-3 * max(float(np.median(rms)), 1e-30))


def shared(w: np.ndarray, alpha: float, rms: np.ndarray, taps: int) -> np.ndarray:
    """w with its columns scaled by rms^alpha, sharing ENTRIES values, scaled back."""
    s = rms**alpha
    s = s / np.exp(np.mean(np.log(s)))  # geometric mean 1: the codebook's range stays put
    rows_per_group = w.shape[0] // s.shape[0]
    scale = np.repeat(np.repeat(s, taps, axis=1), rows_per_group, axis=0)
    sim = representations.tensor((w * scale).astype(np.float32), ENTRIES).matrix
    return sim.astype(np.float64) / scale


def study(model_entry: zoo.ZooModel, cache: Path, min_rows: float) -> None:
    runs = zoo.read_runs(zoo.inputs_path(model_entry, cache))
    model = representations.load(zoo.model_path(model_entry, cache))
    groups = [
        g for g in find_weight_groups(model.graph)
        if g.weight.const_value is not None and g.weight.const_value.dtype == ir.DataType.FLOAT
    ]  # fmt: skip
    activations.MIN_ROWS_PER_COLUMN = min_rows  # type: ignore[assignment]  # a fraction is fine
    hessians = activations.collect(model, groups, Calibration(runs, "file", "zoo inputs"))
    reference = representations.run(model, runs[0])
    print(f"\n{model_entry.name}: {len(hessians.by_weight)} of {len(groups)} weights have H")
    print(f"{'layer':40} {'shape':>10} {'spread':>7}  " + "  ".join(f"a={a:<6}" for a in ALPHAS))
    plain, best = {}, {}
    for g in groups:
        h = hessians.get(str(g.weight.name))
        if h is None:
            continue
        w = np.asarray(g.stored_matrix(g.array()), dtype=np.float64)
        h = np.asarray(h, dtype=np.float64)
        shape = g.array().shape
        taps = int(np.prod(shape[2:])) if g.kind == "conv" else 1
        rms = channel_rms(h, taps)
        base = output_error(w, h) or 1.0
        tried = [shared(w, a, rms, taps) for a in ALPHAS]
        errors = [output_error(w - q, h) / base for q in tried]
        plain[g] = tried[0]
        best[g] = tried[int(np.argmin(errors))]
        spread = float(rms.max() / np.median(rms))
        cells = "  ".join(f"{e:8.2e}" for e in errors)
        print(f"{g.name[:40]:40} {w.shape[0]:>4}x{w.shape[1]:<5} {spread:7.1f}  {cells}")
    originals = {g: g.array().copy() for g in plain}
    for label, chosen in (("no scales", plain), ("best alpha per layer", best)):
        for g, q in chosen.items():
            g.set_array(g.from_stored(q.astype(np.float32)))
        error = relative_l2(reference, representations.run(model, runs[0]))
        print(f"model error, {label}: {100 * error:.2f}%")
        for g, a in originals.items():
            g.set_array(a)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="ppocr-v4-rec,ppocr-v4-det")
    parser.add_argument("--cache", default=None, help="the zoo cache (DC_ONNX_ZOO_CACHE)")
    # Through an H of few input vectors per column the best alpha fits those few inputs
    # and can wreck every other one (with 0, ppocr-v4-rec's SE layers, one vector for 240
    # columns, take the model past 100%); a 16-token encoder has none above the default.
    parser.add_argument(
        "--min-rows-per-column", type=float, default=activations.MIN_ROWS_PER_COLUMN,
        help="input vectors per column below which a layer is left out (default: the compiler's)",
    )  # fmt: skip
    args = parser.parse_args()
    try:
        for entry in zoo.select(args.only):
            study(entry, zoo.cache_dir(args.cache), args.min_rows_per_column)
    except zoo.ZooError as e:
        print(f"column_scales: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
