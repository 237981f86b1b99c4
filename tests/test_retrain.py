"""Retraining through onnxruntime-training on synthetic data: both phases, both losses,
recipes, iterative pruning, the eval command and the errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

import dc_onnx
from conftest import make_model, save
from dc_onnx.cli import main
from dc_onnx.data import Dataset
from dc_onnx.io import side_file_of
from dc_onnx.layers import find_weight_groups
from dc_onnx.passes.cluster import ClusterOptions, ClusterPass
from dc_onnx.passes.prune import PrunePass, PrunePolicy
from dc_onnx.passes.retrain import RetrainPass
from dc_onnx.pipeline import run_passes
from dc_onnx.tools.evaluate import evaluate
from dc_onnx.training.trainer import TrainingData, TrainOptions

FAST = TrainOptions(epochs=3, lr=3e-3, batch_size=32)


def _mlp(seed: int = 0, extra: str | None = None) -> onnx.ModelProto:
    """16 -> 32 -> 4 classifier; `extra` inserts a unary op after the hidden ReLU."""
    rng = np.random.default_rng(seed)
    inits = {
        "W1": (rng.standard_normal((32, 16)) * 0.4).astype(np.float32),
        "b1": np.zeros(32, np.float32),
        "W2": (rng.standard_normal((32, 4)) * 0.4).astype(np.float32),
        "b2": np.zeros(4, np.float32),
    }
    hidden = "r" if extra is None else "e"
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        *([] if extra is None else [helper.make_node(extra, ["r"], ["e"], name="odd")]),
        helper.make_node("Gemm", [hidden, "W2", "b2"], ["y"], name="fc2"),
    ]
    return make_model(nodes, {"x": ["N", 16]}, {"y": ["N", 4]}, inits)


def _data(path: Path, n: int = 512, seed: int = 1, labels: bool = True) -> Path:
    """Inputs whose class is the argmax of a fixed random linear map: learnable."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    y = (x @ np.random.default_rng(99).standard_normal((16, 4))).argmax(1)
    arrays = {"x": x, **({"labels": y.astype(np.int64)} if labels else {})}
    np.savez(path, **arrays)
    return path


def _training_data(tmp_path: Path, labels: bool = True, teacher: bool = False) -> TrainingData:
    train = Dataset(_data(tmp_path / "train.npz", labels=labels))
    val = Dataset(_data(tmp_path / "val.npz", n=128, seed=2, labels=labels))
    model = _mlp().SerializeToString() if teacher else None
    return TrainingData(train, val, model)


def _pruned(sparsity: float = 0.7) -> ir.Model:
    model = ir.from_proto(_mlp())
    PrunePass(PrunePolicy(sparsity))(model)
    return model


def _weights(model: ir.Model) -> dict[str, np.ndarray]:
    return {g.name: g.array().copy() for g in find_weight_groups(model.graph)}


def test_weights_phase_lowers_the_loss_and_keeps_pruned_weights_zero(tmp_path: Path) -> None:
    model = _pruned()
    before = _weights(model)
    retrain = RetrainPass("weights", _training_data(tmp_path), FAST)
    assert retrain(model).modified
    epochs = retrain.stats["epochs"]
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    val = [e["val_accuracy"] for e in epochs]
    assert retrain.stats["kept_epoch"] == 1 + val.index(max(val))  # the best epoch is kept
    ir.save(model, tmp_path / "kept.onnx")
    assert evaluate(tmp_path / "kept.onnx", tmp_path / "val.npz").top1 == max(val)
    for name, w in _weights(model).items():
        assert np.all(w[before[name] == 0] == 0)
        assert not np.array_equal(w, before[name])


def test_centroids_phase_keeps_codes_and_zeros_and_moves_the_codebook(tmp_path: Path) -> None:
    model = _pruned()
    ClusterPass(ClusterOptions(bits_fc=3))(model)
    before = _weights(model)
    retrain = RetrainPass("centroids", _training_data(tmp_path), FAST)
    retrain(model)
    assert retrain.stats["epochs"][-1]["loss"] < retrain.stats["epochs"][0]["loss"]
    for name, w in _weights(model).items():
        old = before[name]
        assert np.all(w[old == 0] == 0)
        assert np.unique(w).size <= 2**3
        assert not np.array_equal(np.unique(w), np.unique(old))  # the codebook moved
        # same clusters: weights that shared a value still share one
        for value in np.unique(old[old != 0]):
            assert np.unique(w[old == value]).size == 1


