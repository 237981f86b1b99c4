"""The runtime under hostile attributes and inputs (issue 8): NaN/Inf inputs give the
dense model's IEEE results, oversized attributes fail with an error naming the layer
instead of a signal, and memory follows the streams, not the claimed weight_shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from test_kernel_paths import CONVS

from conftest import cnn_model, compile_model, make_model, mlp_model, run
from dc_onnx.tools.decompile import decode_model


def _with_non_finite(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x with about 3% of its entries replaced by NaN, +Inf or -Inf (at least one each)."""
    x = x.copy()
    flat = x.reshape(-1)
    where = rng.choice(flat.size, size=max(3, flat.size // 32), replace=False)
    flat[where] = np.resize(np.array([np.nan, np.inf, -np.inf], np.float32), where.size)
    return x


def _same_ieee(got: np.ndarray, want: np.ndarray) -> None:
    """Same NaN and +-Inf positions; finite values equal to float rounding."""
    assert np.isnan(got).sum() > 0 or np.isinf(got).sum() > 0  # the test reaches something
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 3, 20])  # sparse dots, then 16..64-column panels
def test_non_finite_inputs_through_gemm_and_matmul(tmp_path: Path, batch: int) -> None:
    # Every Gemm form (transA, C, alpha/beta) and MatMul with the weight on either side.
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.7)
    rng = np.random.default_rng(batch)
    x = _with_non_finite(rng.standard_normal((batch, 64)).astype(np.float32), rng)
    (want,) = run(decode_model(compiled), {"x": x})
    (got,) = run(compiled, {"x": x})
    _same_ieee(got, want)


def test_a_single_inf_gives_nan_only_where_its_weight_was_pruned(tmp_path: Path) -> None:
    w = np.array([[1, 0, 0], [0.5, 0.25, 0], [0, 0.75, 1], [0.25, 0, 0.5]], np.float32)
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], {"x": [1, 4]}, {"y": [1, 3]}, {"W": w})
    compiled = compile_model(model, tmp_path, quality=0, bits_fc=8)
    (y,) = run(compiled, {"x": np.array([[np.inf, 1, 1, 1]], np.float32)})
    assert np.isposinf(y[0, 0]) and np.isnan(y[0, 1:]).all()  # inf * 1; inf * 0 twice
    (y,) = run(compiled, {"x": np.array([[1, 1, 1, 1]], np.float32)})
    assert np.isfinite(y).all()


@pytest.mark.parametrize("conv", CONVS, ids=[str(c["shape"]) for c in CONVS])
def test_non_finite_inputs_through_conv(conv: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    rng = np.random.default_rng(3)
    shape = conv["shape"]
    group = conv.get("group", 1)
    attrs = {k: conv[k] for k in ("pads", "dilations", "strides", "auto_pad") if k in conv}
    w = rng.standard_normal(shape).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", group=group, **attrs)
    channels = shape[1] * group
    y_shape = ["N", shape[0], *(f"s{i}" for i in range(len(conv["hw"])))]
    model = make_model([node], {"x": ["N", channels, *conv["hw"]]}, {"y": y_shape}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=conv.get("sparsity", 0.6), bits_conv=8)
    x = _with_non_finite(rng.standard_normal((2, channels, *conv["hw"])).astype(np.float32), rng)
    (want,) = run(decode_model(compiled), {"x": x})
    (got,) = run(compiled, {"x": x})
    _same_ieee(got, want)


def _edit(compiled: Path, op_type: str, name: str, value: list[int], out: str) -> Path:
    """A copy of a compiled model beside it (same side file) with one attribute replaced."""
    model = onnx.load(str(compiled), load_external_data=False)
    node = next(n for n in model.graph.node if n.op_type == op_type)
    for a in [a for a in node.attribute if a.name == name]:
        node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))
    path = compiled.parent / out
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("name", "value"),
    [("strides", [2**62, 2**62]), ("dilations", [1, 2**40]), ("pads", [0, 0, 2**62, 0])],
)
def test_oversized_conv_attributes_are_refused(tmp_path: Path, name: str, value: list) -> None:  # type: ignore[type-arg]
    compiled = compile_model(cnn_model(), tmp_path, sparsity=0.7)
    edited = _edit(compiled, "CompressedConv", name, value, "edited.onnx")
    with pytest.raises(Exception, match=rf"layer 'conv1'.*{name} must be in"):
        run(edited, {"x": np.ones((1, 3, 8, 8), np.float32)})


def test_a_stride_beyond_the_input_runs_like_any_single_output_stride(tmp_path: Path) -> None:
    # One output per axis: the stride selects nothing, so 2^31-1 must give stride 9's result.
    w = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])
    model = make_model([node], {"x": [1, 2, 8, 8]}, {"y": [1, 4, 8, 8]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.7)
    x = np.random.default_rng(1).standard_normal((1, 2, 8, 8)).astype(np.float32)
    huge = _edit(compiled, "CompressedConv", "strides", [2**31 - 1, 2**31 - 1], "huge.onnx")
    nine = _edit(compiled, "CompressedConv", "strides", [9, 9], "nine.onnx")
    (got,) = run(huge, {"x": x})
    (want,) = run(nine, {"x": x})
    assert got.shape == (1, 4, 1, 1)
    np.testing.assert_array_equal(got, want)


def test_a_weight_shape_the_streams_cannot_reach_is_refused(tmp_path: Path) -> None:
    w = np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], {"x": ["N", 256]}, {"y": ["N", 16]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.9)  # relative indices, not dense
    edited = _edit(compiled, "CompressedMatMul", "weight_shape", [2**27, 1], "edited.onnx")
    with pytest.raises(Exception, match=r"layer 'mm'.*134217728 rows.*implicit zeros"):
        run(edited, {"x": np.ones((1, 1), np.float32)})


def test_the_decode_form_refuses_a_weight_shape_its_streams_cannot_reach(tmp_path: Path) -> None:
    # A dense layer takes the decode form (CompressedConstant before ORT's own Gemm): an
    # edited shape is refused from the stream sizes, before anything of that size exists.
    w = np.random.default_rng(0).standard_normal((16, 256)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="gemm", transB=1)
    model = make_model([node], {"x": ["N", 256]}, {"y": ["N", 16]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.0)
    edited = _edit(compiled, "CompressedConstant", "weight_shape", [2**27, 1], "edited.onnx")
    with pytest.raises(Exception, match=r"layer 'gemm'.*too short for 134217728 codes"):
        run(edited, {"x": np.ones((1, 256), np.float32)})


def test_a_few_implicit_trailing_rows_decode_as_zeros(tmp_path: Path) -> None:
    # Rows after the last stored weight are implicit zeros (docs/format.md): five more
    # rows than stored give five more outputs, all zero.
    w = np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], {"x": ["N", 256]}, {"y": ["N", 16]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.9)  # relative indices, not dense
    edited = _edit(compiled, "CompressedMatMul", "weight_shape", [21, 256], "edited.onnx")
    x = np.random.default_rng(1).standard_normal((2, 256)).astype(np.float32)
    (got,) = run(edited, {"x": x})
    (want,) = run(compiled, {"x": x})
    np.testing.assert_array_equal(got[:, :16], want)
    assert not got[:, 16:].any()
