"""The output-error budget: calibration inputs, sensitivity, allocation, measured error."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import dc_onnx
from conftest import compile_model, make_model, mlp_model, run, save
from dc_onnx.budget.calibration import synthesize
from dc_onnx.budget.candidates import LAYER_OVERHEAD, LayerSizes
from dc_onnx.cli import main
from dc_onnx.layers import annotate, find_weight_groups
from dc_onnx.options import ClusterOptions, LowerOptions, parse_input_shapes
from dc_onnx.passes.cluster import ClusterPass
from dc_onnx.passes.lower import LowerPass
from dc_onnx.passes.prune import PrunePass, PrunePolicy
from dc_onnx.pipeline import run_passes


def _two_paths(seed: int = 0, width: int = 32) -> onnx.ModelProto:
    """`sensitive` (32 x width) feeds an output directly; `saturated` feeds tanh(x W + 5):
    within 2e-4 of 1.0, so compressing it changes the outputs by about 1e-5 (not exactly
    nothing: a weight the outputs never change with is one the inputs do not reach, kept
    exact). At width 32, `saturated` is the larger."""
    rng = np.random.default_rng(seed)
    inits = {
        "sensitive": rng.standard_normal((32, width)).astype(np.float32) * 0.2,
        "saturated": rng.standard_normal((32, 128)).astype(np.float32) * 0.01,
        "shift": np.full(128, 5.0, np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "sensitive"], ["y"], name="direct"),
        helper.make_node("MatMul", ["x", "saturated"], ["h"], name="hidden"),
        helper.make_node("Add", ["h", "shift"], ["hs"]),
        helper.make_node("Tanh", ["hs"], ["z"]),
    ]
    return make_model(nodes, {"x": ["N", 32]}, {"y": ["N", width], "z": ["N", 128]}, inits)


def _allocation(report: dict) -> dict:
    (stats,) = [p["stats"] for p in report["passes"] if p["name"] == "allocate"]
    return stats


def test_allocation_compresses_the_insensitive_layer_hard(tmp_path: Path) -> None:
    source = save(_two_paths(), tmp_path / "m.onnx")
    result = dc_onnx.compile(source, tmp_path / "m.dc.onnx")
    report = result.report.to_json()
    layers = _allocation(report)["layers"]
    saturated, sensitive = layers["hidden"]["setting"], layers["direct"]["setting"]
    assert saturated["sparsity"] >= 0.9 and saturated["bits"] <= 3
    # The error budget goes to the layer the output depends on.
    assert sensitive.get("keep") or sensitive["sparsity"] < saturated["sparsity"]
    assert report["mode"] == "budget" and report["within_budget"] is True
    assert 0 < report["error"]["relative_l2"] <= 0.01
    # Each layer's curve was measured: the saturated one is flat near zero.
    assert 0 < max(layers["hidden"]["sparsity_error"].values()) < 1e-3
    assert max(layers["direct"]["bits_error"].values()) > 0.05


@pytest.mark.parametrize("max_error", [0.01, 0.05])
def test_budget_is_met_on_the_compiled_model(tmp_path: Path, max_error: float) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    out = tmp_path / "m.dc.onnx"
    report = dc_onnx.compile(source, out, dc_onnx.CompileOptions(max_error=max_error)).report
    assert report.mode == "budget" and report.calibration is not None
    assert report.calibration["source"] == "synthetic"
    # The reported error is the compiled model's, measured again here on the same inputs.
    graph = ir.from_proto(onnx.load(str(source))).graph
    (feeds,) = synthesize(graph).batches
    (expected,), (actual,) = run(source, feeds), run(out, feeds)
    error = np.linalg.norm(actual - expected) / np.linalg.norm(expected)
    assert report.error is not None
    assert report.error["relative_l2"] == pytest.approx(error, rel=1e-4, abs=1e-7)
    assert error <= max_error
    assert report.ratio is not None and report.ratio > 1.5


def test_a_budget_met_on_synthesized_inputs_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    assert dc_onnx.compile(source, tmp_path / "a.dc.onnx").report.within_budget
    assert "measured on synthesized inputs" in caplog.text
    caplog.clear()
    data = tmp_path / "real.npz"
    x = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    np.savez(data, x=x)
    options = dc_onnx.CompileOptions(budget=dc_onnx.BudgetOptions(calibration=data))
    assert dc_onnx.compile(source, tmp_path / "b.dc.onnx", options).report.within_budget
    assert "synthesized" not in caplog.text


def test_a_looser_budget_gives_a_smaller_model(tmp_path: Path) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    sizes = []
    for max_error in (0.01, 0.1):
        options = dc_onnx.CompileOptions(max_error=max_error)
        report = dc_onnx.compile(source, tmp_path / f"{max_error}.dc.onnx", options).report
        sizes.append(report.compressed_bytes)
    assert sizes[1] < sizes[0]


def test_manual_flags_work_as_before(tmp_path: Path) -> None:
    out = compile_model(mlp_model(), tmp_path, sparsity=0.5, bits_fc=4)
    source = tmp_path / "model.onnx"
    options = dc_onnx.CompileOptions(sparsity=0.5, bits_fc=4)
    report = dc_onnx.compile(source, out, options).report
    assert "allocate" not in [p.name for p in report.passes]
    assert report.mode == "manual" and report.error is not None
    for layer in report.layers:
        assert layer.density == pytest.approx(0.5, abs=0.01)
        assert layer.codebook_size <= 16


def test_manual_setting_over_the_budget_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    args = ["compile", str(source), "--sparsity", "0.9", "--bits-fc", "2"]
    assert main(args) == 0  # the default budget is advice in manual mode
    assert "exceeds the budget 1%" in caplog.text
    caplog.clear()
    report = tmp_path / "r.json"
    assert main([*args, "--max-error", "0.02", "--report", str(report)]) == 3
    assert "exceeds the budget 2%" in caplog.text
    data = json.loads(report.read_text())
    assert data["within_budget"] is False and data["error"]["relative_l2"] > 0.02


def test_calibration_file_is_used_and_named(tmp_path: Path) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(3).standard_normal((40, 64)).astype(np.float32))
    options = dc_onnx.CompileOptions(calibration=data)
    report = dc_onnx.compile(source, tmp_path / "m.dc.onnx", options).report
    assert report.calibration is not None
    assert report.calibration["source"] == "file" and report.calibration["samples"] == 40
    assert str(data) in report.format_table()


def _scaled_layer(tmp_path: Path) -> Path:
    """y = (x @ W) * scale, with x [1, 64] and a scalar scale: inputs with no sample axis."""
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="fc"),
        helper.make_node("Mul", ["xw", "scale"], ["y"], name="scaled"),
    ]
    model = make_model(nodes, {"x": [1, 64], "scale": []}, {"y": [1, 32]}, {"W": w})
    return save(model, tmp_path / "m.onnx")


def test_calibration_file_without_a_shared_sample_axis_is_one_batch(tmp_path: Path) -> None:
    # Recurrent models take a scalar (a sample rate) or a state batched on another axis
    # beside the signal: such a file is one run's inputs, fed as given.
    source = _scaled_layer(tmp_path)
    data = tmp_path / "calib.npz"
    rng = np.random.default_rng(4)
    np.savez(data, x=rng.standard_normal((1, 64)).astype(np.float32), scale=np.float32(2.0))
    options = dc_onnx.CompileOptions(calibration=data, max_error=0.05)
    report = dc_onnx.compile(source, tmp_path / "m.dc.onnx", options).report
    assert report.calibration is not None and "one batch, as given" in report.format_table()
    assert report.error is not None and report.within_budget


def test_calibration_arrays_that_disagree_on_a_named_dim_are_refused(tmp_path: Path) -> None:
    # x and mask share the batch 'N' in the model: 4 samples of one and 5 of the other
    # is a user error, named before ORT fails deep inside the model.
    w = np.random.default_rng(6).standard_normal((16, 16)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["x", "mask"], ["xm"]),
        helper.make_node("MatMul", ["xm", "W"], ["y"], name="fc"),
    ]
    model = make_model(nodes, {"x": ["N", 16], "mask": ["N", 1]}, {"y": ["N", 16]}, {"W": w})
    source = save(model, tmp_path / "m.onnx")
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.ones((4, 16), np.float32), mask=np.ones((5, 1), np.float32))
    options = dc_onnx.CompileOptions(calibration=data, max_error=0.05)
    with pytest.raises(dc_onnx.InputError, match=r"'x' and 'mask' share the dim 'N'.* 4 and 5"):
        dc_onnx.compile(source, tmp_path / "m.dc.onnx", options)


def test_calibration_directory_of_runs_as_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A speech model takes one chunk and a scalar per run: many runs are a directory with
    # one .npz per run, each fed as given (here with different scales), in name order.
    source = _scaled_layer(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        x = rng.standard_normal((1, 64)).astype(np.float32)
        np.savez(runs / f"run-{i}.npz", x=x, scale=np.float32(i + 1))
    options = dc_onnx.CompileOptions(calibration=runs, max_error=0.05)
    report = dc_onnx.compile(source, tmp_path / "m.dc.onnx", options).report
    assert report.calibration is not None and report.calibration["samples"] == 3
    assert "3 runs, each as given" in report.format_table()
    assert report.error is not None and report.within_budget
    # a shard with a sample axis among the runs: an error that says what is wrong
    np.savez(runs / "run-9.npz", x=np.zeros((4, 64), np.float32), scale=np.zeros(4, np.float32))
    code = main(["compile", str(source), "-o", str(tmp_path / "n.dc.onnx"),
                 "--calibration", str(runs)])  # fmt: skip
    assert code != 0
    assert "run-9.npz: not one run's inputs as given" in capsys.readouterr().err
    # a run without one of the model's inputs: named
    (runs / "run-9.npz").unlink()
    np.savez(runs / "run-8.npz", x=np.zeros((1, 64), np.float32))
    code = main(["compile", str(source), "-o", str(tmp_path / "n.dc.onnx"),
                 "--calibration", str(runs)])  # fmt: skip
    assert code != 0
    assert "run-8.npz lacks 'scale' (model inputs: x, scale)" in capsys.readouterr().err


def test_size_estimates_match_real_encodes(tmp_path: Path) -> None:
    model = ir.from_proto(mlp_model())
    groups = find_weight_groups(model.graph)
    estimates = {}
    for group, (s, b) in zip(groups, [(0.0, 8), (0.5, 5), (0.9, 3), (0.3, 6)], strict=False):
        sizes = LayerSizes(group, group.array())
        setting = sizes.setting(s, b)
        estimates[group.name] = sizes.bytes(setting)
        annotate(group.weight, sparsity=s, bits=b, index_bits=setting.index_bits)
    passes = [
        PrunePass(PrunePolicy()),
        ClusterPass(ClusterOptions()),
        LowerPass(LowerOptions()),
    ]
    _, records = run_passes(model, passes)
    for name, stats in records[-1].stats.layers.items():
        if name not in estimates:
            continue
        k = stats.codebook_size
        real = stats.codes_bytes + stats.gaps_bytes + 5 * k + (1 << stats.index_bits)
        assert estimates[name] - LAYER_OVERHEAD == pytest.approx(real, rel=0.02), name


def _embedding_model() -> onnx.ModelProto:
    table = numpy_helper.from_array(np.zeros((50, 8), np.float32), "table")
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "ids64"], ["e"]),
        helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "seq"]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [table, numpy_helper.from_array(np.array([2], np.int64), "axes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_synthesized_integer_inputs_stay_in_range() -> None:
    graph = ir.from_proto(_embedding_model()).graph
    with pytest.raises(dc_onnx.InputError, match=r"dim 1 \('seq'\).*--input-shape ids="):
        synthesize(graph)
    calibration = synthesize(graph, parse_input_shapes("ids=4,7 mask=4,7"))
    feeds = calibration.batches[0]  # batch dim fixed at 4: two batches make up 8 samples
    assert len(calibration.batches) == 2
    assert feeds["ids"].dtype == np.int32 and feeds["ids"].shape == (4, 7)
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() < 50
    assert np.all(feeds["mask"] == 1)
    assert "ids: uniform integers in [0, 50)" in calibration.description
    assert "mask: ones" in calibration.description


def test_the_first_dim_is_the_batch_whatever_its_name() -> None:
    conv = helper.make_node("Conv", ["x", "C"], ["y"], name="conv")
    weights = {"C": np.zeros((4, 3, 1, 1), np.float32)}
    named = make_model(
        [conv], {"x": ["DynamicDimension.0", 3, 5, 5]}, {"y": ["n", 4, 5, 5]}, weights
    )
    (feeds,) = synthesize(ir.from_proto(named).graph).batches
    assert feeds["x"].shape == (8, 3, 5, 5)
    # Every dim that needs a value is named at once, with the shape to give.
    image = make_model(
        [conv], {"x": ["s0", 3, "height", "width"]}, {"y": ["n", 4, "h", "w"]}, weights
    )
    message = r"dims 2 \('height'\), 3 \('width'\).*--input-shape x=8,3,D2,D3"
    with pytest.raises(dc_onnx.InputError, match=message):
        synthesize(ir.from_proto(image).graph)


@pytest.mark.parametrize("text", ["x", "x=", "=1,2", "x=1,a", "x=0,3", " "])
def test_input_shape_parsing_errors(text: str) -> None:
    with pytest.raises(ValueError, match="expected NAME=D0,D1"):
        parse_input_shapes(text)


def test_input_shapes_parse() -> None:
    assert parse_input_shapes("ids=1,128 mask=1,128") == {"ids": [1, 128], "mask": [1, 128]}
    assert parse_input_shapes("x=2,3;y=4") == {"x": [2, 3], "y": [4]}


def test_integer_inputs_take_the_values_the_graph_reads_them_as(
    caplog: pytest.LogCaptureFixture,
) -> None:
    i64 = TensorProto.INT64
    nodes = [
        # bytes one-hot by comparison with 0..4 (as jax exports it), then a MatMul
        helper.make_node("Unsqueeze", ["bytes", "last"], ["b3"]),
        helper.make_node("Equal", ["b3", "codes"], ["hot"]),
        helper.make_node("Cast", ["hot"], ["hotf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["hotf", "W"], ["y1"]),
        # an int8 table dequantized on the fly, then gathered
        helper.make_node("Cast", ["table8"], ["tablef"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["tablef", "scale"], ["table"]),
        helper.make_node("Gather", ["table", "ids"], ["y2"]),
        helper.make_node("OneHot", ["cls", "depth", "onoff"], ["y3"]),
        # a mask compared with 0 still keeps every position
        helper.make_node("Equal", ["attention_mask", "zero"], ["y4"]),
        helper.make_node("Identity", ["flag"], ["y5"]),
        # a decoder's last token: selected from the prefix, then gathered
        helper.make_node("Gather", ["prefix", "last_position"], ["token"], axis=1),
        helper.make_node("Gather", ["table", "token"], ["y6"]),
    ]
    rng = np.random.default_rng(0)
    inits = {
        "last": np.array([-1], np.int64),
        "codes": np.arange(5, dtype=np.int64).reshape(1, 1, 5),
        "W": rng.standard_normal((5, 4)).astype(np.float32),
        "table8": rng.integers(-100, 100, (7, 4)).astype(np.int8),
        "scale": np.array(0.01, np.float32),
        "depth": np.array([3], np.int64),
        "onoff": np.array([0, 1], np.float32),
        "zero": np.array(0, np.int64),
        "last_position": np.array(-1, np.int64),
    }
    shapes = {"bytes": ["N", 6], "ids": ["N", 6], "cls": ["N"], "attention_mask": ["N", 6],
              "prefix": ["N", 3]}  # fmt: skip
    inputs = [
        helper.make_tensor_value_info(n, i64, s) for n, s in {**shapes, "flag": ["N"]}.items()
    ]
    outputs = [
        helper.make_tensor_value_info(f"y{i}", TensorProto.UNDEFINED, None) for i in range(1, 7)
    ]
    initializers = [numpy_helper.from_array(a, n) for n, a in inits.items()]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    calibration = synthesize(ir.from_proto(model).graph)
    (feeds,) = calibration.batches
    assert set(np.unique(feeds["bytes"])) == {0, 1, 2, 3, 4}  # 48 draws: all five seen
    assert set(np.unique(feeds["ids"])) <= set(range(7)) and feeds["ids"].max() > 4
    assert set(np.unique(feeds["cls"])) <= {0, 1, 2}
    assert np.all(feeds["attention_mask"] == 1) and np.all(feeds["flag"] == 1)
    text = calibration.description
    assert "bytes: the 5 values it is compared with (0, 1, 2, 3, ...)" in text
    assert "ids: uniform integers in [0, 7)" in text
    assert "prefix: uniform integers in [0, 7)" in text and feeds["prefix"].max() > 1
    assert "cls: uniform integers in [0, 3) (a OneHot's depth)" in text
    # Ones stand in for an input whose role is unknown, and the user is told.
    assert "'flag' is not read as" in caplog.text and "attention_mask" not in caplog.text


def test_inputs_that_do_not_move_the_outputs_cannot_hold_a_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A large bias and small weights: every sample's output is within 0.1% of the mean, so
    a model that ignored its input would meet a 1% budget on these inputs."""
    rng = np.random.default_rng(0)
    gemm = helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc")
    weights = {
        "W": (1e-3 * rng.standard_normal((64, 32))).astype(np.float32),
        "B": (10 + rng.standard_normal(32)).astype(np.float32),
    }
    source = save(
        make_model([gemm], {"x": ["N", 64]}, {"y": ["N", 32]}, weights), tmp_path / "m.onnx"
    )
    out = tmp_path / "m.dc.onnx"
    with pytest.raises(dc_onnx.InputError, match="cannot tell a working compiled model"):
        dc_onnx.compile(source, out)
    assert not out.exists()
    # Real inputs that do move it compile; manual settings are only warned about.
    far = tmp_path / "far.npz"
    np.savez(far, x=(1e4 * rng.standard_normal((16, 64))).astype(np.float32))
    options = dc_onnx.CompileOptions(budget=dc_onnx.BudgetOptions(calibration=far))
    assert dc_onnx.compile(source, out, options).report.within_budget
    manual = dc_onnx.CompileOptions(prune=dc_onnx.PruneOptions(sparsity=0.5))
    dc_onnx.compile(source, out, manual)
    assert "returns their mean is within 0.0" in caplog.text


