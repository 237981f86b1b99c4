"""Integer (already-quantized) weights under the error budget: fewer distinct values, the
graph around them unchanged (dc_onnx.qparams, dc_onnx.requantize, dc_onnx.budget.integer,
passes/requantize.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import dc_onnx
from conftest import run, save
from dc_onnx.budget.candidates import LAYER_OVERHEAD
from dc_onnx.budget.integer import IntegerSizes, sizes_and_perturbations
from dc_onnx.integer_sharing import ERRORS
from dc_onnx.layers import annotate, find_stored_weights
from dc_onnx.options import LowerOptions
from dc_onnx.passes.lower import LowerPass
from dc_onnx.passes.requantize import RequantizePass
from dc_onnx.pipeline import run_passes
from dc_onnx.qparams import QuantParams, read_params
from dc_onnx.requantize import entropy_bits, requantize
from dc_onnx.tools.decompile import decode_model

RNG = np.random.default_rng(11)


def _per_channel_int8(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """A float weight quantized symmetrically per column: (int8 values, scales [cols])."""
    w = RNG.standard_normal((rows, cols)) * RNG.uniform(0.02, 0.2, size=cols)
    scale = np.abs(w).max(axis=0) / 127
    return np.round(w / scale).astype(np.int8), scale.astype(np.float32)


def _model(
    nodes: list[onnx.NodeProto], inputs: list, outputs: list, inits: list
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "int8", inputs, outputs, inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    return model


def cast_mul_qdq() -> onnx.ModelProto:
    """int8 -> Cast -> Mul(per-column scale) -> MatMul, then Relu, then a per-axis
    DequantizeLinear -> MatMul: the two ways float models keep int8 weights."""
    w1, s1 = _per_channel_int8(128, 256)
    w2, s2 = _per_channel_int8(256, 64)
    nodes = [
        helper.make_node("Cast", ["W1_q"], ["W1_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["W1_f", "W1_scale"], ["W1"]),
        helper.make_node("MatMul", ["x", "W1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("DequantizeLinear", ["W2_q", "W2_scale", "W2_zero"], ["W2"], axis=1),
        helper.make_node("MatMul", ["r", "W2"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(w1, "W1_q"),
        numpy_helper.from_array(s1.reshape(1, -1), "W1_scale"),
        numpy_helper.from_array(w2, "W2_q"),
        numpy_helper.from_array(s2, "W2_scale"),
        numpy_helper.from_array(np.zeros(64, np.int8), "W2_zero"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        inits,
    )


def matmul_integer_u8() -> onnx.ModelProto:
    """MatMulInteger with an asymmetric uint8 weight (zero point 128), as dynamic
    quantization to uint8 leaves it."""
    b = np.clip(np.round(RNG.standard_normal((128, 256)) * 20) + 128, 0, 255).astype(np.uint8)
    nodes = [helper.make_node("MatMulInteger", ["a", "B_q", "a_zero", "B_zero"], ["y"])]
    inits = [
        numpy_helper.from_array(b, "B_q"),
        numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
        numpy_helper.from_array(np.array(128, np.uint8), "B_zero"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("a", TensorProto.UINT8, ["N", 128])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 256])],
        inits,
    )


def _feeds(model: onnx.ModelProto, n: int = 64) -> dict[str, np.ndarray]:
    name = model.graph.input[0].name
    if name == "a":
        return {"a": RNG.integers(0, 256, size=(n, 128)).astype(np.uint8)}
    return {"x": RNG.standard_normal((n, 128)).astype(np.float32)}


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    diff = actual.astype(np.float64) - expected.astype(np.float64)
    return float(np.linalg.norm(diff) / np.linalg.norm(expected.astype(np.float64)))


def _compile(
    model: onnx.ModelProto, tmp_path: Path, tag: str, **options: object
) -> tuple[Path, dc_onnx.CompileResult, dict[str, np.ndarray]]:
    source = save(model, tmp_path / "model.onnx")
    feeds = _feeds(model)
    data = tmp_path / "calibration.npz"
    np.savez(data, **feeds)
    output = tmp_path / f"{tag}.dc.onnx"
    max_error = options.pop("max_error", None)
    budget = dc_onnx.BudgetOptions(max_error=max_error, calibration=str(data))  # type: ignore[arg-type]
    opts = dc_onnx.CompileOptions(budget=budget, **options)  # type: ignore[arg-type]
    return output, dc_onnx.compile(source, output, opts), feeds


def _lossless(model: onnx.ModelProto, tmp_path: Path) -> int:
    """Bytes of the manual-mode compile, which codes integer weights losslessly."""
    _, result, _ = _compile(model, tmp_path, "lossless", quality=0.0)
    return result.report.compressed_bytes


def _initializers(path: Path | onnx.ModelProto) -> dict[str, np.ndarray]:
    model = path if isinstance(path, onnx.ModelProto) else onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


# --- reading zero points and scales off the readers -------------------------------------


def _weight(model: onnx.ModelProto, name: str) -> ir.Value:
    return ir.from_proto(model).graph.initializers[name]


def test_zero_point_and_scale_come_from_each_reader() -> None:
    model = cast_mul_qdq()
    cast = read_params(_weight(model, "W1_q"))
    assert cast.source == "Cast->Mul" and cast.per_tensor_zero == 0
    assert cast.scale.shape == (1, 256)
    qdq = read_params(_weight(model, "W2_q"))
    assert qdq.source == "DequantizeLinear" and qdq.per_tensor_zero == 0
    assert qdq.scale.shape == (1, 64)  # axis 1 of a [256, 64] weight
    mmi = read_params(_weight(matmul_integer_u8(), "B_q"))
    assert mmi.source == "MatMulInteger" and mmi.per_tensor_zero == 128


def test_per_channel_zero_points_and_unknown_readers() -> None:
    w = RNG.integers(0, 256, size=(8, 4, 3, 3)).astype(np.uint8)
    zero = np.arange(8, dtype=np.uint8) + 120
    conv = _model(
        [helper.make_node("ConvInteger", ["x", "W", "", "zero"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(zero, "zero")],
    )
    params = read_params(_weight(conv, "W"))
    assert params.zero_point is not None and params.zero_point.shape == (8, 1, 1, 1)
    assert params.per_tensor_zero is None
    # A table gathered before it is dequantized: what 0 means is decided elsewhere.
    table = _model(
        [helper.make_node("Gather", ["T", "i"], ["g"])],
        [helper.make_tensor_value_info("i", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("g", TensorProto.INT8, None)],
        [numpy_helper.from_array(RNG.integers(-127, 128, (64, 8)).astype(np.int8), "T")],
    )
    assert read_params(_weight(table, "T")).zero_point is None


# --- the array math ---------------------------------------------------------------------


def test_requantize_prunes_to_the_zero_point_and_shares_integers() -> None:
    q = np.clip(np.round(RNG.standard_normal((64, 64)) * 25) + 128, 0, 255).astype(np.uint8)
    params = QuantParams(np.array([[128]]), np.ones((1, 1)), "test")
    out = requantize(q, params, 3, 0.5)
    assert out.dtype == np.uint8 and out.shape == q.shape
    assert np.count_nonzero(out == 128) >= 0.5 * q.size  # pruned means the zero point
    pruned = requantize(q, params, None, 0.5)
    # 3 bits: sharing adds at most ERRORS[3] of the weight's norm, for fewer bits.
    added = np.linalg.norm(out.astype(float) - pruned)
    assert 0 < added <= ERRORS[3] * np.linalg.norm(q.astype(float) - 128)
    assert entropy_bits(out) < 0.9 * entropy_bits(pruned)
    assert np.unique(out).size < np.unique(pruned).size
    # Pruning alone: the weights set to the zero point are those nearest it.
    alone = requantize(q, params, None, 0.5)
    steps = np.abs(q.astype(int) - 128)
    assert steps[alone != q].max() <= steps[alone != 128].min()
    assert np.count_nonzero(alone == 128) == round(0.5 * q.size)
    # 8 bits keep every value: the lossless setting.
    assert np.array_equal(requantize(q, params, 8, 0.0), q)


def test_per_channel_zero_points_and_scales_are_honoured() -> None:
    q = RNG.integers(-100, 101, size=(2, 4096)).astype(np.int8)
    zero = np.array([[0], [10]])
    pruned = requantize(q, QuantParams(zero, np.ones((1, 1)), "test"), None, 0.3)
    changed = pruned != q
    rows = np.nonzero(changed)[0]
    assert set(pruned[changed][rows == 0]) == {0} and set(pruned[changed][rows == 1]) == {10}
    # A row of narrow values with 100x the scale weighs 10^4 times as much: the shared
    # integers crowd into its range instead of spreading over the wide row's.
    q[1] = RNG.integers(-10, 11, size=4096)
    scale = np.array([[1.0], [100.0]])
    weighted = requantize(q, QuantParams(np.zeros((1, 1)), scale, "test"), 2, 0.0)
    plain = requantize(q, QuantParams(np.zeros((1, 1)), np.ones((1, 1)), "test"), 2, 0.0)

    def error(out: np.ndarray) -> float:
        return float(np.sum(((out.astype(float) - q) * scale) ** 2))

    assert error(weighted) < 0.5 * error(plain)


def test_unknown_zero_point_is_shared_but_never_pruned() -> None:
    q = RNG.integers(-127, 128, size=(32, 32)).astype(np.int8)
    unknown = QuantParams(None, np.ones(1), "unknown")
    assert entropy_bits(requantize(q, unknown, 4, 0.0)) < 0.9 * entropy_bits(q)
    with pytest.raises(ValueError, match="zero point is unknown"):
        requantize(q, unknown, 4, 0.5)


# --- sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("builder", [cast_mul_qdq, matmul_integer_u8])
def test_integer_size_estimates_match_real_encodes(builder) -> None:  # type: ignore[no-untyped-def]
    model = ir.from_proto(builder())
    weights = [w for w in find_stored_weights(model.graph, 4096) if w.kind == "integer"]
    assert weights
    estimates = {}
    for weight, (s, b) in zip(weights, [(0.5, 4), (0.0, 6)], strict=False):
        sizes, bits_x, sparsity_x = sizes_and_perturbations(weight, weight.array())
        assert isinstance(sizes, IntegerSizes) and bits_x[8] == 0.0 and bits_x[3] > bits_x[5]
        assert sparsity_x[0.5] > sparsity_x[0.1] > 0
        setting = sizes.setting(s, b)
        estimates[weight.name] = sizes.bytes(setting)
        assert sizes.bytes(setting) < sizes.dense_bytes < weight.array().nbytes
        annotate(weight.weight, sparsity=s, bits=b, index_bits=setting.index_bits)
    _, records = run_passes(model, [RequantizePass(), LowerPass(LowerOptions())])
    for name, stats in records[-1].stats.layers.items():
        k = stats.codebook_size
        real = stats.codes_bytes + stats.gaps_bytes + 2 * k + (1 << stats.index_bits)
        assert estimates[name] - LAYER_OVERHEAD == pytest.approx(real, rel=0.02), name


# --- end to end -------------------------------------------------------------------------


@pytest.mark.parametrize("builder", [cast_mul_qdq, matmul_integer_u8])
def test_budget_requantizes_integer_weights_within_budget(builder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = builder()
    lossless = _lossless(model, tmp_path)
    original = _initializers(model)
    for max_error in (None, 0.05):  # the default 1%, and a budget that allows more
        compiled, result, feeds = _compile(model, tmp_path, f"e{max_error}", max_error=max_error)
        limit = max_error or 0.01
        assert result.report.within_budget and result.report.error is not None
        assert result.report.error["relative_l2"] <= limit
        (expected,) = run(model, feeds)
        (actual,) = run(compiled, feeds)
        assert actual.dtype == expected.dtype
        assert _relative_error(actual, expected) <= limit * 1.001
        # The graph around the weights is as it was: same ops, scales and zero points.
        decoded = decode_model(compiled)
        ops = [n.op_type for n in decoded.graph.node]
        assert ops == [n.op_type for n in model.graph.node]
        values = _initializers(decoded)
        for name, before in original.items():
            after = values[name]
            assert after.dtype == before.dtype and after.shape == before.shape
            if before.size < 4096:  # scales and zero points
                assert np.array_equal(after, before), name
        if max_error == 0.05:
            assert result.report.compressed_bytes < 0.9 * lossless
            stats = next(r.stats for r in result.report.passes if r.name == "requantize")
            assert stats["layers"], "no integer weight was requantized at 5%"
            for name, layer in stats["layers"].items():
                assert layer["values"][1] < layer["values"][0], name


def test_a_tiny_budget_keeps_integer_weights_lossless(tmp_path: Path) -> None:
    model = cast_mul_qdq()
    compiled, result, feeds = _compile(model, tmp_path, "tiny", max_error=1e-9)
    (expected,) = run(model, feeds)
    (actual,) = run(compiled, feeds)
    assert np.array_equal(actual, expected)
    values = _initializers(decode_model(compiled))
    for name, before in _initializers(model).items():
        assert np.array_equal(values[name], before), name
    assert not result.report.kept_dense  # coded losslessly, not left as they were
    assert {layer.name for layer in result.report.layers} == {"W1_q", "W2_q"}


def test_analyze_shows_an_integer_table_without_a_zero_point(tmp_path: Path) -> None:
    """A table gathered before it is dequantized: shared only, its sparsity curve empty,
    in the table, the JSON and the allocation alike."""
    from dc_onnx.tools.analyze import analyze_model

    table = np.clip(np.round(RNG.standard_normal((512, 64)) * 30), -127, 127).astype(np.int8)
    model = _model(
        [
            helper.make_node("Gather", ["T", "ids"], ["g"]),
            helper.make_node("Cast", ["g"], ["y"], to=TensorProto.FLOAT),
        ],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 64])],
        [numpy_helper.from_array(table, "T")],
    )
    source = save(model, tmp_path / "table.onnx")
    analysis = analyze_model(source)
    (layer,) = analysis.layers
    assert layer.group.kind == "integer" and set(layer.sparsity_error) == {0.0}
    assert layer.bits.measured and all(s == 0.0 for s in layer.sparsity.measured)
    assert all(setting.sparsity == 0.0 for setting, _ in layer.candidates())
    text = analysis.format_table()
    assert "T" in text.splitlines()[2] and text.splitlines()[2].rstrip().endswith("-")
    assert all(key.startswith("s=0,") for key in layer.to_json()["bytes"])
    output = tmp_path / "table.dc.onnx"
    result = dc_onnx.compile(source, output, dc_onnx.CompileOptions())
    assert result.report.within_budget
    decoded = _initializers(decode_model(output))["T"]
    assert decoded.dtype == np.int8 and np.unique(decoded).size <= np.unique(table).size
