"""AlexNet- and VGG-16-shaped ONNX models with random weights, compiled at the paper's
per-layer densities and bits, plus single-layer models for kernel benchmarks.

    python models/imagenet_shapes.py [--out build/imagenet] [--only alexnet,vgg16,layers]
                                     [--keep-activations]

Writes `<name>.onnx` (dense) and `<name>.dc.onnx` + `.dcw` (compiled) under --out; with
--keep-activations the compiled models keep their Relu nodes (no fused activation) and
are named `<name>_unfused.dc.onnx`, to measure what the fusion gains. The
weights are random (He-scaled normal), so only speed and memory mean anything here, not
accuracy. Batch size is the symbolic dim `N`; the input is float32 [N, 3, 224, 224].
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import dc_onnx


@dataclass(frozen=True)
class Conv:
    name: str
    out: int
    kernel: int
    stride: int = 1
    pad: int = 0
    group: int = 1
    pool: bool = False  # 3x3/2 max-pool (AlexNet) or 2x2/2 (VGG) after the ReLU


@dataclass(frozen=True)
class Fc:
    name: str
    out: int
    relu: bool = True


# Caffe's AlexNet (the paper's), without LRN: conv2, conv4 and conv5 are grouped.
ALEXNET: list[Conv | Fc] = [
    Conv("conv1", 96, 11, stride=4, pool=True),
    Conv("conv2", 256, 5, pad=2, group=2, pool=True),
    Conv("conv3", 384, 3, pad=1),
    Conv("conv4", 384, 3, pad=1, group=2),
    Conv("conv5", 256, 3, pad=1, group=2, pool=True),
    Fc("fc6", 4096),
    Fc("fc7", 4096),
    Fc("fc8", 1000, relu=False),
]
# Paper, Table 4: weights kept per layer.
ALEXNET_DENSITY = {
    "conv1": 0.84, "conv2": 0.38, "conv3": 0.35, "conv4": 0.37, "conv5": 0.37,
    "fc6": 0.09, "fc7": 0.09, "fc8": 0.25,
}  # fmt: skip

VGG16: list[Conv | Fc] = [
    *(Conv(f"conv1_{i}", 64, 3, pad=1, pool=i == 2) for i in (1, 2)),
    *(Conv(f"conv2_{i}", 128, 3, pad=1, pool=i == 2) for i in (1, 2)),
    *(Conv(f"conv3_{i}", 256, 3, pad=1, pool=i == 3) for i in (1, 2, 3)),
    *(Conv(f"conv4_{i}", 512, 3, pad=1, pool=i == 3) for i in (1, 2, 3)),
    *(Conv(f"conv5_{i}", 512, 3, pad=1, pool=i == 3) for i in (1, 2, 3)),
    Fc("fc6", 4096),
    Fc("fc7", 4096),
    Fc("fc8", 1000, relu=False),
]
# fc6/fc7 4% and fc8 23% as in the paper; conv densities are our choice, in the range the
# paper reports for VGG-16's convolutions (about 22-58%, 32% on average).
VGG16_DENSITY = {
    "conv1_1": 0.58, "conv1_2": 0.22, "conv2_1": 0.34, "conv2_2": 0.36, "conv3_1": 0.53,
    "conv3_2": 0.24, "conv3_3": 0.42, "conv4_1": 0.32, "conv4_2": 0.27, "conv4_3": 0.34,
    "conv5_1": 0.35, "conv5_2": 0.29, "conv5_3": 0.36, "fc6": 0.04, "fc7": 0.04, "fc8": 0.23,
}  # fmt: skip


def build(layers: list[Conv | Fc], pool_kernel: int, seed: int = 0) -> onnx.ModelProto:
    """A plain feed-forward net over float32 [N, 3, 224, 224]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x, channels, size, flat = "input", 3, 224, False

    def weight(name: str, shape: tuple[int, ...], fan_in: float) -> str:
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        inits.append(numpy_helper.from_array(w, name))
        return name

    for layer in layers:
        if isinstance(layer, Conv):
            cin = channels // layer.group
            w = weight(f"{layer.name}.weight", (layer.out, cin, layer.kernel, layer.kernel),
                       cin * layer.kernel**2)  # fmt: skip
            b = weight(f"{layer.name}.bias", (layer.out,), 1e6)
            nodes.append(helper.make_node(
                "Conv", [x, w, b], [layer.name], name=layer.name, group=layer.group,
                kernel_shape=[layer.kernel] * 2, strides=[layer.stride] * 2,
                pads=[layer.pad] * 4,
            ))  # fmt: skip
            size = (size + 2 * layer.pad - layer.kernel) // layer.stride + 1
            channels = layer.out
            nodes.append(helper.make_node("Relu", [layer.name], [f"{layer.name}.relu"]))
            x = f"{layer.name}.relu"
            if layer.pool:
                stride = 2
                nodes.append(helper.make_node(
                    "MaxPool", [x], [f"{layer.name}.pool"], kernel_shape=[pool_kernel] * 2,
                    strides=[stride] * 2,
                ))  # fmt: skip
                x = f"{layer.name}.pool"
                size = (size - pool_kernel) // stride + 1
        else:
            if not flat:
                nodes.append(helper.make_node("Flatten", [x], ["flat"]))
                x, channels, flat = "flat", channels * size * size, True
            w = weight(f"{layer.name}.weight", (layer.out, channels), channels)
            b = weight(f"{layer.name}.bias", (layer.out,), 1e6)
            nodes.append(helper.make_node("Gemm", [x, w, b], [layer.name], name=layer.name,
                                          transB=1))  # fmt: skip
            x, channels = layer.name, layer.out
            if layer.relu:
                nodes.append(helper.make_node("Relu", [x], [f"{x}.relu"]))
                x = f"{x}.relu"
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", channels])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def single_layer(layer: Conv | Fc, in_shape: list[int], seed: int = 0) -> onnx.ModelProto:
    """One Conv (input [N, C, H, W]) or one Gemm (input [N, K]), no activation."""
    rng = np.random.default_rng(seed)
    if isinstance(layer, Fc):
        k = in_shape[0]
        w = rng.standard_normal((layer.out, k), dtype=np.float32) / np.float32(np.sqrt(k))
        node = helper.make_node("Gemm", ["x", "W"], ["y"], name=layer.name, transB=1)
        x_shape: list[int | str] = ["N", k]
        y_shape: list[int | str] = ["N", layer.out]
    else:
        c, h, _ = in_shape
        cin = c // layer.group
        w = rng.standard_normal((layer.out, cin, layer.kernel, layer.kernel), dtype=np.float32)
        node = helper.make_node(
            "Conv", ["x", "W"], ["y"], name=layer.name, group=layer.group,
            kernel_shape=[layer.kernel] * 2, strides=[layer.stride] * 2, pads=[layer.pad] * 4,
        )  # fmt: skip
        out = (h + 2 * layer.pad - layer.kernel) // layer.stride + 1
        x_shape, y_shape = ["N", c, h, h], ["N", layer.out, out, out]
    graph = helper.make_graph(
        [node],
        layer.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# The kernel benchmarks: FC 4096x4096 at the three target densities, and AlexNet's conv2-5
# (their input shapes inside AlexNet) at the paper's densities.
LAYERS: list[tuple[Conv | Fc, list[int], float]] = [
    (Fc("fc4096_d09", 4096), [4096], 0.09),
    (Fc("fc4096_d04", 4096), [4096], 0.04),
    (Fc("fc4096_d25", 4096), [4096], 0.25),
    (Conv("alex_conv2", 256, 5, pad=2, group=2), [96, 27, 27], 0.38),
    (Conv("alex_conv3", 384, 3, pad=1), [256, 13, 13], 0.35),
    (Conv("alex_conv4", 384, 3, pad=1, group=2), [384, 13, 13], 0.37),
    (Conv("alex_conv5", 256, 3, pad=1, group=2), [384, 13, 13], 0.37),
]


def compile_one(model: onnx.ModelProto, out: Path, name: str, options: dc_onnx.CompileOptions,
                external: bool) -> None:  # fmt: skip
    suffix = "_unfused" if options.lower.keep_activations else ""
    dense = out / f"{name}.onnx"
    if external:  # protobuf refuses single files above 2 GB; VGG-16 is 553 MB, fine either way
        # onnx.save appends to an existing data file: a second run would double it.
        (out / f"{name}.weights").unlink(missing_ok=True)
        onnx.save(model, str(dense), save_as_external_data=True, location=f"{name}.weights")
    else:
        onnx.save(model, str(dense))
    start = time.perf_counter()
    result = dc_onnx.compile(dense, out / f"{name}{suffix}.dc.onnx", options)
    print(f"{name}{suffix}: compiled in {time.perf_counter() - start:.1f} s, "
          f"ratio {result.report.ratio or 0:.1f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/imagenet"))
    parser.add_argument("--only", default="layers,alexnet,vgg16")
    parser.add_argument("--keep-activations", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))

    def options(densities: dict[str, float]) -> dc_onnx.CompileOptions:
        # conv: 8-bit weights and indices, fc: 5-bit weights and indices (paper, Table 4).
        return dc_onnx.CompileOptions(
            prune=dc_onnx.PruneOptions(
                sparsity_per_layer={k: 1.0 - v for k, v in densities.items()}
            ),
            cluster=dc_onnx.ClusterOptions(bits_conv=8, bits_fc=5),
            lower=dc_onnx.LowerOptions(
                index_bits_conv=8, index_bits_fc=5, keep_activations=args.keep_activations
            ),
        )  # fmt: skip

    if "layers" in only:
        for layer, in_shape, density in LAYERS:
            model = single_layer(layer, in_shape)
            compile_one(model, args.out, layer.name, options({layer.name: density}), False)
    if "alexnet" in only:
        compile_one(build(ALEXNET, 3), args.out, "alexnet", options(ALEXNET_DENSITY), False)
    if "vgg16" in only:
        compile_one(build(VGG16, 2), args.out, "vgg16", options(VGG16_DENSITY), True)


if __name__ == "__main__":
    main()
