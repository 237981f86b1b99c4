"""Shared helpers: tiny hand-built models and ORT sessions with the custom-op library."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import dc_onnx

# Batch-1 FC layers in the grouped form on every CPU (the rule the kernel and format
# tests were written against, like the pinned densities below); the block form, which the
# library picks on AVX-512 CPUs, has its own tests (test_block_rows.py, in subprocesses).
# Read once, when the custom-op library first packs a weight; set here whatever the
# caller's environment says, since the tests' expected bits depend on it.
os.environ["DC_ONNX_BLOCK_ROWS"] = "0"

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
DATA = Path(__file__).resolve().parent / "data"


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, Sequence[int | str]],
    outputs: dict[str, Sequence[int | str] | None],
    initializers: dict[str, np.ndarray],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def run(path: Path | onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int = 1) -> list[Any]:
    """Outputs of a model (compiled or not) in ORT with the custom-op library registered."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    source = path.SerializeToString() if isinstance(path, onnx.ModelProto) else str(path)
    session = dc_onnx.InferenceSession(source, options)
    return session.run(None, feeds)


def mlp_model(seed: int = 0) -> onnx.ModelProto:
    """Gemm in all its forms plus MatMul with the weight on either side."""
    rng = np.random.default_rng(seed)
    w = {
        "W1": rng.standard_normal((64, 48)) * 0.2,  # Gemm, transB=0
        "b1": rng.standard_normal(48),
        "W2": rng.standard_normal((32, 48)) * 0.2,  # Gemm, transB=1, alpha, beta, C [1, N]
        "b2": rng.standard_normal((1, 32)),
        "W3": rng.standard_normal((32, 24)) * 0.2,  # MatMul X @ W
        "W4": rng.standard_normal((16, 24)) * 0.2,  # Gemm transA: A' = (X W3)^T^T
        "W5": rng.standard_normal((8, 16)) * 0.2,  # MatMul W @ X
    }
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["g1"], name="fc1"),
        helper.make_node("Relu", ["g1"], ["r1"]),
        helper.make_node(
            "Gemm", ["r1", "W2", "b2"], ["g2"], name="fc2", transB=1, alpha=0.7, beta=1.3
        ),
        helper.make_node("MatMul", ["g2", "W3"], ["m3"], name="fc3"),
        helper.make_node("Transpose", ["m3"], ["t3"], perm=[1, 0]),
        helper.make_node("Gemm", ["t3", "W4"], ["g4"], name="fc4", transA=1, transB=1),
        helper.make_node("Transpose", ["g4"], ["t4"], perm=[1, 0]),
        helper.make_node("MatMul", ["W5", "t4"], ["y"], name="fc5"),
    ]
    inits = {k: v.astype(np.float32) for k, v in w.items()}
    return make_model(nodes, {"x": ["N", 64]}, {"y": [8, "N"]}, inits)


