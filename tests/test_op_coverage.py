"""Every form of the compute ops the compiler takes: Gemm with each transA / transB / alpha
/ beta / C broadcast, MatMul with the weight on either side and activations of any rank,
Conv 1-D (sparse kernels); Conv 3-D and ConvTranspose through the decode op. Each compiled
model is checked against the reference decoder (tight) and the original (8-bit, unpruned:
loose), and its weight streams against the weight."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from conftest import compile_model, make_model, run, stream_bytes
from dc_onnx.tools.decompile import decode_model

M, K, N = 5, 40, 24
# Dense-ish layers would take the decode form (lower's conv_dense_density and
# fc_dense_density): keep the kernels here, test_decode_form.py covers that choice.
KERNELS = {"conv_dense_density": 2.0, "fc_dense_density": 2.0}


def check(model: onnx.ModelProto, x: np.ndarray, tmp_path: Path, op: str | list[str]) -> None:
    """8-bit unpruned compile: the compressed op(s), streams below the weight's bytes, the
    decoder's bits up to float rounding, the original's values up to the codebook error."""
    weight_bytes = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    compiled = compile_model(model, tmp_path, quality=0.0, bits_fc=8, bits_conv=8, **KERNELS)
    ops = [n.op_type for n in onnx.load(str(compiled), load_external_data=False).graph.node]
    assert ops == ([op] if isinstance(op, str) else op)
    # A small layer's 8-bit codebook alone can outweigh it: codes and positions must not.
    assert stream_bytes(compiled, codebooks=False) < weight_bytes
    (actual,) = run(compiled, {"x": x})
    (decoded,) = run(decode_model(compiled), {"x": x})
    (expected,) = run(model, {"x": x})
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, decoded, rtol=1e-5, atol=1e-5)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, atol=0.03 * scale)


# C shapes ONNX Gemm broadcasts to [M, N]; None = no C.
C_SHAPES = [None, (), (1,), (N,), (1, N), (M, 1), (M, N)]
GEMMS = list(itertools.product([0, 1], [0, 1], C_SHAPES))


@pytest.mark.parametrize(("trans_a", "trans_b", "c_shape"), GEMMS)
def test_gemm_forms(
    trans_a: int, trans_b: int, c_shape: tuple[int, ...] | None, tmp_path: Path
) -> None:
    rng = np.random.default_rng(trans_a * 100 + trans_b * 10 + len(c_shape or ()))
    inits = {"W": (rng.standard_normal((N, K) if trans_b else (K, N)) * 0.2).astype(np.float32)}
    if c_shape is not None:
        inits["C"] = rng.standard_normal(c_shape).astype(np.float32)
    alpha, beta = (0.5, -2.0) if trans_a == trans_b else (1.0, 1.0)
    node = helper.make_node(
        "Gemm",
        ["x", *inits],
        ["y"],
        name="fc",
        transA=trans_a,
        transB=trans_b,
        alpha=alpha,
        beta=beta,
    )
    x_shape = (K, M) if trans_a else (M, K)
    model = make_model([node], {"x": list(x_shape)}, {"y": [M, N]}, inits)
    check(model, rng.standard_normal(x_shape).astype(np.float32), tmp_path, "CompressedGemm")


@pytest.mark.parametrize("rows", [1, 3, 4, 9])
def test_gemm_trans_a_every_row_count(rows: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(rows)
    inits = {"W": (rng.standard_normal((K, N)) * 0.2).astype(np.float32)}
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transA=1, alpha=1.5)
    model = make_model([node], {"x": [K, "M"]}, {"y": ["M", N]}, inits)
    check(model, rng.standard_normal((K, rows)).astype(np.float32), tmp_path, "CompressedGemm")


# (x shape, weight first): X @ W with X of rank 1..4, and W @ X with X of rank 1..4.
MATMULS = [
    ((K,), False),
    ((3, K), False),
    ((2, 3, K), False),
    ((2, 1, 6, K), False),
    ((K,), True),
    ((K, 7), True),
    ((2, K, 7), True),
    ((2, 3, K, 1), True),
]


@pytest.mark.parametrize(("x_shape", "weight_first"), MATMULS, ids=str)
def test_matmul_forms(x_shape: tuple[int, ...], weight_first: bool, tmp_path: Path) -> None:
    rng = np.random.default_rng(len(x_shape) + 10 * weight_first)
    w = (rng.standard_normal((N, K) if weight_first else (K, N)) * 0.2).astype(np.float32)
    inputs = ["W", "x"] if weight_first else ["x", "W"]
    node = helper.make_node("MatMul", inputs, ["y"], name="mm")
    if not weight_first:
        y_shape = [*x_shape[:-1], N]
    else:
        y_shape = [N] if len(x_shape) == 1 else [*x_shape[:-2], N, x_shape[-1]]
    model = make_model([node], {"x": list(x_shape)}, {"y": y_shape}, {"W": w})
    check(model, rng.standard_normal(x_shape).astype(np.float32), tmp_path, "CompressedMatMul")


@pytest.mark.parametrize("bias", [False, True])
def test_conv1d(bias: bool, tmp_path: Path) -> None:
    rng = np.random.default_rng(int(bias))
    inits = {"W": (rng.standard_normal((32, 8, 5)) * 0.3).astype(np.float32)}
    if bias:
        inits["B"] = rng.standard_normal(32).astype(np.float32)
    node = helper.make_node(
        "Conv", ["x", *inits], ["y"], name="conv", strides=[2], pads=[2, 1], dilations=[2]
    )
    model = make_model([node], {"x": ["N", 8, 50]}, {"y": ["N", 32, "L"]}, inits)
    check(model, rng.standard_normal((2, 8, 50)).astype(np.float32), tmp_path, "CompressedConv")


# Conv 3-D and ConvTranspose have no sparse kernel: ORT's own op reads the decoded weight.
DECODED = [
    ("Conv", (16, 4, 3, 3, 3), (2, 8, 6, 7, 5), dict(group=2, pads=[1, 0, 1, 1, 0, 1])),
    ("ConvTranspose", (16, 8, 4), (2, 16, 9), dict(strides=[2], pads=[1, 1])),
    ("ConvTranspose", (16, 4, 3, 3), (1, 16, 5, 6), dict(strides=[2, 1], group=2)),
    (
        "ConvTranspose",
        (8, 4, 3, 3, 3),
        (1, 8, 3, 4, 5),
        dict(output_padding=[1, 0, 0], strides=[2, 1, 1]),
    ),
]


@pytest.mark.parametrize(("op", "w_shape", "x_shape", "attrs"), DECODED, ids=lambda v: str(v))
@pytest.mark.parametrize("bias", [False, True])
def test_decoded_convolutions(
    op: str,
    w_shape: tuple[int, ...],
    x_shape: tuple[int, ...],
    attrs: dict[str, list[int] | int],
    bias: bool,
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(len(w_shape) + int(bias))
    inits = {"W": (rng.standard_normal(w_shape) * 0.3).astype(np.float32)}
    if bias:
        group = attrs.get("group", 1)
        assert isinstance(group, int)
        out = w_shape[0] if op == "Conv" else w_shape[1] * group
        inits["B"] = rng.standard_normal(out).astype(np.float32)
    node = helper.make_node(op, ["x", *inits], ["y"], name="conv", **attrs)
    y_shape = ["N", "C", *(f"s{i}" for i in range(len(x_shape) - 2))]
    model = make_model([node], {"x": ["N", *x_shape[1:]]}, {"y": y_shape}, inits)
    check(
        model, rng.standard_normal(x_shape).astype(np.float32), tmp_path, ["CompressedConstant", op]
    )


def test_decoded_convolution_is_pruned_as_a_layer(tmp_path: Path) -> None:
    w = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="deconv")
    model = make_model([node], {"x": [1, 8, 5, 5]}, {"y": [1, 8, 7, 7]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.75)
    decoded = decode_model(compiled)
    weight = numpy_helper.to_array(next(t for t in decoded.graph.initializer if t.name == "W"))
    assert np.count_nonzero(weight) == w.size // 4
    x = np.random.default_rng(1).standard_normal((1, 8, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(
        run(compiled, {"x": x})[0], run(decoded, {"x": x})[0], rtol=1e-5, atol=1e-5
    )


def test_conv_attributes_that_would_overflow_fail_cleanly(tmp_path: Path) -> None:
    w = np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", strides=[2**40, 1])
    model = make_model([node], {"x": [1, 3, 4, 4]}, {"y": [1, 4, 1, 4]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.6, **KERNELS)  # 5 of 12 weights left
    x = np.ones((1, 3, 4, 4), dtype=np.float32)
    with pytest.raises(Exception, match="strides must be in") as err:
        run(compiled, {"x": x})
    assert "layer 'conv'" in str(err.value)


def test_a_stride_beyond_the_input_gives_the_dense_result(tmp_path: Path) -> None:
    # One output per axis: the sparse path plans with stride 1 there, so 2^31-1 runs
    # (test_runtime_hardening.py checks the same against stride 9).
    w = np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", strides=[2**31 - 1] * 2)
    model = make_model([node], {"x": [1, 3, 4, 4]}, {"y": [1, 4, 1, 1]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.6, **KERNELS)
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    (got,) = run(compiled, {"x": x})
    (want,) = run(decode_model(compiled), {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
