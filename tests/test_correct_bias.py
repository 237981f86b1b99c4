"""Empirical bias correction (dc_onnx/passes/correct_bias.py): each corrected layer's
output mean per channel is the original's again, biases are added where a layer has none,
shared ones are left alone, and a compiled model's error goes down; manual mode only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper

import dc_onnx
from conftest import make_model, save
from dc_onnx.budget.calibration import Calibration
from dc_onnx.budget.simulate import plain_session, self_contained
from dc_onnx.passes import correct_bias
from dc_onnx.passes.correct_bias import BiasCorrection, CorrectBiasPass
from dc_onnx.recipes import build_passes

SAMPLES = 40


@pytest.fixture(autouse=True)
def _few_values_suffice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Gemm and MatMul see one vector a sample: SAMPLES values per channel."""
    monkeypatch.setattr(correct_bias, "MIN_VALUES_PER_CHANNEL", SAMPLES)


def _model(seed: int = 0):  # type: ignore[no-untyped-def]
    """Conv without bias -> Conv with one -> two Convs sharing a bias -> pooled ->
    Gemm (beta 0.5, C) and MatMul + Add: every kind of target, and one to leave alone."""
    rng = np.random.default_rng(seed)
    w = {
        "Ca": rng.standard_normal((16, 4, 3, 3)) * 0.3,
        "Cb": rng.standard_normal((16, 16, 3, 3)) * 0.1,
        "bb": rng.standard_normal(16) * 0.1,
        "Cc": rng.standard_normal((16, 16, 1, 1)) * 0.2,
        "Cd": rng.standard_normal((16, 16, 1, 1)) * 0.2,
        "shared": rng.standard_normal(16) * 0.1,
        "G": rng.standard_normal((10, 16)) * 0.3,
        "gc": rng.standard_normal(10) * 0.1,
        "M": rng.standard_normal((16, 8)) * 0.3,
        "mb": rng.standard_normal(8) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "Ca"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("Conv", ["ar", "Cb", "bb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["br"]),
        helper.make_node("Conv", ["br", "Cc", "shared"], ["c"], name="conv_c"),
        helper.make_node("Conv", ["br", "Cd", "shared"], ["d"], name="conv_d"),
        helper.make_node("Add", ["c", "d"], ["cd"]),
        helper.make_node("GlobalAveragePool", ["cd"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "G", "gc"], ["y1"], name="gemm", transB=1, beta=0.5),
        helper.make_node("MatMul", ["f", "M"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "mb"], ["y2"]),
    ]
    inits = {k: v.astype(np.float32) for k, v in w.items()}
    return make_model(nodes, {"x": ["n", 4, 12, 12]}, {"y1": ["n", 10], "y2": ["n", 8]}, inits)


def _calibration(seed: int = 1) -> Calibration:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((SAMPLES, 4, 12, 12)) + 0.5).astype(np.float32)
    return Calibration([{"x": x}], "file", "test inputs")


def _means(model: ir.Model, outputs: list[str], calibration: Calibration) -> list[np.ndarray]:
    proto = self_contained(model)
    for name in outputs:
        proto.graph.output.append(helper.make_tensor_value_info(name, 1, None))
    values = plain_session(proto.SerializeToString()).run(outputs, calibration.batches[0])
    return [_channel_means(v, 1 if v.ndim == 4 else -1) for v in values]


def _channel_means(value: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(value, axis, -1)
    return moved.reshape(-1, moved.shape[-1]).mean(0)


def _round(model: ir.Model, step: float) -> None:
    """Every weight of a layer rounded to a coarse grid: outputs' means move."""
    for name in ("Ca", "Cb", "Cc", "Cd", "G", "M"):
        value = model.graph.initializers[name]
        assert value.const_value is not None
        array = value.const_value.numpy()
        value.const_value = ir.tensor((np.round(array / step) * step).astype(np.float32))


def test_corrected_layers_get_the_original_means_back() -> None:
    calibration = _calibration()
    model = ir.from_proto(_model())
    correction = BiasCorrection(calibration)
    correction.record(model)
    corrected = {t.node: t.output for t in correction.targets}
    assert set(corrected) == {"conv_a", "conv_b", "gemm", "matmul"}
    assert set(correction.left_out) == {"conv_c", "conv_d"}  # their bias is shared
    outputs = list(corrected.values())
    reference = _means(model, outputs, calibration)
    shared_before = model.graph.initializers["shared"].const_value.numpy().copy()
    _round(model, 0.25)
    moved = _means(model, outputs, calibration)
    assert max(np.abs(r - m).max() for r, m in zip(reference, moved, strict=True)) > 1e-2

    stats = CorrectBiasPass(correction)(model)
    assert stats.modified
    after = _means(model, outputs, calibration)
    for r, a in zip(reference, after, strict=True):
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5)
    # conv_a had no bias and has one now; the shared one is as it was.
    conv_a = next(n for n in model.graph if n.name == "conv_a")
    assert len(conv_a.inputs) == 3 and conv_a.inputs[2] is not None
    assert conv_a.inputs[2].const_value is not None
    np.testing.assert_array_equal(
        model.graph.initializers["shared"].const_value.numpy(), shared_before
    )


def test_layers_with_few_values_per_channel_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Gemm and MatMul see one vector per sample: below the bound here."""
    monkeypatch.setattr(correct_bias, "MIN_VALUES_PER_CHANNEL", SAMPLES + 1)
    monkeypatch.setattr(correct_bias, "MIN_SAMPLES", SAMPLES + 1)
    correction = BiasCorrection(_calibration())
    correction.record(ir.from_proto(_model()))
    assert {t.node for t in correction.targets} == {"conv_a", "conv_b"}
    assert correction.left_out["gemm"] == f"{SAMPLES} output values per channel, {SAMPLES} samples"
    # With many inputs, fewer values suffice.
    monkeypatch.setattr(correct_bias, "MIN_SAMPLES", SAMPLES)
    correction = BiasCorrection(_calibration())
    correction.record(ir.from_proto(_model()))
    assert {t.node for t in correction.targets} == {"conv_a", "conv_b", "gemm", "matmul"}


def test_too_few_samples_are_named_with_what_would_lift_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Left out for want of samples: the one case a user can fix, so the log says how."""
    monkeypatch.setattr(correct_bias, "MIN_VALUES_PER_CHANNEL", SAMPLES + 1)
    monkeypatch.setattr(correct_bias, "MIN_SAMPLES", SAMPLES + 1)
    correction = BiasCorrection(_calibration())
    model = ir.from_proto(_model())
    correction.record(model)
    assert correction.few_samples == ["gemm", "matmul"]  # conv_c, conv_d: a shared bias
    with caplog.at_level("INFO", logger=correct_bias.__name__):
        CorrectBiasPass(correction)(model)
    hint = [r.getMessage() for r in caplog.records if "calibration samples" in r.getMessage()]
    assert hint == [
        f"correct-bias: 2 layers left as they were: each channel's mean rests on few values, "
        f"and {SAMPLES} calibration samples are too few to trust them ({SAMPLES + 1} or more "
        'are enough; docs/budget.md, "Bias correction")'
    ]
    monkeypatch.setattr(correct_bias, "MIN_SAMPLES", SAMPLES)  # now enough samples
    correction = BiasCorrection(_calibration())
    correction.record(ir.from_proto(_model()))
    assert correction.few_samples == []


def _compile(tmp_path: Path, tag: str, **options: object) -> dict[str, object]:
    source = save(_model(), tmp_path / "m.onnx")
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, **_calibration().batches[0])
    given = dc_onnx.CompileOptions(calibration=calibration, **options)
    return dc_onnx.compile(source, tmp_path / f"{tag}.dc.onnx", given).report.to_json()


