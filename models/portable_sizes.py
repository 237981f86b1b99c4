"""Bytes of the portable form (`--target portable`) next to the custom-op form (.dcw).

    python models/portable_sizes.py [--out build/portable] [--only lenet-300-100,lenet5,alexnet]

For each model, prunes and clusters once at the paper's per-layer densities and bits, then
lowers the same weights four ways: the custom-op form (.onnx + Huffman-coded .dcw) and the
portable form with dense codes, with sparse codes (uint8 gaps + codes) and with the
per-layer choice `--target portable` makes (auto). Each is written, sized raw and as a
deflated .zip, and checked to load in plain ONNX Runtime (the portable ones without the
custom-op library). Prints a Markdown table (README, "Portable form").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx
import onnx_ir as ir
import onnxruntime as ort

import dc_onnx
from dc_onnx.io import load_model, save_compiled
from dc_onnx.passes.lower import LowerPass
from dc_onnx.passes.lower_portable import PortableLowerPass
from dc_onnx.pipeline import run_passes
from dc_onnx.recipes import build_passes
from dc_onnx.report import zip_bytes

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


def _loads(path: Path, with_library: bool) -> None:
    options = dc_onnx.session_options() if with_library else ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(name: str, out: Path) -> list[tuple[str, int, int]]:
    source = _source(name, out)
    passes = build_passes(_options(name), None)
    assert isinstance(passes[-1], LowerPass)
    clustered, _ = run_passes(load_model(source), passes[:-1])
    proto = ir.to_proto(clustered)
    rows = [("dense original", source.stat().st_size, zip_bytes([source]))]
    variants = {
        "custom ops + .dcw": passes[-1], "portable, auto": PortableLowerPass("auto"),
        "portable, dense codes": PortableLowerPass("never"),
        "portable, sparse codes": PortableLowerPass("always"),
    }  # fmt: skip
    for label, lower in variants.items():
        model, _ = run_passes(ir.from_proto(proto), [lower])
        path = out / f"{name}.{label.split(',')[-1].strip().replace(' ', '-')}.onnx"
        files = save_compiled(model, path)
        _loads(path, with_library=label.startswith("custom"))
        rows.append((label, sum(f.stat().st_size for f in files), zip_bytes(files)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/portable"))
    parser.add_argument("--only", default=",".join(SETTINGS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| model | form | bytes | zipped bytes |")
    print("|---|---|---:|---:|")
    for name in args.only.split(","):
        for label, raw, zipped in measure(name, args.out):
            print(f"| {name} | {label} | {raw:,} | {zipped:,} |", flush=True)


if __name__ == "__main__":
    main()