def _cancelling_model() -> onnx.ModelProto:
    """Conv then BatchNorm whose bias and running mean (1e5) cancel: the outputs keep only
    what float32 has left below 1e5, so ORT folding the BatchNorm moves them by ~0.4%."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn"),
    ]
    ones, big = np.ones(16, np.float32), np.full(16, 1e5, np.float32)
    weights = {
        "W": (0.1 * rng.standard_normal((16, 8, 3, 3))).astype(np.float32),
        "B": big, "s": ones, "b": np.zeros(16, np.float32), "m": big, "v": ones,
    }  # fmt: skip
    return make_model(nodes, {"x": ["N", 8, 8, 8]}, {"y": ["N", 16, 8, 8]}, weights)


def test_a_budget_below_the_rounding_floor_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    source = save(_cancelling_model(), tmp_path / "m.onnx")
    out = tmp_path / "m.dc.onnx"
    assert main(["compile", str(source), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "output 'y' moves by 0." in err and "cannot be measured" in err
    assert "--calibration" in err and not out.exists()
    assert "near zero or saturated" in err
    # In a model that quantizes as it runs, the cause named is that rounding.
    dynamic = _cancelling_model()
    dynamic.graph.node.append(helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "qs", "qz"]))
    dynamic.graph.output.append(helper.make_tensor_value_info("q", TensorProto.UINT8, None))
    assert main(["compile", str(save(dynamic, tmp_path / "d.onnx")), "--quiet"]) == 1
    assert "quantizes its activations as it runs" in capsys.readouterr().err
    # A budget the inputs can resolve compiles, and the report gives the floor.
    report_path = tmp_path / "r.json"
    args = ["compile", str(source), "-o", str(out), "--max-error", "0.05", "--quiet"]
    assert main([*args, "--report", str(report_path)]) == 0
    floor = json.loads(report_path.read_text())["calibration"]["rounding_floor"]
    assert 0.001 < floor < 0.05 / 4
    # Manual settings are measured and warned about, not refused.
    manual = ["compile", str(source), "-o", str(out), "--bits-conv", "8", "--sparsity", "0"]
    assert main(manual) == 0
    assert "cannot be measured" in caplog.text
    assert "from reordering the float arithmetic alone" in capsys.readouterr().out


def test_input_shape_errors_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    with pytest.raises(SystemExit) as info:
        main(["compile", str(source), "--input-shape", "x=2,b"])
    assert info.value.code == 2
    assert "expected NAME=D0,D1,... with positive dims, got 'x=2,b'" in capsys.readouterr().err
    assert main(["compile", str(source), "--input-shape", "nope=1,64"]) == 1
    assert "--input-shape names nope; model inputs: x" in capsys.readouterr().err
    assert main(["analyze", str(source), "--input-shape", "x=3,64", "--quiet"]) == 0


def test_inputs_that_share_a_dim_take_it_from_one_given_shape() -> None:
    # ids and their mask share the sequence length: the compile asked for one input per
    # run; now every missing dim is named at once, and a named dim is given once.
    graph = ir.from_proto(
        make_model([helper.make_node("Add", ["a", "b"], ["y"])],
                   {"a": ["N", "seq", 4], "b": ["N", "seq", "width"]}, {"y": ["N", "seq", 4]}, {})
    ).graph  # fmt: skip
    with pytest.raises(dc_onnx.InputError) as info:
        synthesize(graph)
    assert "input 'a' has shape [N,seq,4]" in str(info.value)
    assert "input 'b' has shape [N,seq,width]" in str(info.value)
    calibration = synthesize(graph, parse_input_shapes("a=2,5,4 b=2,5,4"))
    assert calibration.input_shapes() == {"a": (2, 5, 4), "b": (2, 5, 4)}
    calibration = synthesize(graph, parse_input_shapes("b=2,5,4"))
    assert calibration.input_shapes() == {"a": (2, 5, 4), "b": (2, 5, 4)}


def test_a_batch_fixed_inside_the_model_gets_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The input says batch N, but a Reshape inside says 1 (as torch exports often do).
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Reshape", ["x", "one_row"], ["r"]),
        helper.make_node("MatMul", ["r", "W"], ["y"]),
    ]
    inits = {
        "one_row": np.array([1, 64], np.int64),
        "W": rng.standard_normal((64, 64)).astype(np.float32),
    }
    source = save(make_model(nodes, {"x": ["N", 64]}, {"y": [1, 64]}, inits), tmp_path / "m.onnx")
    assert main(["compile", str(source), "-o", str(tmp_path / "m.dc.onnx")]) == 1
    err = capsys.readouterr().err
    assert "cannot be reshaped" in err and "give --input-shape with 1 there" in err
    assert "Traceback" not in err
    assert main(["compile", str(source), "-o", str(tmp_path / "m.dc.onnx"),
                 "--input-shape", "x=1,64", "--quiet"]) == 0  # fmt: skip


def test_analyze_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    assert main(["analyze", str(source), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["calibration"]["source"] == "synthetic" and data["seconds"] > 0
    assert data["bits"] == [8, 7, 6, 5, 4, 3, 2]
    assert data["sparsities"][0] == 0.0 and data["sparsities"][-1] == 0.95
    assert [layer["name"] for layer in data["layers"]] == ["fc1", "fc2", "fc3", "fc4", "fc5"]
    for layer in data["layers"]:
        # float16 storage (bits 16) is a candidate of every float32 weight in its range
        assert set(layer["bits_error"]) == {str(b) for b in data["bits"]} | {"16"}
        assert layer["sparsity_error"]["0"] == 0.0
        errors = [layer["bits_error"][str(b)] for b in data["bits"]]
        assert errors[-1] > errors[0]  # 2 bits hurt more than 8
        assert layer["dense_bytes"] == 4 * layer["weights"]


def test_analyze_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")  # the `plot` extra; `make test` installs it
    source = save(mlp_model(), tmp_path / "m.onnx")
    png = tmp_path / "s.png"
    assert main(["analyze", str(source), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in capsys.readouterr().out


def test_analyze_plot_without_matplotlib_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    source = save(mlp_model(), tmp_path / "m.onnx")
    assert main(["analyze", str(source), "--plot", str(tmp_path / "s.png")]) == 1
    assert "pip install 'dc-onnx[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_curve_predicts_between_and_beyond_measured_points() -> None:
    from dc_onnx.budget.sensitivity import Curve

    curve = Curve({0.0: 0.0, 0.1: 0.01, 0.2: 0.04, 0.5: 0.1, 0.6: 0.2, 0.8: 0.4, 0.9: 0.9})
    assert curve.predict(0.5) == math.inf  # nothing measured: never picked unmeasured
    curve.measured.update({0.0: 0.0, 0.5: 0.01})
    assert curve.predict(0.1) == pytest.approx(0.001)  # below: linear towards zero
    assert curve.predict(0.8) == pytest.approx(0.04)  # beyond one point: linear
    curve.measured[0.8] = 0.16  # 16x the error for 4x the perturbation: a power law of 2
    assert curve.predict(0.2) == pytest.approx(0.004)
    assert curve.predict(0.6) == pytest.approx(0.04)  # between: the power law through both
    assert curve.predict(0.9) == pytest.approx(0.16 * (9 / 4) ** 2)
    curve.measured[0.8] = 0.01 * 4**5  # slope 5 is capped at 3 beyond the last point
    assert curve.predict(0.9) == pytest.approx(10.24 * (9 / 4) ** 3)
    assert curve.error(0.8) == 10.24 and curve.full()[0.0] == 0.0


def test_allocation_measures_every_point_it_picks(tmp_path: Path) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    report = dc_onnx.compile(source, tmp_path / "m.dc.onnx").report.to_json()
    stats = _allocation(report)
    for name, layer in stats["layers"].items():
        setting = layer["setting"]
        if setting.get("keep"):
            continue
        # The chosen point of each curve was measured, not left predicted.
        assert setting["bits"] not in layer["predicted"]["bits"], name
        assert setting["sparsity"] not in layer["predicted"]["sparsity"], name
    # Two anchors per weight plus what the allocation asked for: fewer than a full sweep
    # (float16, 7 bit widths, 11 sparsities).
    full = len(stats["layers"]) * (1 + 7 + 11)
    assert 2 * len(stats["layers"]) <= stats["analysis_runs"] < full


def test_analyze_exact_measures_every_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    assert main(["analyze", str(source)]) == 0
    text = capsys.readouterr().out
    assert "~" in text and "--exact measures them all" in text
    assert main(["analyze", str(source), "--exact", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["exact"] and data["runs"] == len(data["layers"]) * 19  # float16 included
    assert all(layer["predicted"] == {"bits": [], "sparsity": []} for layer in data["layers"])


def test_a_weight_left_dense_gets_no_storage_form_either() -> None:
    from dc_onnx.layers import survey

    model = ir.from_proto(mlp_model())
    groups = find_weight_groups(model.graph)
    annotate(groups[0].weight, keep=1)
    found = survey(model.graph, 1)
    assert groups[0].weight.name not in [str(g.weight.name) for g in found.groups]
    # Before the fix, the kept weight fell through to the storage form at 8 bits, which the
    # allocation never simulated (compiled error far over the simulated one).
    assert groups[0].weight.name not in [str(s.weight.name) for s in found.stored]


def test_analysis_cache_reuses_measured_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("DC_ONNX_ANALYSIS_CACHE", str(cache_dir))

    def compiled(name: str, max_error: float | None = None) -> dict:
        options = dc_onnx.CompileOptions(max_error=max_error)
        return dc_onnx.compile(source, tmp_path / name, options).report.to_json()

    cold = _allocation(compiled("a.dc.onnx"))
    assert cold["analysis_runs"] > 0 and len(list(cache_dir.glob("*.json"))) == 1
    # With the cold run's points known from the start, the predictions between them change,
    # and the searches (with and without float16) may pass one point the cold run did
    # not; once that is cached too, nothing is measured again.
    warm = _allocation(compiled("b.dc.onnx"))
    assert warm["analysis_runs"] <= 2 < cold["analysis_runs"]
    again = _allocation(compiled("b2.dc.onnx"))
    assert again["analysis_runs"] == 0  # every point it needed was measured before
    for later in (warm, again):
        assert {n: x["setting"] for n, x in later["layers"].items()} == {
            n: x["setting"] for n, x in cold["layers"].items()
        }
    looser = _allocation(compiled("c.dc.onnx", 0.05))
    assert looser["analysis_runs"] < cold["analysis_runs"]
    # Another model (other weights) does not see these points.
    other = mlp_model()
    other.graph.initializer[0].raw_data = bytes(len(other.graph.initializer[0].raw_data))
    dc_onnx.compile(save(other, tmp_path / "o.onnx"), tmp_path / "o.dc.onnx")
    assert len(list(cache_dir.glob("*.json"))) == 2


def test_the_fill_spends_the_error_the_hull_leaves() -> None:
    from dc_onnx.budget.allocate import _fill
    from dc_onnx.budget.candidates import Setting

    def options(*points: tuple[int, float]) -> list[tuple[int, float, Setting]]:
        return [(b, e, Setting(0.0, 8 - i)) for i, (b, e) in enumerate(points)]

    table = [options((100, 0.0), (50, 0.5), (10, 2.0)), options((100, 0.0), (60, 0.3), (20, 1.5))]
    chosen = _fill(table, [table[0][0], table[1][0]], limit=1.0)
    # B's step saves 133 bytes per unit of error, A's 100: both fit (0.8), neither next step.
    assert chosen == [table[0][1], table[1][1]]
    assert sum(o[1] for o in chosen) <= 1.0
    # Nothing fits: the choice stays as it is.
    assert _fill(table, [table[0][0], table[1][0]], limit=0.1) == [table[0][0], table[1][0]]


def test_the_vectorized_pick_takes_what_min_would() -> None:
    from dc_onnx.budget.allocate import _padded, _pick
    from dc_onnx.budget.candidates import Setting

    rng = np.random.default_rng(0)
    for _ in range(200):
        table = []
        for _layer in range(int(rng.integers(1, 6))):
            # Few distinct values, so ties in cost and in error are common.
            n = int(rng.integers(1, 8))
            points = zip(rng.integers(1, 5, n) * 10, rng.integers(0, 4, n) / 4.0, strict=True)
            table.append([(int(b), float(e), Setting(0.0, 8 - i)) for i, (b, e) in
                          enumerate(points)])  # fmt: skip
        arrays = _padded(table)
        for lam in (0.0, 1.0, 20.0, 40.0, 1e30):
            expected = [min(opts, key=lambda o: (o[0] + lam * o[1], o[1])) for opts in table]
            chosen, total = _pick(table, arrays, lam)
            assert [o[2] for o in chosen] == [o[2] for o in expected]
            assert total == sum(o[1] for o in expected)


def test_a_search_can_start_again_from_earlier_points_without_running_them_again() -> None:
    # The allocation's float16 searches start from the points the allocation began with
    # (Allocator.allocate): a point measured meanwhile is predicted again, and measuring
    # it again costs no model run.
    from dc_onnx.budget.sensitivity import analyze
    from dc_onnx.budget.simulate import Simulator
    from dc_onnx.layers import find_analysed_weights

    model = ir.from_proto(mlp_model())
    groups = find_analysed_weights(model.graph, 1)
    calibration = synthesize(model.graph)
    simulator = Simulator(model, groups, calibration)
    analysis = analyze(groups, simulator, calibration)
    layer = analysis.layers[0]
    start, runs = analysis.view(), analysis.runs
    (point, *_) = layer.predicted_points()["bits"]
    error = analysis.measure(layer, simulator, "bits", point)
    assert analysis.runs == runs + 1 and layer.bits.error(point) == error
    analysis.restore(start)
    assert point not in layer.bits.measured and analysis.view() == start
    assert analysis.measure(layer, simulator, "bits", point) == error
    assert analysis.runs == runs + 1  # known: not run again
    analysis.restore(start)
    analysis.recall_all()
    assert layer.bits.measured[point] == error


def test_a_point_measured_on_the_analysis_subset_runs_the_model_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The analysis measures on a subset of the calibration (its own Calibration object):
    # the original's outputs on it are run once, not again for every point.
    from dc_onnx.budget import simulate
    from dc_onnx.budget.sensitivity import analyze
    from dc_onnx.layers import find_analysed_weights

    model = ir.from_proto(mlp_model())
    groups = find_analysed_weights(model.graph, 1)
    calibration = synthesize(model.graph)
    simulator = simulate.Simulator(model, groups, calibration)
    runs = []
    counted = simulate.run_batches
    monkeypatch.setattr(simulate, "run_batches", lambda *a: runs.append(1) or counted(*a))
    analysis = analyze(groups, simulator, calibration.head(4))
    assert analysis.calibration is not calibration
    assert len(runs) == analysis.runs + 1  # each point, and the original's outputs once
    before = len(runs)
    assert simulator.error({}, analysis.calibration).worst == 0.0
    assert len(runs) == before + 1


def test_a_padding_mask_is_synthesized_to_keep_every_position() -> None:
    # Where(mask, -1e9, scores) masks out where the mask is true: True everywhere would
    # mask every position, and the weights behind the scores would never move the outputs.
    nodes = [
        helper.make_node("Unsqueeze", ["padding", "axis"], ["padding3"]),
        helper.make_node(  # as exporters write it: a Constant node
            "Constant", [], ["minus_inf"], value=numpy_helper.from_array(np.float32(-np.inf))
        ),
        helper.make_node("Where", ["padding3", "minus_inf", "scores"], ["s1"]),
        helper.make_node("Cast", ["pad_ids"], ["pad_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["pad_f", "minus_big"], ["offset"]),
        helper.make_node("Add", ["scores", "offset"], ["s2"]),
        helper.make_node("Where", ["keep", "scores", "minus_big"], ["s3"]),  # True keeps
        # mean pooling over the positions Not(pad) keeps: True removes
        helper.make_node("Not", ["pad_pool"], ["valid"]),
        helper.make_node("Cast", ["valid"], ["valid_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["scores", "valid_f"], ["s4"]),
        # an attention mask that multiplies the data keeps where it is 1
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["scores", "mask_f"], ["s5"]),
    ]
    inits = {"axis": np.array([1], np.int64), "minus_big": np.array(-1e9, np.float32)}
    inputs = [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4, 4]),
        helper.make_tensor_value_info("padding", TensorProto.BOOL, ["N", 4]),
        helper.make_tensor_value_info("pad_ids", TensorProto.INT64, ["N", 4]),
        helper.make_tensor_value_info("keep", TensorProto.BOOL, ["N", 4, 4]),
        helper.make_tensor_value_info("pad_pool", TensorProto.BOOL, ["N", 4, 4]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", 4, 4]),
    ]
    outputs = [helper.make_tensor_value_info(f"s{i}", TensorProto.FLOAT, None) for i in range(1, 6)]
    initializers = [numpy_helper.from_array(a, n) for n, a in inits.items()]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    calibration = synthesize(ir.from_proto(model).graph)
    (feeds,) = calibration.batches
    assert not feeds["padding"].any() and not feeds["pad_ids"].any()
    assert not feeds["pad_pool"].any()
    assert feeds["keep"].all() and (feeds["attention_mask"] == 1).all()
    assert "padding: False (a padding mask" in calibration.description
    assert "pad_ids: zeros (a padding mask" in calibration.description
    # verify and bench make up the same masks (they made every one True).
    from dc_onnx.budget.calibration import padding_masks

    assert padding_masks(ir.from_proto(model).graph) == {"padding", "pad_ids", "pad_pool"}
