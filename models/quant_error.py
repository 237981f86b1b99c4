"""Output error of weight sharing alone: compile with no pruning and N-bit codebooks, run
the original and the compiled model on fixed inputs, and print the relative L2 error.

    python models/quant_error.py [--only NAME,...] [--cache DIR] [--bits 8] [--init linear,mse]
    python models/quant_error.py MODEL.onnx --inputs X.npz [--bits 8] [--init ...]
    python models/quant_error.py --quantize-speed 10000000
    python models/quant_error.py --representations tensor,rows,... [--per-layer] [--only ...]

Without a model it runs the zoo (`models/zoo.py`, fetched and with inputs written). The
error of a model is its worst output's ||y - y_ref|| / ||y_ref|| over the entries finite in
the original. One row per model and k-means start, so the starts meet the same weights;
"cluster s" is the cluster pass alone. `--quantize-speed N` times `dc_onnx.quantize.quantize`
on N standard-normal float32 weights instead. `--representations` simulates other ways
to share the weights (models/representations.py) and prints error and estimated bytes;
`--per-layer` adds the worst layers of the first one, each quantized alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import dc_onnx
from dc_onnx.quantize import quantize

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # a sibling script, not a package


def relative_l2(reference: list[np.ndarray], actual: list[np.ndarray]) -> float:
    """The worst output's ||actual - reference|| / ||reference||, finite entries only."""
    worst = 0.0
    for a, b in zip(reference, actual, strict=True):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        finite = np.isfinite(a64)
        norm = float(np.linalg.norm(a64[finite]))
        diff = float(np.linalg.norm(b64[finite] - a64[finite]))
        worst = max(worst, diff / norm if norm else diff)
    return worst


def measure(model: Path, feeds: dict[str, np.ndarray], bits: int, init: str) -> dict[str, object]:
    options = dc_onnx.CompileOptions(
        prune=dc_onnx.PruneOptions(sparsity=0.0),
        cluster=dc_onnx.ClusterOptions(bits_conv=bits, bits_fc=bits, init=init),  # type: ignore[arg-type]
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.dc.onnx"
        result = dc_onnx.compile(model, out, options)
        cluster = next(p for p in result.report.passes if p.name == "cluster")
        reference_session = ort.InferenceSession(str(model))
        names = [i.name for i in reference_session.get_inputs()]
        feeds = {n: feeds[n] for n in names}
        reference = reference_session.run(None, feeds)
        actual = dc_onnx.InferenceSession(str(out)).run(None, feeds)
    return {
        "weights": sum(layer.weights for layer in result.report.layers),
        "error": relative_l2(reference, actual),
        "cluster_s": cluster.seconds,
    }


def quantize_speed(n: int, bits: int) -> None:
    w = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    for sparsity in (0.0, 0.9):
        start = time.perf_counter()
        quantize(w, bits, sparsity)
        seconds = time.perf_counter() - start
        print(f"quantize: {n:,} float32 weights, {bits} bits, sparsity {sparsity}: {seconds:.2f} s")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def compare_representations(
    runs: list[tuple[str, Path, Path]], names: list[str], args: argparse.Namespace
) -> int:
    import representations

    print("| model | float32 MB | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for name, path, inputs in runs:
        if not (path.is_file() and inputs.exists()):
            continue
        feeds = zoo.read_runs(inputs)[0]  # the first run
        r = representations.simulate(path, feeds, args.bits, names, args.per_layer)
        cells = [f"{r.errors[n][0]:.3%} / {r.errors[n][1] / 1e6:.3f} MB" for n in names]
        print(f"| {name} | {r.float32_bytes / 1e6:.3f} | " + " | ".join(cells) + " |", flush=True)
        if args.per_layer:
            worst = sorted(r.per_layer[names[0]].items(), key=lambda kv: -kv[1])[:8]
            print(
                f"|   worst layers ({names[0]} alone) | | "
                + ", ".join(f"{n} {e:.2%}" for n, e in worst)
                + " |",
                flush=True,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--inputs", type=Path, help=".npz with one array per model input")
    parser.add_argument("--cache", help="zoo cache folder (default: zoo.py's)")
    parser.add_argument("--only", help="zoo model names, comma-separated")
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--init", default="linear,mse", help="k-means starts to compare")
    parser.add_argument("--quantize-speed", type=int, metavar="N")
    parser.add_argument("--representations", help="representations to simulate, comma-separated")
    parser.add_argument("--per-layer", action="store_true", help="with --representations")
    parser.add_argument("--inputs-dir", type=Path, help="zoo inputs folder (default: the cache's)")
    args = parser.parse_args(argv)
    if args.quantize_speed:
        quantize_speed(args.quantize_speed, args.bits)
        return 0
    if args.model:
        if not args.inputs:
            parser.error("a model needs --inputs")
        runs = [(args.model.stem, args.model, args.inputs)]
    else:
        cache = zoo.cache_dir(args.cache)
        runs = [
            (m.name, zoo.model_path(m, cache), zoo.inputs_path(m, cache))
            for m in zoo.select(args.only)
        ]
        if args.inputs_dir:
            runs = [(n, p, args.inputs_dir / i.name) for n, p, i in runs]
    if args.representations:
        return compare_representations(runs, args.representations.split(","), args)
    print(f"| model | init | weights | rel. L2 error at {args.bits} bits | cluster s |")
    print("|---|---|---|---|---|")
    for name, path, inputs in runs:
        if not (path.is_file() and inputs.exists()):
            print(f"| {name} | | not fetched (models/zoo.py fetch, inputs) | | |")
            continue
        feeds = zoo.read_runs(inputs)[0]  # the first run
        for init in args.init.split(","):
            try:
                m = measure(path, feeds, args.bits, init)
            except dc_onnx.DcOnnxError as e:
                print(f"| {name} | {init} | failed: {e} | | |")
                continue
            print(
                f"| {name} | {init} | {m['weights']:,} | {m['error']:.3%} | {m['cluster_s']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
