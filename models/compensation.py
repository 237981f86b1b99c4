"""Output error of plain rounding against error-compensating rounding, every weight compressed.

    python models/compensation.py [--only NAME,...] [--cache DIR] [--settings 8:0,5:0.5,4:0.7]
                                  [--held-out SEED [--fit-samples N]] [--damp D]
                                  [--min-rows-per-column N]

For each zoo model (fetched, with its fixed inputs written: models/zoo.py) and each uniform
setting (bits:sparsity, every analysed weight at that setting), the relative L2 output
error of the worst output with today's rounding (magnitude pruning, k-means, nearest
value) and with error compensation (dc_onnx.compensate: H from the same inputs), both
simulated in plain ORT on the canonicalized model (dc_onnx.budget.simulate), the same
arrays the compiler would store. Weights without an H (storage form, embeddings) get the
plain rounding in both columns; the last three columns compress only the weights
with an H and leave the others exact. With `--held-out SEED`, H comes from the model's inputs drawn
with that seed (models/zoo.py's generators) and the error is measured on the fixed ones:
the compensation then cannot fit the very inputs it is judged on; `--fit-samples N` draws N
such inputs (seeds SEED..SEED+N-1), as a user's `--calibration` file would hold.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from dc_onnx import compensate
from dc_onnx.budget import activations
from dc_onnx.budget.activations import collect
from dc_onnx.budget.calibration import Calibration
from dc_onnx.budget.simulate import Simulator
from dc_onnx.io import load_model
from dc_onnx.layers import DEFAULT_MIN_ELEMENTS, find_analysed_weights, row_axis_of
from dc_onnx.passes.canonicalize import CanonicalizePass
from dc_onnx.quantize import quantize

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # a sibling script, not a package

DEFAULT_MODELS = (
    "akiki-vad,minilm-l3-fp32,silero-vad-sequence,ppocr-v4-det,ppocr-v4-rec,nudenet-320n"
)


def _calibration(batches: list[dict[str, np.ndarray]], description: str) -> Calibration:
    return Calibration(batches, "file", description)


def held_out_feeds(model: zoo.ZooModel, cache: Path, seeds: range) -> list[dict[str, np.ndarray]]:
    """One run's inputs per seed (a carried state from the original model, loaded once)."""
    path = zoo.model_path(model, cache)
    proto = onnx.load(str(path), load_external_data=False)
    session = None
    if model.carry:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runs = []
    for seed in seeds:
        feeds = zoo.synth_inputs(proto, model.inputs, seed, model.dims)
        if session is not None:
            feeds = zoo.carried_state(model, session, proto, feeds, seed, model.inputs)
        runs.append(feeds)
    return runs


def measure(
    path: Path,
    runs: list[dict[str, np.ndarray]],
    fit: list[dict[str, np.ndarray]],
    settings: list[str],
) -> list[tuple[str, float, float, float, float]]:
    model = load_model(path)
    model = CanonicalizePass(DEFAULT_MIN_ELEMENTS)(model).model
    # Integer weights are requantized without H (dc_onnx.requantize): nothing to compare.
    weights = [w for w in find_analysed_weights(model.graph, DEFAULT_MIN_ELEMENTS)
               if w.kind != "integer"]  # fmt: skip
    calibration = _calibration(runs, "fixed zoo inputs")
    simulator = Simulator(model, weights, calibration)
    start = time.perf_counter()
    hessians = collect(model, weights, _calibration(fit, "inputs H is collected on"))
    covered = sum(w.array().size for w in weights if hessians.get(str(w.weight.name)) is not None)
    total = sum(w.array().size for w in weights)
    seconds = time.perf_counter() - start
    print(
        f"  H for {len(hessians.by_weight)} of {len(weights)} weights "
        f"({covered / max(total, 1):.0%} of the weights' elements), {seconds:.1f} s",
        flush=True,
    )
    for name, h in hessians.by_weight.items():
        print(f"    {name}: {hessians.rows[name]} input vectors, {h.shape[-1]} columns")
    rows = []
    for setting in settings:
        bits, sparsity = int(setting.split(":")[0]), float(setting.split(":")[1])
        arrays: dict[bool, dict[str, np.ndarray]] = {False: {}, True: {}}
        for with_h in (False, True):
            for w in weights:
                name = str(w.weight.name)
                hessian = hessians.get(name) if with_h else None
                arrays[with_h][name] = quantize(
                    w.array(), bits, sparsity, row_axis=row_axis_of(w), hessian=hessian
                )
        # every weight compressed; then only the weights with an H (the others exact)
        errors = [simulator.error(arrays[h]).worst for h in (False, True)]
        errors += [
            simulator.error({n: a for n, a in arrays[h].items() if n in hessians.by_weight}).worst
            for h in (False, True)
        ]
        print(f"  {setting}: " + ", ".join(f"{e:.4%}" for e in errors), flush=True)
        rows.append((setting, errors[0], errors[1], errors[2], errors[3]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", help="zoo cache folder (default: zoo.py's)")
    parser.add_argument("--only", default=DEFAULT_MODELS, help="zoo model names, comma-separated")
    parser.add_argument("--settings", default="8:0,5:0.5,4:0.7", help="bits:sparsity, ...")
    parser.add_argument("--held-out", type=int, metavar="SEED", help="collect H on other inputs")
    parser.add_argument(
        "--fit-samples", type=int, default=1, help="with --held-out: inputs H is collected on"
    )
    parser.add_argument("--damp", type=float, help="dampening, share of mean diag H")
    parser.add_argument(
        "--min-rows-per-column", type=float, help="input vectors per column an H needs"
    )
    args = parser.parse_args(argv)
    if args.damp is not None:
        compensate.DAMP = args.damp
    if args.min_rows_per_column is not None:
        activations.MIN_ROWS_PER_COLUMN = args.min_rows_per_column
    cache = zoo.cache_dir(args.cache)
    settings = args.settings.split(",")
    table = []
    for m in zoo.select(args.only):
        path, inputs = zoo.model_path(m, cache), zoo.inputs_path(m, cache)
        if not (path.is_file() and inputs.exists()):
            print(f"{m.name}: not fetched (models/zoo.py fetch, inputs)")
            continue
        runs = zoo.read_runs(inputs)
        fit = runs
        if args.held_out is not None:
            seeds = range(args.held_out, args.held_out + args.fit_samples)
            fit = held_out_feeds(m, cache, seeds)
        print(m.name, flush=True)
        for row in measure(path, runs, fit, settings):
            table.append((m.name, *row))
    print()
    print(
        "| model | bits:sparsity | every weight: plain | compensated | gain "
        "| weights with H only: plain | compensated | gain |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, setting, plain, comp, plain_h, comp_h in table:
        print(
            f"| {name} | {setting} | {plain:.3%} | {comp:.3%} | {_gain(plain, comp)} "
            f"| {plain_h:.3%} | {comp_h:.3%} | {_gain(plain_h, comp_h)} |"
        )
    return 0


def _gain(plain: float, compensated: float) -> str:
    return f"{plain / compensated:.2f}x" if compensated > 0 else "-"


if __name__ == "__main__":
    sys.exit(main())
