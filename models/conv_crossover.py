"""Where the sparse kernels stop paying: single Conv layers, and Gemm-like MatMul layers
at several batch sizes, at several densities, each compiled with the sparse kernel forced,
timed against ORT's own op on the dense original (what the decode form runs), runs
alternating in one process.

    python models/conv_crossover.py [--out build/crossover] [--repeat 15] [--cold]
                                    [--densities 0.2,0.35,0.5] [--fc]

Prints one row per layer shape (and, with --fc, batch size) and density: the median CPU
time of each form's runs, 1 intra-op thread, and the ratio dense / sparse (above 1: the
sparse kernel is faster). With --cold, every timed run follows a pass over 256 MB of
other memory, as a Run of a dense model with large FC weights leaves the caches (what the
alternation of `dc-onnx bench` between the dense and the compiled model does to each).
With one intra-op thread ORT runs the graph on the calling thread, so that thread's CPU
time (`time.thread_time`) is the run's cost without the time other processes held the
core: on a shared machine, wall-clock medians measure the scheduler.
The lower pass's `conv_dense_density` and `fc_dense_density` (dc_onnx/options.py) are set
from these rows; docs/benchmarks.md, "Sparse or dense convolution" and "Sparse or dense
FC", records runs. Random weights and inputs: only the speed means anything.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import dc_onnx
from dc_onnx.runtime import open_session
from dc_onnx.tools.bench_sessions import bench_session_options


@dataclass(frozen=True)
class Shape:
    name: str
    cin: int
    cout: int
    kernel: int
    size: int  # input height (and width, unless `width` is given)
    stride: int = 1
    group: int = 1
    kernel_width: int = 0  # 0: square kernel
    width: int = 0  # 0: square input
    same_pad: bool = True  # at stride 1; False: no padding

    @property
    def kernel_hw(self) -> tuple[int, int]:
        return self.kernel, self.kernel_width or self.kernel

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.size, self.width or self.size

    @property
    def pads(self) -> list[int]:
        """Same padding at stride 1 (begins, then ends), none otherwise."""
        if self.stride != 1 or not self.same_pad:
            return [0, 0, 0, 0]
        kh, kw = self.kernel_hw
        return [kh // 2, kw // 2, kh // 2, kw // 2]

    @property
    def output_hw(self) -> tuple[int, int]:
        p = self.pads
        return (
            (self.input_hw[0] + p[0] + p[2] - self.kernel_hw[0]) // self.stride + 1,
            (self.input_hw[1] + p[1] + p[3] - self.kernel_hw[1]) // self.stride + 1,
        )


SHAPES = [
    Shape("5x5 96->256 /2 27x27 (AlexNet conv2)", 96, 256, 5, 27, group=2),
    Shape("3x3 256->384 13x13 (AlexNet conv3)", 256, 384, 3, 13),
    Shape("3x3 512->512 14x14 (VGG-16 conv5)", 512, 512, 3, 14),
    Shape("3x3 64->64 56x56", 64, 64, 3, 56),
    Shape("1x1 256->256 14x14", 256, 256, 1, 14),
    Shape("3x3 depthwise 128 28x28", 128, 128, 3, 28, group=128),
    Shape("11x11/4 3->96 224x224 (AlexNet conv1)", 3, 96, 11, 224, stride=4),
    # Shapes of the zoo's models (docs/zoo.md) and other common ones.
    Shape("1x1 512->512 7x7 (PP-LCNet last)", 512, 512, 1, 7),
    Shape("1x1 512->128 1x1 (SE squeeze)", 512, 128, 1, 1),
    Shape("5x1 256->512 512x1 (magika)", 256, 512, 5, 512, kernel_width=1, width=1, same_pad=False),
    Shape("3x3 64->64 40x40 (YOLOv8n head)", 64, 64, 3, 40),
    Shape("3x3 256->64 10x10 (YOLOv8n head)", 256, 64, 3, 10),
    Shape("1x1 64->256 56x56 (ResNet-50 expand)", 64, 256, 1, 56),
    Shape("1x1 128->128 28x28", 128, 128, 1, 28),
    Shape("1x1 1024->1024 14x14", 1024, 1024, 1, 14),
    Shape("5x5 20->50 12x12 (LeNet-5 conv2)", 20, 50, 5, 12, same_pad=False),
    Shape("3x3 32->32 10x10", 32, 32, 3, 10),
    Shape("3x3 64->64 10x10", 64, 64, 3, 10),
    Shape("1x1 128->128 7x7", 128, 128, 1, 7),
    Shape("1x1 256->256 7x7", 256, 256, 1, 7),
    Shape("3x3 128->128 7x7", 128, 128, 3, 7),
]
DENSITIES = [0.2, 0.35, 0.5, 0.65, 0.8, 1.0]


@dataclass(frozen=True)
class FcShape:
    name: str
    inputs: int
    outputs: int
    batches: tuple[int, ...]  # rows of activations timed


FC_SHAPES = [
    FcShape("384->384 (MiniLM attention)", 384, 384, (1, 16, 64)),
    FcShape("384->1536 (MiniLM intermediate)", 384, 1536, (1, 16)),
    FcShape("1024->8210 (ddddocr CTC head)", 1024, 8210, (1, 20)),
    FcShape("4096->4096 (VGG-16 fc7)", 4096, 4096, (1, 8, 64)),
    FcShape("257->64 (magika byte projection)", 257, 64, (512, 2048)),
    FcShape("384->384, long sequences", 384, 384, (512, 2048)),
]


def conv_model(s: Shape, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((s.cout, s.cin // s.group, *s.kernel_hw), dtype=np.float32)
    node = helper.make_node(
        "Conv", ["x", "W"], ["y"], name="conv", group=s.group, kernel_shape=list(s.kernel_hw),
        strides=[s.stride] * 2, pads=s.pads,
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, s.cin, *s.input_hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, s.cout, *s.output_hw])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def fc_model(s: FcShape, seed: int = 0) -> onnx.ModelProto:
    w = np.random.default_rng(seed).standard_normal((s.inputs, s.outputs), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")],
        "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", s.inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", s.outputs])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def sparse_options(density: float, kind: str = "conv") -> dc_onnx.CompileOptions:
    """Manual mode at `density`, 8-bit weights and indices, the sparse kernel forced."""
    return dc_onnx.CompileOptions(
        prune=dc_onnx.PruneOptions(sparsity_per_layer={kind: 1.0 - density}),
        cluster=dc_onnx.ClusterOptions(bits_conv=8, bits_fc=8),
        lower=dc_onnx.LowerOptions(
            index_bits_conv=8, index_bits_fc=8, conv_dense_density=2.0, fc_dense_density=2.0
        ),
    )


def alternate(
    sessions: list,
    feeds: dict[str, np.ndarray],
    repeat: int,
    evict: np.ndarray | None = None,
) -> list[float]:
    """Median CPU ms of each session over `repeat` rounds, a different one first each round;
    `evict` (a large array) is read before every timed run."""
    times: list[list[float]] = [[] for _ in sessions]
    for s in sessions:
        s.run(None, feeds)
        s.run(None, feeds)
    for r in range(repeat):
        for i in [(r + k) % len(sessions) for k in range(len(sessions))]:
            if evict is not None:
                evict.sum()
            start = time.thread_time()
            sessions[i].run(None, feeds)
            times[i].append((time.thread_time() - start) * 1e3)
    return [float(np.median(t)) for t in times]


def _time_pair(
    dense: Path, compiled: Path, feeds: dict[str, np.ndarray], repeat: int, evict: Any
) -> tuple[float, float]:
    sessions = [open_session(p, bench_session_options(1)) for p in (dense, compiled)]
    d, s = alternate(sessions, feeds, repeat, evict)
    return d, s


def _conv_rows(
    out: Path, picked: list[int], densities: list[float], repeat: int, evict: Any
) -> None:
    print(f"{'layer':<40} {'density':>7} {'dense ms':>9} {'sparse ms':>9} {'dense/sparse':>12}")
    for i in picked:
        shape = SHAPES[i]
        dense = out / f"conv{i}.onnx"
        onnx.save(conv_model(shape), str(dense))
        x = np.random.default_rng(1).standard_normal((1, shape.cin, *shape.input_hw))
        feeds = {"x": x.astype(np.float32)}
        for density in densities:
            compiled = out / f"conv{i}_d{int(density * 100)}.dc.onnx"
            dc_onnx.compile(dense, compiled, sparse_options(density))
            d, s = _time_pair(dense, compiled, feeds, repeat, evict)
            print(f"{shape.name:<40} {density:>7.2f} {d:>9.3f} {s:>9.3f} {d / s:>11.2f}x")


def _fc_rows(out: Path, picked: list[int], densities: list[float], repeat: int, evict: Any) -> None:
    head = f"{'layer':<32} {'batch':>5} {'density':>7} {'dense ms':>9} {'sparse ms':>9}"
    print(f"{head} {'dense/sparse':>12}")
    for i in picked:
        shape = FC_SHAPES[i]
        dense = out / f"fc{i}.onnx"
        onnx.save(fc_model(shape), str(dense))
        for density in densities:
            compiled = out / f"fc{i}_d{int(density * 100)}.dc.onnx"
            dc_onnx.compile(dense, compiled, sparse_options(density, "fc"))
            for batch in shape.batches:
                x = np.random.default_rng(1).standard_normal((batch, shape.inputs))
                d, s = _time_pair(dense, compiled, {"x": x.astype(np.float32)}, repeat, evict)
                print(
                    f"{shape.name:<32} {batch:>5} {density:>7.2f} {d:>9.3f} {s:>9.3f}"
                    f" {d / s:>11.2f}x"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/crossover"))
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--cold", action="store_true", help="evict the caches before each run")
    parser.add_argument("--densities", default=",".join(str(d) for d in DENSITIES))
    parser.add_argument("--shapes", help="indices into the shapes, comma-separated (default: all)")
    parser.add_argument("--fc", action="store_true", help="MatMul layers instead of Conv ones")
    args = parser.parse_args()
    densities = [float(d) for d in args.densities.split(",")]
    count = len(FC_SHAPES if args.fc else SHAPES)
    picked = [int(i) for i in args.shapes.split(",")] if args.shapes else list(range(count))
    evict = np.ones(64 << 20, np.float32) if args.cold else None
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, cold: {args.cold}")
    rows = _fc_rows if args.fc else _conv_rows
    rows(args.out, picked, densities, args.repeat, evict)


if __name__ == "__main__":
    main()
