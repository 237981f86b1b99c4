"""Bytes of the portable form (`--target portable`) next to the custom-op form (.dcw).

    python models/portable_sizes.py [--out build/portable] [--only lenet-300-100,lenet5,alexnet]

For each model, prunes and clusters once at the paper's per-layer densities and bits, then
lowers the same weights four ways: the custom-op form (.onnx + Huffman-coded .dcw) and the
portable form with dense codes, with sparse codes (uint8 gaps + codes) and with the
per-layer choice `--target portable` makes (auto). Each is written, sized raw and as a
deflated .zip, and run on one random input in ONNX Runtime (the portable ones without the
custom-op library, here and, with --rt-python, in a second Python's onnxruntime); the
table gives the largest output difference from the custom-op form, relative to its
largest output. Prints a Markdown table (README, "Portable form").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

import dc_onnx
from dc_onnx.io import load_model
from dc_onnx.passes.lower import LowerPass
from dc_onnx.passes.lower_portable import PortableLowerPass
from dc_onnx.pipeline import run_passes
from dc_onnx.recipes import build_passes
from dc_onnx.report import zip_bytes
from dc_onnx.writer import save_compiled

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imagenet_shapes

MODELS = Path(__file__).resolve().parent

# Paper, Table 1-4: weights kept per layer, weight bits and index bits (conv, fc).
SETTINGS = {
    "lenet-300-100": ({"ip1": 0.08, "ip2": 0.09, "ip3": 0.26}, (8, 6), (8, 5)),
    "lenet5": ({"conv1": 0.66, "conv2": 0.12, "ip1": 0.08, "ip2": 0.19}, (8, 5), (8, 5)),
    "alexnet": (imagenet_shapes.ALEXNET_DENSITY, (8, 5), (8, 5)),
}


def _options(name: str) -> dc_onnx.CompileOptions:
    density, bits, index_bits = SETTINGS[name]
    return dc_onnx.CompileOptions(
        prune=dc_onnx.PruneOptions(sparsity_per_layer={k: 1 - v for k, v in density.items()}),
        cluster=dc_onnx.ClusterOptions(bits_conv=bits[0], bits_fc=bits[1]),
        lower=dc_onnx.LowerOptions(index_bits_conv=index_bits[0], index_bits_fc=index_bits[1]),
    )


def _source(name: str, out: Path) -> Path:
    if name != "alexnet":
        return MODELS / f"{name}.onnx"
    path = out / "alexnet.onnx"
    if not path.exists():
        onnx.save(imagenet_shapes.build(imagenet_shapes.ALEXNET, 3), str(path))
    return path


PLAIN_RUN = """
import sys
import numpy as np, onnxruntime as ort
x = np.load(sys.argv[2])
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
np.save(sys.argv[3], session.run(None, {session.get_inputs()[0].name: x})[0])
print(ort.__version__)
"""


def _run(path: Path, x: np.ndarray, with_library: bool) -> np.ndarray:
    options = dc_onnx.session_options() if with_library else ort.SessionOptions()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def _run_elsewhere(python: Path, path: Path, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Outputs of a plain onnxruntime session in another Python (no dc_onnx there)."""
    np.save(path.with_suffix(".x.npy"), x)
    done = subprocess.run(
        [str(python), "-c", PLAIN_RUN, str(path), str(path.with_suffix(".x.npy")),
         str(path.with_suffix(".y.npy"))], capture_output=True, text=True, check=True,
    )  # fmt: skip
    return np.load(path.with_suffix(".y.npy")), done.stdout.strip()


def measure(
    name: str, out: Path, rt_python: Path | None
) -> list[tuple[str, int, int, str]]:  # fmt: skip
    source = _source(name, out)
    passes = build_passes(_options(name), None)
    # Everything up to the lowering once; then each lowering (the custom-op one with the
    # passes that follow it in a compile).
    split = next(i for i, p in enumerate(passes) if isinstance(p, LowerPass))
    clustered, _ = run_passes(load_model(source), passes[:split])
    proto = ir.to_proto(clustered)
    rows = [("dense original", source.stat().st_size, zip_bytes([source]), "")]
    shape = [1, 3, 224, 224] if name == "alexnet" else [1, 1, 28, 28]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    reference: np.ndarray | None = None
    variants: dict[str, list[ir.passes.PassBase]] = {
        "custom ops + .dcw": passes[split:], "portable, auto": [PortableLowerPass(sparse="auto")],
        "portable, dense codes": [PortableLowerPass(sparse="never")],
        "portable, sparse codes": [PortableLowerPass(sparse="always")],
    }  # fmt: skip
    for label, lowering in variants.items():
        model, _ = run_passes(ir.from_proto(proto), lowering)
        path = out / f"{name}.{label.split(',')[-1].strip().replace(' ', '-')}.onnx"
        files = save_compiled(model, path)
        y = _run(path, x, with_library=reference is None)
        if reference is None:  # the custom-op form comes first
            reference, differences = y, ""
        else:
            scale = float(np.abs(reference).max())
            differences = f"{float(np.abs(y - reference).max()) / scale:.1e}"
            if rt_python is not None:
                other, version = _run_elsewhere(rt_python, path, x)
                error = float(np.abs(other - reference).max()) / scale
                differences += f" (ORT {version}: {error:.1e})"
        rows.append((label, sum(f.stat().st_size for f in files), zip_bytes(files), differences))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/portable"))
    parser.add_argument("--only", default=",".join(SETTINGS))
    parser.add_argument("--rt-python", type=Path, help="another Python with onnxruntime")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"| model | form | bytes | zipped bytes | output difference (ORT {ort.__version__}) |")
    print("|---|---|---:|---:|---|")
    for name in args.only.split(","):
        for label, raw, zipped, diff in measure(name, args.out, args.rt_python):
            print(f"| {name} | {label} | {raw:,} | {zipped:,} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