@pytest.mark.parametrize("loss", ["auto", "distill-mse"])
def test_distillation_without_labels(tmp_path: Path, loss: str) -> None:
    model = _pruned(0.8)
    data = _training_data(tmp_path, labels=False, teacher=True)
    retrain = RetrainPass("weights", data, dataclasses.replace(FAST, loss=loss))  # type: ignore[arg-type]
    retrain(model)
    epochs = retrain.stats["epochs"]
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    assert epochs[-1]["accuracy"] is None and epochs[-1]["val_loss"] is not None


def test_distillation_loss_matches_numpy(tmp_path: Path) -> None:
    from dc_onnx.training.losses import soft_target_loss, softened
    from dc_onnx.training.ort_training import load_training_api

    training = load_training_api()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "W"], ["z"])
    model = make_model([node], {"x": ["N", 6]}, {"z": ["N", 4]}, {"W": w})
    training.artifacts.generate_artifacts(
        model, requires_grad=["W"], loss=soft_target_loss(training.artifacts.onnxblock, 2.0),
        artifact_directory=tmp_path,
    )  # fmt: skip
    state = training.api.CheckpointState.load_checkpoint(str(tmp_path / "checkpoint"))
    module = training.api.Module(str(tmp_path / "training_model.onnx"), state)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    p = softened(rng.standard_normal((5, 4)).astype(np.float32) * 3, 2.0)
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-6)
    z = (x @ w) / 2.0
    log_softmax = z - z.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    expected = -4.0 * np.mean(np.sum(p * log_softmax, -1))
    np.testing.assert_allclose(float(module(x, p)), expected, rtol=1e-5)


def test_cross_entropy_needs_labels(tmp_path: Path) -> None:
    data = _training_data(tmp_path, labels=False, teacher=True)
    options = TrainOptions(epochs=1, loss="cross-entropy")
    with pytest.raises(dc_onnx.CompileError, match="no 'labels' array"):
        run_passes(_pruned(), [RetrainPass("weights", data, options)])


def test_same_seed_same_weights(tmp_path: Path) -> None:
    data = _training_data(tmp_path)
    runs = []
    for _ in range(2):
        model = _pruned()
        RetrainPass("weights", data, TrainOptions(epochs=1, batch_size=16))(model)
        runs.append(_weights(model))
    for name in runs[0]:
        np.testing.assert_array_equal(runs[0][name], runs[1][name])


def test_deep_compression_recipe_end_to_end(tmp_path: Path) -> None:
    source = save(_mlp(), tmp_path / "m.onnx")
    train = _data(tmp_path / "train.npz")
    options = dc_onnx.CompileOptions(
        prune=dc_onnx.PruneOptions(sparsity=0.75, rounds=2),
        cluster=dc_onnx.ClusterOptions(bits_fc=3), lower=dc_onnx.LowerOptions(index_bits_fc=3),
        data=train, retrain=TrainOptions(epochs=5, lr=1e-2, batch_size=32),
        retrain_centroids=TrainOptions(epochs=1, lr=1e-3, batch_size=32),
    )  # fmt: skip
    result = dc_onnx.compile(source, tmp_path / "m.dc.onnx", options)
    names = [p.name for p in result.report.passes]
    assert names == [
        "canonicalize", "prune-1/2", "retrain-weights-1/2", "prune-2/2",
        "retrain-weights-2/2", "cluster", "retrain-centroids", "half", "lower",
        "fuse-activation",
    ]  # fmt: skip
    density = {layer.name: layer.density for layer in result.report.layers}
    assert all(d <= 0.25 + 1e-9 for d in density.values())
    data_free = dataclasses.replace(options, data=None)
    dc_onnx.compile(source, tmp_path / "free.dc.onnx", data_free)
    compiled = evaluate(tmp_path / "m.dc.onnx", train)
    assert compiled.samples == 512
    assert compiled.top1 > evaluate(tmp_path / "free.dc.onnx", train).top1 + 0.2


def test_recipe_without_data_is_refused(tmp_path: Path) -> None:
    source = save(_mlp(), tmp_path / "m.onnx")
    options = dc_onnx.CompileOptions(recipe="deep-compression")
    with pytest.raises(dc_onnx.InputError, match="needs training data"):
        dc_onnx.compile(source, tmp_path / "out.onnx", options)