def cnn_model(seed: int = 0) -> onnx.ModelProto:
    """Conv 2-D grouped/strided/padded/dilated, auto_pad, a 1-D conv, then a Gemm head."""
    rng = np.random.default_rng(seed)
    inits = {
        "C1": rng.standard_normal((8, 3, 3, 3)) * 0.3,
        "c1": rng.standard_normal(8),
        "C2": rng.standard_normal((12, 2, 3, 3)) * 0.3,  # group=4
        "C3": rng.standard_normal((6, 12, 3, 3)) * 0.3,  # SAME_UPPER, strided
        "c3": rng.standard_normal(6),
        "C4": rng.standard_normal((4, 6, 3)) * 0.3,  # 1-D after reshape
        "shape1d": np.array([0, 6, -1], dtype=np.int64),
        "W": rng.standard_normal((4 * 3, 10)) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "C1", "c1"], ["a1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node(
            "Conv",
            ["r1", "C2"],
            ["a2"],
            name="conv2",
            group=4,
            strides=[2, 1],
            pads=[0, 1, 2, 1],
            dilations=[1, 2],
        ),
        helper.make_node(
            "Conv",
            ["a2", "C3", "c3"],
            ["a3"],
            name="conv3",
            strides=[2, 2],
            auto_pad="SAME_UPPER",
        ),
        helper.make_node("Reshape", ["a3", "shape1d"], ["s1"]),
        helper.make_node(
            "Conv", ["s1", "C4"], ["a4"], name="conv4", strides=[2], auto_pad="SAME_LOWER"
        ),
        helper.make_node("Flatten", ["a4"], ["f"]),
        helper.make_node("Gemm", ["f", "W"], ["y"], name="fc"),
    ]
    inits = {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in inits.items()}
    model = make_model(nodes, {"x": ["N", 3, 8, 8]}, {"y": ["N", 10]}, inits)
    return model


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def shared_weights_model(steps: int = 4) -> onnx.ModelProto:
    """An unrolled recurrent cell: one MatMul weight read at every step, one Conv weight
    read by two Convs (one of them SAME-padded: the sparse path) and one Gather table
    read twice."""
    rng = np.random.default_rng(7)
    nodes = []
    h = "x"
    for i in range(steps):
        nodes.append(helper.make_node("MatMul", [h, "W"], [f"m{i}"], name=f"cell{i}"))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i}"]))
        h = f"h{i}"
    nodes += [
        helper.make_node("Conv", ["img", "K"], ["c0"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c0", "K"], ["c1"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Gather", ["T", "ids"], ["e0"], name="embed_a"),
        helper.make_node("Gather", ["T", "ids2"], ["e1"], name="embed_b"),
    ]
    model = make_model(
        nodes,
        {"x": [2, 64], "img": [1, 8, 6, 6], "ids": [5], "ids2": [5]},
        {h: [2, 64], "c1": [1, 8, 6, 6], "e0": [5, 32], "e1": [5, 32]},
        {
            "W": (rng.standard_normal((64, 64)) * 0.2).astype(np.float32),
            "K": (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32),
            "T": rng.standard_normal((300, 32)).astype(np.float32),
        },
    )
    for value in model.graph.input[2:]:
        value.type.tensor_type.elem_type = TensorProto.INT64  # the Gathers' indices
    return model


def compile_model(
    model: onnx.ModelProto, out_dir: Path, name: str = "model", **options: Any
) -> Path:
    """Save `model` to out_dir, compile it there, return the compiled model's path.

    The test models' layers are tiny, and by default a layer that small runs as ORT's
    own op from 10% non-zero (FC, `fc_dense_threshold`), or at any density (a Conv with
    fewer than 16 outputs per image, `conv_dense_threshold`): the tests of kernels and
    formats get fixed thresholds of 70% and 35% instead unless they pass
    `fc_dense_density` / `conv_dense_density` (None: the defaults; test_decode_form.py
    covers them)."""
    options.setdefault("fc_dense_density", 0.7)
    options.setdefault("conv_dense_density", 0.35)
    source = save(model, out_dir / f"{name}.onnx")
    output = out_dir / f"{name}.dc.onnx"
    dc_onnx.compile(source, output, dc_onnx.CompileOptions(**options))
    return output


def lower_only(model: onnx.ModelProto, out_dir: Path, index_bits: int = 5) -> Path:
    """Encode a model whose weights already have <= 256 values, nothing else changed."""
    import onnx_ir as ir

    from dc_onnx.passes.lower import LowerOptions, LowerPass
    from dc_onnx.pipeline import run_passes
    from dc_onnx.writer import save_compiled

    compiled, _ = run_passes(
        ir.from_proto(model), [LowerPass(LowerOptions(index_bits, index_bits))]
    )
    output = out_dir / "lowered.dc.onnx"
    save_compiled(compiled, output)
    return output


def stream_bytes(compiled: Path, codebooks: bool = True) -> int:
    """Bytes of the compressed streams (codebook, codes, gaps, lengths, scales) of every
    layer, from the side file's TOC; without the codebooks if asked."""
    from dc_onnx.codecs.container import StreamKind, parse_header
    from dc_onnx.io import side_file_of

    side = side_file_of(compiled)
    assert side is not None
    toc = parse_header(side.read_bytes())
    return sum(e.nbytes for e in toc if codebooks or e.kind != StreamKind.CODEBOOK)
