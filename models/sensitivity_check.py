"""How well the sensitivity analysis predicts the points it does not measure.

`sweep` measures every point of every curve of a model (what `dc-onnx analyze --exact`
runs) and stores each point's weight-space error ||W - Q(W)|| / ||W|| beside its output
error; `check` then predicts every non-anchor point from the anchors alone, as the default
analysis does (dc_onnx.budget.sensitivity.Curve), and compares with the measured one:

    .venv/bin/python models/sensitivity_check.py sweep MODEL.onnx INPUTS.npz OUT.json
    .venv/bin/python models/sensitivity_check.py check OUT.json [OUT.json ...]

`sizes MODEL.onnx` compares the size estimates (dc_onnx.budget.candidates) with a full
k-means sizing at every sparsity, on every fourth weight, at 8, 5 and 3 bits.

The weight-space errors here come from the whole array; the analysis takes those of the
bit widths from a sample of 2^15 weights, which differs by a few percent on larger layers.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np


def sweep(model_path: str, inputs: str, out: str) -> None:
    from dc_onnx.budget.calibration import calibration_for
    from dc_onnx.budget.candidates import BITS, SPARSITIES
    from dc_onnx.budget.simulate import Simulator
    from dc_onnx.io import load_model
    from dc_onnx.layers import find_weight_groups
    from dc_onnx.passes.canonicalize import CanonicalizePass
    from dc_onnx.quantize import prune_array, quantize

    model = CanonicalizePass()(load_model(model_path)).model
    groups = find_weight_groups(model.graph)
    calibration = calibration_for(model.graph, inputs, {})
    subset = calibration.head(8)  # what the compiler's analysis uses
    simulator = Simulator(model, groups, calibration)
    layers = []
    start = time.perf_counter()
    for group in groups:
        name, array = str(group.weight.name), group.array()
        norm = float(np.linalg.norm(array)) or 1.0
        row: dict = {"name": name, "size": int(array.size), "bits": {}, "sparsity": {}}
        for b in BITS:
            q = quantize(array, b, 0.0, "mse")
            error = simulator.error({name: q}, subset).worst
            row["bits"][str(b)] = [float(np.linalg.norm(q - array)) / norm, error]
        for s in SPARSITIES[1:]:
            p = prune_array(array, "sparsity", s)
            error = simulator.error({name: p}, subset).worst
            row["sparsity"][f"{s:g}"] = [float(np.linalg.norm(p - array)) / norm, error]
        layers.append(row)
        print(f"{name}: {array.size} weights, {time.perf_counter() - start:.0f} s", flush=True)
    runs = sum(len(r["bits"]) + len(r["sparsity"]) for r in layers)
    with open(out, "w") as f:
        json.dump({"model": model_path, "seconds": time.perf_counter() - start, "runs": runs,
                   "layers": layers}, f)  # fmt: skip


def check(path: str) -> str:
    from dc_onnx.budget.sensitivity import ANCHOR_BITS, ANCHOR_SPARSITIES, Curve

    with open(path) as f:
        data = json.load(f)
    ratios, small, small_ok = [], 0, 0
    # Runs of the former analysis: full sweeps, each stopped after the first error past 0.1
    # (max(4 x budget, 0.1) at the default 1% budget).
    stopped = 0
    for layer in data["layers"]:
        for key in ("bits", "sparsity"):
            for _, error in layer[key].values():  # bits 8 down, sparsity up: stored in order
                stopped += 1
                if error > 0.1:
                    break
    for layer in data["layers"]:
        for key, anchors in (("bits", ANCHOR_BITS), ("sparsity", ANCHOR_SPARSITIES)):
            points = {float(k): v for k, v in layer[key].items()}
            curve = Curve({k: x for k, (x, _) in points.items()} | {0.0: 0.0}, {0.0: 0.0})
            curve.measured.update({float(a): points[float(a)][1] for a in anchors})
            for knob, (_, measured) in points.items():
                if knob in curve.measured:
                    continue
                predicted = curve.predict(knob)
                if 1e-3 <= measured <= 0.1:  # the range a 1-5% budget chooses from
                    ratios.append(predicted / measured)
                elif measured < 1e-3:
                    small += 1
                    small_ok += predicted < 3e-3
    r = np.array(ratios)
    within = float(np.mean((r >= 0.5) & (r <= 2))) if r.size else math.nan
    under = float(np.mean(r < 0.5)) if r.size else math.nan
    over = float(np.mean(r > 2)) if r.size else math.nan
    median = float(np.median(r)) if r.size else math.nan
    name = data["model"].rsplit("/", 1)[-1]
    return (
        f"{name}: {len(data['layers'])} weights, {data['runs']} runs in "
        f"{data['seconds']:.0f} s ({stopped} with sweeps stopped past 10%); "
        f"{r.size} points measured in [0.1%, 10%]: predicted within 2x "
        f"{within:.0%}, under by more than 2x {under:.0%}, over by more than 2x {over:.0%}, "
        f"median predicted/measured {median:.2f}; {small} points measured under 0.1%: "
        f"{small_ok} predicted under 0.3%"
    )


def sizes(model_path: str) -> None:
    import dc_onnx.budget.candidates as candidates
    from dc_onnx.io import load_model
    from dc_onnx.layers import find_weight_groups
    from dc_onnx.passes.canonicalize import CanonicalizePass

    model = CanonicalizePass()(load_model(model_path)).model
    # (values sampled, k-means iterations, sparsities sized): as compiled, then in full
    fast_config: tuple[int, int | None, tuple[float, ...]] = (
        candidates._SAMPLE, candidates._ITERATIONS, candidates.SIZED_SPARSITIES
    )  # fmt: skip
    full_config = (1 << 18, None, candidates.SPARSITIES)

    def configure(config: tuple[int, int | None, tuple[float, ...]]) -> None:
        candidates._SAMPLE = config[0]
        candidates._ITERATIONS = config[1]  # type: ignore[assignment]  # None: until converged
        candidates.SIZED_SPARSITIES = config[2]  # type: ignore[assignment]

    worst = 0.0
    for group in find_weight_groups(model.graph)[::4]:
        array = group.array()
        result = []
        for config in (fast_config, full_config):
            configure(config)
            layer = candidates.LayerSizes(group, array)
            start = time.perf_counter()
            result.append((
                {(s, b): layer.bytes(layer.setting(s, b))
                 for s in candidates.SPARSITIES for b in (8, 5, 3)},
                time.perf_counter() - start,
            ))  # fmt: skip
        configure(fast_config)
        (fast, t_fast), (full, t_full) = result
        deviation = max(abs(fast[k] / full[k] - 1) for k in fast)
        worst = max(worst, deviation)
        print(f"{group.name}: {array.size} weights, {t_fast:.2f} s against {t_full:.2f} s, "
              f"at most {deviation:.1%} off")  # fmt: skip
    print(f"at most {worst:.1%} off")


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "sweep":
        sweep(*argv[1:])
    elif len(argv) == 2 and argv[0] == "sizes":
        sizes(argv[1])
    elif len(argv) >= 2 and argv[0] == "check":
        for path in argv[1:]:
            print(check(path))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