def test_op_without_gradient_names_the_op(tmp_path: Path) -> None:
    source = save(_mlp(extra="Round"), tmp_path / "m.onnx")
    options = dc_onnx.CompileOptions(
        prune=dc_onnx.PruneOptions(sparsity=0.5),
        data=_data(tmp_path / "train.npz"),
        retrain=TrainOptions(epochs=1),
    )
    with pytest.raises(dc_onnx.CompileError, match=r"'Round'.*--recipe data-free"):
        dc_onnx.compile(source, tmp_path / "out.onnx", options)


def test_sharded_directory_is_streamed(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        _data(shards / f"part{i}.npz", n=100, seed=i)
    data = Dataset(shards)
    batches = list(data.batches(["x"], 64, np.random.default_rng(0)))
    assert sum(len(y) for _, y in batches if y is not None) == 300
    assert len(batches) == 6  # batches do not span shards
    with pytest.raises(dc_onnx.InputError, match="lacks 'input'"):
        list(data.batches(["input"], 64))


def test_eval_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = save(_mlp(), tmp_path / "m.onnx")
    data = _data(tmp_path / "test.npz", n=50)
    assert main(["eval", str(source), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 50 and 0 <= result["top1"] <= 1 and result["top5"] is None
    assert main(["eval", str(source), "--data", str(data), "--labels", "nope"]) == 1
    assert "no 'nope' array" in capsys.readouterr().err


def test_compile_command_with_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = save(_mlp(), tmp_path / "m.onnx")
    code = main([
        "compile", str(source), "-o", str(tmp_path / "out.onnx"), "--sparsity", "0.6",
        "--data", str(_data(tmp_path / "train.npz")),
        "--val", str(_data(tmp_path / "val.npz", n=64, seed=3)),
        "--epochs", "1", "--centroid-epochs", "1", "--bits-fc", "4", "--quiet",
    ])  # fmt: skip
    assert code == 0
    side = side_file_of(tmp_path / "out.onnx")
    assert side is not None and side.is_file()


def test_prune_rounds_remove_the_same_share_of_survivors() -> None:
    policy = PrunePolicy(0.96, {"fc1": 0.75}, 0.5)
    rounds = [policy.round(r, 2) for r in (1, 2)]
    assert rounds[0].sparsity == pytest.approx(0.8)  # density 1 -> 0.2 -> 0.04
    assert rounds[0].per_layer["fc1"] == pytest.approx(0.5)
    assert rounds[1].sparsity == pytest.approx(0.96)
    assert rounds[0].quality == pytest.approx(0.25) and rounds[1].quality == pytest.approx(0.5)


def test_retraining_shows_per_step_progress_with_loss_and_throughput(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    monkeypatch.setattr("dc_onnx.progress._PLAIN_AFTER_S", 0.0)  # as if the epoch were long
    logging.getLogger("dc_onnx").setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.INFO, logger="dc_onnx"):
            RetrainPass("weights", _training_data(tmp_path), FAST)(_pruned())
    finally:
        logging.getLogger("dc_onnx").setLevel(logging.NOTSET)
    lines = [r.getMessage() for r in caplog.records if r.name == "dc_onnx.progress"]
    steps = 512 // 32  # samples / batch size
    assert any(
        line.startswith(f"retrain-weights epoch 3/3: {steps}/{steps} step") for line in lines
    ), lines
    assert all("loss " in line and "samples/s " in line for line in lines)


def test_budget_sets_the_retraining_targets(tmp_path: Path) -> None:
    source = save(_mlp(), tmp_path / "m.onnx")
    options = dc_onnx.CompileOptions(
        data=_data(tmp_path / "train.npz"), budget=dc_onnx.BudgetOptions(max_error=0.05),
        retrain=TrainOptions(epochs=1, lr=1e-3, batch_size=32),
        retrain_centroids=TrainOptions(epochs=1, lr=1e-4, batch_size=32),
    )  # fmt: skip
    result = dc_onnx.compile(source, tmp_path / "m.dc.onnx", options)
    report = result.report
    names = [p.name for p in report.passes]
    # requantize applies the allocation to integer weights (none here), before retraining.
    assert names[:4] == ["canonicalize", "allocate", "requantize", "prune"]
    assert "retrain-weights" in names and "retrain-centroids" in names
    (stats,) = [p.stats for p in report.passes if p.name == "allocate"]
    assert report.calibration is not None and report.calibration["source"] == "file"
    for layer in report.layers:
        setting = stats["layers"][layer.name]["setting"]
        assert layer.density == pytest.approx(1 - setting["sparsity"], abs=0.01)
        assert layer.codebook_size <= 1 << setting["bits"]
    # Measured, but not enforced: retraining moves the model towards the labels.
    assert report.error is not None and report.mode == "budget targets"
