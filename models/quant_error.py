"""Output error of weight sharing alone: compile with no pruning and N-bit codebooks, run
the original and the compiled model on fixed inputs, and print the relative L2 error.

    python models/quant_error.py MODEL.onnx --inputs X.npz [--bits 8] [--init linear,mse]
    python models/quant_error.py --zoo-cache DIR [--only NAME,...] [--bits 8] [--init ...]

With `--zoo-cache` (the folder `models/zoo.py` fetches into) every `models/NAME/*.onnx`
there runs on its `inputs/NAME.npz`. The error of an output is ||y - y_ref|| / ||y_ref||
over the entries finite in the original; a model's error is its worst output. One row per
model and k-means start, so the starts can be compared on the same weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import dc_onnx


def relative_l2(reference: list[np.ndarray], actual: list[np.ndarray]) -> float:
    """The worst output's ||actual - reference|| / ||reference||, finite entries only."""
    worst = 0.0
    for a, b in zip(reference, actual, strict=True):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a64.dtype.kind not in "fc":
            continue
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
        start = time.perf_counter()
        result = dc_onnx.compile(model, out, options)
        seconds = time.perf_counter() - start
        cluster = next(p for p in result.report.passes if p["name"] == "cluster")
        names = [i.name for i in ort.InferenceSession(str(model)).get_inputs()]
        feeds = {n: feeds[n] for n in names}
        reference = ort.InferenceSession(str(model)).run(None, feeds)
        actual = dc_onnx.InferenceSession(str(out)).run(None, feeds)
    return {
        "layers": len(result.report.layers),
        "weights": sum(layer.weights for layer in result.report.layers),
        "error": relative_l2(reference, actual),
        "compile_s": seconds,
        "cluster_s": cluster["seconds"],
    }


def _zoo(cache: Path, only: str | None) -> list[tuple[str, Path, Path]]:
    wanted = set(only.split(",")) if only else None
    found = []
    for folder in sorted((cache / "models").iterdir()):
        if wanted is not None and folder.name not in wanted:
            continue
        onnx_files = sorted(folder.glob("*.onnx"))
        inputs = cache / "inputs" / f"{folder.name}.npz"
        if onnx_files and inputs.is_file():
            found.append((folder.name, onnx_files[0], inputs))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--inputs", type=Path, help=".npz with one array per model input")
    parser.add_argument("--zoo-cache", type=Path, help="folder with models/ and inputs/")
    parser.add_argument("--only", help="zoo model names, comma-separated")
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--init", default="linear,mse", help="k-means starts to compare")
    args = parser.parse_args(argv)
    if args.zoo_cache:
        runs = _zoo(args.zoo_cache, args.only)
    elif args.model and args.inputs:
        runs = [(args.model.stem, args.model, args.inputs)]
    else:
        parser.error("give MODEL.onnx --inputs X.npz, or --zoo-cache DIR")
    print(f"| model | init | layers | weights | rel. L2 error at {args.bits} bits | cluster s |")
    print("|---|---|---|---|---|---|")
    for name, path, inputs in runs:
        with np.load(inputs) as data:
            feeds = {k: data[k] for k in data.files}
        for init in args.init.split(","):
            try:
                m = measure(path, feeds, args.bits, init)
            except dc_onnx.DcOnnxError as e:
                print(f"| {name} | {init} | failed: {e} | | | |")
                continue
            print(
                f"| {name} | {init} | {m['layers']} | {m['weights']:,} | {m['error']:.3%} "
                f"| {m['cluster_s']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