def test_a_manual_compile_corrects_and_measures_a_lower_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"sparsity": 0.5, "bits_conv": 3, "bits_fc": 3, "max_error": 1.0}
    corrected = _compile(tmp_path, "on", **settings)
    passes = {p["name"]: p["stats"] for p in corrected["passes"]}  # type: ignore[index]
    assert set(passes["correct-bias"]["corrected"]) == {"conv_a", "conv_b", "gemm", "matmul"}
    unchanged = {"corrected": [], "left_out": {}, "waves": 0, "samples": 0, "seconds": 0.0}
    monkeypatch.setattr(BiasCorrection, "correct", lambda self, model: unchanged)
    plain = _compile(tmp_path, "off", **settings)
    error = corrected["error"]["relative_l2"]  # type: ignore[index]
    assert error < 0.8 * plain["error"]["relative_l2"]  # type: ignore[index]


def test_no_correction_in_budget_mode_or_without_given_inputs() -> None:
    calibration = _calibration()
    budget = build_passes(dc_onnx.CompileOptions(), None, calibration)
    manual = build_passes(dc_onnx.CompileOptions(bits_conv=8), None, calibration)
    synthesized = Calibration(calibration.batches, "synthetic", "made up")
    guessed = build_passes(dc_onnx.CompileOptions(bits_conv=8), None, synthesized)
    off = build_passes(dc_onnx.CompileOptions(bits_conv=8, compensate="off"), None, calibration)
    names = [[str(p) for p in passes] for passes in (budget, manual, guessed, off)]
    assert [("correct-bias" in n, "record-means" in n) for n in names] == [
        (False, False), (True, True), (False, False), (False, False),
    ]  # fmt: skip


def test_a_float16_layer_gets_no_float32_bias() -> None:
    """A float32 bias on a float16 Conv would not type-check: it is no target."""
    weight = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float16)
    node = helper.make_node("Conv", ["x", "C"], ["y"], name="half")
    graph = helper.make_graph(
        [node], "half",
        [helper.make_tensor_value_info("x", 10, ["n", 4, 8, 8])],
        [helper.make_tensor_value_info("y", 10, ["n", 8, 6, 6])],
        [numpy_helper.from_array(weight, "C")],
    )  # fmt: skip
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    targets, _ = correct_bias.find_targets(model)
    assert not targets
    layer = ir.Node("", "Conv", [model.graph.inputs[0], model.graph.initializers["C"]])
    assert correct_bias._target(layer, 1, model.graph) == "not a float32 layer"


def test_a_model_it_cannot_run_is_compiled_without_correction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise dc_onnx.InputError("ONNX Runtime cannot load the model: (made up)")

    monkeypatch.setattr(correct_bias, "plain_session", refuse)
    report = _compile(tmp_path, "refused", sparsity=0.5, bits_conv=3, bits_fc=3, max_error=1.0)
    passes = {p["name"]: p["stats"] for p in report["passes"]}  # type: ignore[index]
    assert passes["record-means"] == {"targets": 0}
    assert "no bias correction" in caplog.text
