"""Sequential error compensation (dc_onnx/budget/sequential.py): layers rounded in waves,
each against its inputs in the model rounded so far, with the original outputs as target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import dc_onnx
from conftest import make_model, mlp_model, save
from dc_onnx.budget.sequential import shifted
from dc_onnx.report import Report


def _moments(x: np.ndarray, x_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (x_q.T @ x_q)[None], ((x - x_q).T @ x_q)[None]


def test_the_shifted_weight_maps_the_rounded_inputs_to_the_original_outputs() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 12))
    # A rounded layer upstream gives inputs off by a linear map (and a little noise).
    distortion = np.eye(12) + 0.1 * rng.standard_normal((12, 12))
    x_q = x @ distortion + 0.01 * rng.standard_normal(x.shape)
    w = rng.standard_normal((6, 12)).astype(np.float32)
    h_q, drift = _moments(x, x_q)
    target = shifted(w, h_q, drift)
    assert target.dtype == np.float32
    before = np.linalg.norm(x @ w.T - x_q @ w.T)
    after = np.linalg.norm(x @ w.T - x_q @ target.T)
    assert after < 0.2 * before
    # Unchanged inputs: no shift at all.
    assert np.array_equal(shifted(w, *_moments(x, x)), w)
    # A group per band of rows: each band is shifted with its own moments.
    grouped = shifted(w, np.concatenate([h_q, h_q]), np.concatenate([drift, 0 * drift]))
    assert np.array_equal(grouped[:3], target[:3]) and np.array_equal(grouped[3:], w[3:])


def _conv_net(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv, grouped Conv, Conv, then a MatMul: a chain where each layer's inputs carry
    the rounding of the layers before it."""
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], group=2),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "W3"], ["c3"], name="conv3", strides=[2, 2]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "W4"], ["y"], name="fc4"),
    ]
    weights = {
        "W1": rng.standard_normal((16, 3, 3, 3)) * 0.3,
        "W2": rng.standard_normal((16, 8, 3, 3)) * 0.15,
        "W3": rng.standard_normal((24, 16, 3, 3)) * 0.1,
        "W4": rng.standard_normal((24, 10)) * 0.3,
    }
    weights = {k: v.astype(np.float32) for k, v in weights.items()}
    return make_model(nodes, {"x": ["N", 3, 10, 10]}, {"y": ["N", 10]}, weights)


MANUAL = {"sparsity": 0.0, "bits_conv": 4, "bits_fc": 4}


def _compile(proto: onnx.ModelProto, x: np.ndarray, tmp_path: Path, **given: object) -> Report:
    """The report of compiling `proto` calibrated on `x`, with `given` options."""
    source = save(proto, tmp_path / "m.onnx")
    calibration = tmp_path / "cal.npz"
    np.savez(calibration, x=x.astype(np.float32))
    options = dc_onnx.CompileOptions(calibration=str(calibration), **given)
    return dc_onnx.compile(source, tmp_path / "m.dc.onnx", options).report


def test_sequential_rounding_lowers_the_output_error_of_a_chain(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    proto, x = mlp_model(3), rng.standard_normal((400, 64))  # every Gemm / MatMul form
    report = _compile(proto, x, tmp_path, **MANUAL, compensate="sequential")
    cluster = next(p for p in report.passes if p.name == "cluster")
    assert cluster.stats["compensation"]["sequential"]["layers"] == 5
    assert cluster.stats["compensation"]["sequential"]["waves"] == 5
    layers = cluster.stats["layers"]
    assert all(layer["compensated"] for layer in layers.values())
    # The first layer sees the model's own input: nothing to shift, so W is kept.
    assert [layers[f"fc{i}"]["sequential"] for i in range(1, 6)] == [False] + [True] * 4
    alone = _compile(proto, x, tmp_path, **MANUAL)
    cluster = next(p for p in alone.passes if p.name == "cluster")
    assert "sequential" not in cluster.stats["compensation"]
    assert report.error is not None and alone.error is not None
    assert report.error["relative_l2"] < 0.9 * alone.error["relative_l2"]


def test_grouped_convolutions_are_rounded_in_sequence(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200, 3, 10, 10))
    report = _compile(_conv_net(rng), x, tmp_path, **MANUAL, compensate="sequential")
    cluster = next(p for p in report.passes if p.name == "cluster")
    assert cluster.stats["compensation"]["sequential"]["layers"] == 4
    assert cluster.stats["layers"]["conv1"]["sequential"] is False
    assert cluster.stats["layers"]["conv2"]["sequential"] is True  # the grouped one
    assert report.error is not None and report.error["relative_l2"] < 0.1
    # Bias correction leaves the layers that kept the shift as they are.
    bias = next(p for p in report.passes if p.name == "correct-bias")
    shifted = {name for name, layer in cluster.stats["layers"].items() if layer["sequential"]}
    assert {"conv2", "conv3"} <= shifted and "conv1" not in shifted
    assert bias.stats["corrected"] == ["conv1"]
    assert all("sequential compensation" in bias.stats["left_out"][n] for n in ("conv2", "conv3"))


def test_budget_mode_rounds_each_layer_alone_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200, 3, 10, 10))
    report = _compile(_conv_net(rng), x, tmp_path, max_error=0.05, compensate="sequential")
    cluster = next(p for p in report.passes if p.name == "cluster")
    assert "sequential" not in cluster.stats["compensation"]
    assert cluster.stats["compensation"]["weights"]  # compensated, each layer alone
    assert "--compensate sequential applies in manual mode" in caplog.text


def test_without_calibration_inputs_it_says_it_does_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = save(mlp_model(5), tmp_path / "m.onnx")
    options = dc_onnx.CompileOptions(**MANUAL, compensate="sequential")
    report = dc_onnx.compile(source, tmp_path / "m.dc.onnx", options).report
    assert report.compensated == []
    assert "--compensate sequential needs calibration inputs from a file" in caplog.text
