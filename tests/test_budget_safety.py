"""The budget is kept on every kind of weight: storage-form weights (LSTM, If bodies) are
analysed, the safety net keeps weights exact when the allocation is wrong, and retraining
raises no false budget alarm."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from coverage_models import if_branches, recurrent
from test_budget import _allocation, _two_paths
from test_embedding import embedding_model
from test_retrain import _data, _mlp

import dc_onnx
from conftest import save
from dc_onnx import compiler
from dc_onnx.budget.allocate import Allocation, Allocator
from dc_onnx.budget.candidates import Setting
from dc_onnx.cli import main


@pytest.mark.parametrize(("build", "sensitive"), [(recurrent, "lstm_R"), (if_branches, "W_then")])
def test_storage_weights_are_analysed_and_kept_within_budget(
    tmp_path: Path, build, sensitive: str
) -> None:
    model, _, _ = build()
    source = save(model, tmp_path / "m.onnx")
    # A budget below what 8 bits cost: the storage weights' former fixed 8 bits would
    # land over it, so the analysis must choose their setting.
    report_path = tmp_path / "r.json"
    args = ["compile", str(source), "--max-error", "0.001", "--report", str(report_path)]
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    assert report["within_budget"] is True and report["error"]["relative_l2"] <= 0.001
    layers = _allocation(report)["layers"]
    (entry,) = [layer for name, layer in layers.items() if name == sensitive]
    assert entry["kind"] == "storage"
    assert entry["bits_error"], "the storage weight has a measured curve"
    setting = entry["setting"]
    if setting.get("keep"):  # kept exact: named as such, and never stored as a codebook
        assert sensitive in report["kept_dense"]
        assert sensitive not in {layer["name"] for layer in report["layers"]}
    elif setting.get("float16"):  # named, and stored as float16 through a Cast
        assert sensitive in report["stored_float16"]
        compiled = {t.name: t for t in onnx.load(tmp_path / "m.dc.onnx").graph.initializer}
        assert compiled[sensitive].data_type == onnx.TensorProto.FLOAT16
    else:
        assert setting["bits"] >= 2


def test_a_layer_weight_kept_dense_stays_exact(tmp_path: Path) -> None:
    # Kept by the allocation, a layer weight is no layer: it must not turn into a storage
    # weight that the cluster pass quantizes to --bits-other (the compiled model then
    # held a change the allocation never simulated).
    source = save(_two_paths(width=256), tmp_path / "m.onnx")  # 8192 weights
    # Under float16's own error on an output `sensitive` feeds directly (about 2e-4).
    options = dc_onnx.CompileOptions(max_error=1e-4)
    report = dc_onnx.compile(source, tmp_path / "m.dc.onnx", options).report
    assert report.within_budget and report.kept_dense == ["direct"]
    assert [layer.name for layer in report.layers] == ["hidden"]
    compiled = {t.name: t for t in onnx.load(tmp_path / "m.dc.onnx").graph.initializer}
    original = {t.name: t for t in onnx.load(source).graph.initializer}
    assert compiled["sensitive"].raw_data == original["sensitive"].raw_data


def _too_aggressive(self: Allocator, budget: float) -> Allocation:
    """A wrong allocation: every weight at 2 bits and 90% sparsity, whatever it costs."""
    settings = {
        layer.weight: Setting(0.9, 2, layer.sizes.setting(0.9, 2).index_bits)
        for layer in self.analysis.layers
    }
    return self.fixed(settings)


def test_safety_net_keeps_the_responsible_weights_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Allocator, "allocate", _too_aggressive)
    monkeypatch.setattr(compiler, "RETRIES", 1)
    source = save(_two_paths(), tmp_path / "m.onnx")
    report = dc_onnx.compile(source, tmp_path / "m.dc.onnx").report
    assert report.within_budget and report.error is not None
    assert report.error["relative_l2"] <= 0.01
    # The sensitive weight is found and kept exact; the saturated one stays compressed.
    assert list(report.kept_exact) == ["sensitive"]
    assert "safety net" in report.kept_exact["sensitive"]
    assert [layer.name for layer in report.layers] == ["hidden"]
    assert report.to_json()["kept_exact"] == report.kept_exact


def test_safety_net_ends_with_every_weight_exact_if_it_must(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The simulation lies (every choice looks free): only the measurements of the compiled
    # model guide the net, which keeps more weights exact until it is within budget.
    monkeypatch.setattr(Allocator, "allocate", _too_aggressive)
    monkeypatch.setattr(compiler, "RETRIES", 0)
    from dc_onnx.budget import safety

    def blind(allocator, settings):
        return 0.0, [safety.Contribution(w, 0.0, 0.0) for w in allocator.overrides(settings)]

    monkeypatch.setattr(safety, "rank", blind)
    monkeypatch.setattr(safety, "how_many", lambda *a: 1)
    source = save(_two_paths(), tmp_path / "m.onnx")
    report = dc_onnx.compile(source, tmp_path / "m.dc.onnx").report
    assert report.within_budget
    assert len(report.kept_exact) >= 1


def test_retraining_without_max_error_raises_no_budget_alarm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = save(_mlp(), tmp_path / "m.onnx")
    data = _data(tmp_path / "train.npz")
    args = ["compile", str(source), "--data", str(data), "--sparsity", "0.5",
            "--epochs", "1", "--report", str(tmp_path / "r.json")]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0
    assert "exceeds the budget" not in caplog.text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mode"] == "manual" and report["error"]["relative_l2"] > 0
    assert report["max_error"] is None and report["within_budget"] is None
    # An explicit --max-error is a demand, retraining or not.
    caplog.clear()
    assert main([*args, "--max-error", "1e-6"]) == 3
    assert "exceeds the budget" in caplog.text


def test_an_allocated_table_sparsity_is_applied(tmp_path: Path) -> None:
    # The prune pass used to ignore the allocation's sparsity for embedding tables: the
    # compiled table must hold the zeros the allocation measured.
    table = np.random.default_rng(3).standard_normal((300, 24)).astype(np.float32)
    source = save(embedding_model(table, 1), tmp_path / "m.onnx")
    calibration = tmp_path / "idx.npz"
    np.savez(calibration, idx=np.arange(200, dtype=np.int64))
    # A loose budget: pruning pays (at 0.5, 2 bits unpruned in the dense form is cheaper).
    options = dc_onnx.CompileOptions(calibration=calibration, max_error=0.7)
    report = dc_onnx.compile(source, tmp_path / "m.dc.onnx", options).report
    (stats,) = [p.stats for p in report.passes if p.name == "allocate"]
    sparsity = stats["layers"]["emb"]["setting"]["sparsity"]
    assert sparsity >= 0.2
    (layer,) = report.layers
    assert layer.density == pytest.approx(1 - sparsity, abs=0.01)
    assert report.within_budget


def test_analyze_lists_the_storage_weights(tmp_path: Path) -> None:
    from dc_onnx.tools.analyze import analyze_model

    model, _, _ = recurrent()
    analysis = analyze_model(save(model, tmp_path / "m.onnx"))
    kinds = {layer.weight: layer.group.kind for layer in analysis.layers}
    assert {kinds[w] for w in ("lstm_W", "lstm_R", "gru_W", "gru_R")} == {"storage"}


def test_a_weight_left_exact_had_its_mildest_setting_measured(tmp_path: Path) -> None:
    # A predicted 8-bit (or float16) error, extrapolated from a harsher anchor, can
    # overstate it many times: a weight is only left exact once those points were measured.
    source = save(_two_paths(width=256), tmp_path / "m.onnx")
    report_path = tmp_path / "r.json"
    assert main(["compile", str(source), "--max-error", "1e-4", "--report", str(report_path)]) == 0
    layers = _allocation(json.loads(report_path.read_text()))["layers"]
    kept = [layer for layer in layers.values() if layer["setting"].get("keep")]
    assert kept
    for layer in kept:
        for bits in (8, 16):
            assert bits not in layer["predicted"]["bits"] and str(bits) in layer["bits_error"]


def test_weights_the_calibration_never_reaches_stay_exact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # cond is always True in the calibration: the else branch's weight never reaches an
    # output, so every setting measures as free; compressing it would break the model
    # for the inputs that take that branch.
    model, _, _ = if_branches()
    source = save(model, tmp_path / "m.onnx")
    calibration = tmp_path / "calibration.npz"
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    np.savez(calibration, x=x, cond=np.array(True))
    report_path = tmp_path / "r.json"
    args = ["compile", str(source), "--calibration", str(calibration)]
    assert main([*args, "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    allocation = _allocation(report)
    (unreached,) = allocation["unobserved"]
    assert "W_else" in unreached
    assert allocation["layers"][unreached]["setting"].get("keep")
    assert unreached in report["kept_dense"]
    assert not allocation["layers"]["W_then"]["setting"].get("keep")
    assert "do not reach 1 weight" in caplog.text


def test_a_weight_that_sets_an_output_shape_is_kept_from_changing_it(tmp_path: Path) -> None:
    # A speech model's durations set the length of its audio: a point that changes the
    # length is an infinite error, not a stop (it stopped the compile with "shape ...,
    # expected ..."), and the compiled model keeps the original's length.
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weights = {"W": rng.standard_normal((64, 8)), "D": rng.standard_normal((64, 8))}
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["y"], name="fc"),
        helper.make_node("Gemm", ["x", "D"], ["d"], name="durations"),
        helper.make_node("Relu", ["d"], ["r"]),
        helper.make_node("Round", ["r"], ["frames"]),
        helper.make_node("ReduceSum", ["frames"], ["total"], keepdims=1),
        helper.make_node("Cast", ["total"], ["length"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["length", "one"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["audio"]),
    ]
    graph = helper.make_graph(
        nodes, "tts", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8]),
         helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["n"])],
        [*(onnx.numpy_helper.from_array(a.astype(np.float32), n) for n, a in weights.items()),
         onnx.numpy_helper.from_array(np.array([1], np.int64), "one")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = save(model, tmp_path / "m.onnx")
    report_path = tmp_path / "r.json"
    assert main(["compile", str(source), "--report", str(report_path), "--quiet"]) == 0
    report = json.loads(report_path.read_text())
    assert report["within_budget"] is True
    layers = _allocation(report)["layers"]
    assert any(e == float("inf") for e in layers["durations"]["sparsity_error"].values())
    x = rng.standard_normal((4, 64)).astype(np.float32)
    from conftest import run

    (_, original), (_, compiled) = run(source, {"x": x}), run(tmp_path / "m.dc.onnx", {"x": x})
    assert original.shape == compiled.shape
