"""Error-compensating rounding (dc_onnx.compensate) and the layer inputs it needs
(dc_onnx.budget.activations): lower output error than nearest-value rounding on the same
codebook, every value on the codebook, the pruning mask kept, H collected in the stored
matrix's column order, and a compiled model holding exactly what the budget simulated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper

import dc_onnx
from conftest import make_model, run, save
from dc_onnx import compiler
from dc_onnx.budget import activations
from dc_onnx.budget.activations import collect
from dc_onnx.budget.calibration import Calibration
from dc_onnx.compensate import ColumnRounder, compensate, compensate_groups, inverse_cholesky
from dc_onnx.layers import find_stored_weights, find_weight_groups, row_axis_of
from dc_onnx.passes.allocate import AllocatePass
from dc_onnx.quantize import compensable, compensate_pruning, prune_array, quantize, share_layer
from dc_onnx.tools.decompile import decode_model


def _correlated_inputs(rng: np.random.Generator, n: int, cols: int) -> np.ndarray:
    mixing = rng.standard_normal((cols, cols)) * 0.4 + np.eye(cols)
    scales = np.exp(rng.standard_normal(cols))  # features of very different power
    return (rng.standard_normal((n, cols)) @ mixing) * scales


def _output_error(w: np.ndarray, q: np.ndarray, x: np.ndarray) -> float:
    return float(np.linalg.norm((w.astype(np.float64) - q) @ x.T))


def test_inverse_cholesky_factors_the_dampened_inverse() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 40))
    h = x.T @ x
    h[:, 7] = h[7, :] = 0.0  # a dead input
    u = inverse_cholesky(h, damp=0.01)
    assert np.allclose(np.tril(u, -1), 0.0)
    damped = h.copy()
    damped[7, 7] = 1.0
    damped[np.diag_indices(40)] += 0.01 * np.mean(np.diagonal(damped))
    assert np.allclose(u.T @ u, np.linalg.inv(damped), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(("bits", "sparsity"), [(8, 0.0), (4, 0.0), (5, 0.5), (3, 0.7)])
def test_compensation_beats_nearest_rounding_on_the_same_codebook(
    bits: int, sparsity: float
) -> None:
    rng = np.random.default_rng(bits)
    x = _correlated_inputs(rng, 2000, 96)
    h = x.T @ x
    w = rng.standard_normal((48, 96)).astype(np.float32)
    pruned = prune_array(w, "sparsity", sparsity)
    mask = pruned != 0
    plain = share_layer(pruned, (1 << bits) - 1, row_scales=False).values
    grid = np.unique(plain[mask])
    corrected = compensate_pruning(w, pruned, 0, h)
    assert np.array_equal(corrected != 0, mask), "the pruning mask is kept"
    if sparsity:
        assert _output_error(w, corrected, x) < 0.95 * _output_error(w, pruned, x)
    ours = compensate(pruned, h, ColumnRounder(mask, grid)).astype(np.float32)
    assert np.array_equal(ours != 0, mask)
    assert np.isin(ours[mask], grid).all(), "every value is a codebook entry"
    # the rounding error of the matrix rounded (at high sparsity few weights are left to
    # take the errors: the gain shrinks), and the whole chain against the original
    gain = 0.9 if sparsity == 0 else 1.0
    assert _output_error(pruned, ours, x) < gain * _output_error(pruned, plain, x)
    whole = quantize(w, bits, sparsity, row_axis=0, hessian=h)
    assert _output_error(w, whole, x) < gain * _output_error(w, quantize(w, bits, sparsity), x)


def test_quantize_with_h_stays_on_its_codebook_and_mask() -> None:
    rng = np.random.default_rng(1)
    x = _correlated_inputs(rng, 1000, 64)
    w = (rng.standard_normal((32, 64)) * np.exp(rng.standard_normal((32, 1)) * 2)).astype(
        np.float32
    )  # rows of very different scale: the row-scaled form pays
    ours = quantize(w, 4, 0.5, row_axis=0, hessian=x.T @ x)
    plain = quantize(w, 4, 0.5, row_axis=0)
    assert np.array_equal(ours == 0, prune_array(w, "sparsity", 0.5) == 0)
    shared = share_layer(compensate_pruning(w, prune_array(w, "sparsity", 0.5), 0, x.T @ x), 15,
                         hessian=x.T @ x)  # fmt: skip
    assert np.array_equal(shared.values, ours)
    if shared.rows is not None:  # every value is its row's scale times a codebook entry
        for r in range(ours.shape[0]):
            allowed = (shared.rows.scales[r] * shared.rows.codebook).astype(np.float32)
            assert np.isin(ours[r][ours[r] != 0], allowed).all()
    else:
        assert np.unique(ours[ours != 0]).size <= 15
    assert _output_error(w, ours, x) < _output_error(w, plain, x)


def test_grouped_h_compensates_each_group_alone() -> None:
    rng = np.random.default_rng(2)
    xs = [_correlated_inputs(rng, 500, 12) for _ in range(3)]
    h = np.stack([x.T @ x for x in xs])
    w = rng.standard_normal((6, 12))
    mask = np.ones(w.shape, bool)
    grid = np.linspace(-2, 2, 7)
    together = compensate_groups(w, h, ColumnRounder(mask, grid))
    for g in range(3):
        alone = compensate(w[2 * g : 2 * g + 2], h[g], ColumnRounder(mask[:2], grid))
        assert np.array_equal(together[2 * g : 2 * g + 2], alone)


def _h_model(kind: str) -> tuple[onnx.ModelProto, np.ndarray, dict[str, Any]]:
    """A one-layer model of `kind`, its input and the layer's attributes."""
    rng = np.random.default_rng(3)
    if kind == "conv":
        attrs = {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2], "group": 2}
        w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "W"], ["y"], name="layer", **attrs)
        x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
        model = make_model([node], {"x": [2, 4, 9, 8]}, {"y": list("nchw")}, {"W": w})
    elif kind == "same":
        attrs = {"auto_pad": "SAME_UPPER", "strides": [2, 2]}
        w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "W"], ["y"], name="layer", **attrs)
        x = rng.standard_normal((1, 3, 8, 7)).astype(np.float32)
        model = make_model([node], {"x": [1, 3, 8, 7]}, {"y": list("nchw")}, {"W": w})
    elif kind == "gemm":
        attrs = {"transA": 1, "transB": 1}
        w = rng.standard_normal((5, 7)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "W"], ["y"], name="layer", **attrs)
        x = rng.standard_normal((7, 4)).astype(np.float32)
        model = make_model([node], {"x": [7, 4]}, {"y": list("nk")}, {"W": w})
    else:  # W @ X with X of rank 3
        attrs = {}
        w = rng.standard_normal((5, 7)).astype(np.float32)
        node = helper.make_node("MatMul", ["W", "x"], ["y"], name="layer")
        x = rng.standard_normal((2, 7, 3)).astype(np.float32)
        model = make_model([node], {"x": [2, 7, 3]}, {"y": list("bmn")}, {"W": w})
    return model, x, attrs


@pytest.mark.parametrize("kind", ["conv", "same", "gemm", "matmul-left"])
def test_h_is_in_the_stored_matrix_column_order(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # For any change D of the weight, the output changes by D's layer output, whose energy
    # is tr(D H D^T) with D as the stored matrix: checked against ORT itself.
    monkeypatch.setattr(activations, "MIN_ROWS_PER_COLUMN", 0)  # a few inputs suffice here
    proto, x, _ = _h_model(kind)
    model = ir.from_proto(proto)
    (group,) = find_weight_groups(model.graph)
    hessians = collect(model, [group], Calibration([{"x": x}], "file", "test"))
    h = hessians.get("W")
    assert h is not None
    rng = np.random.default_rng(4)
    d = rng.standard_normal(group.array().shape).astype(np.float32)
    changed = onnx.ModelProto()
    changed.CopyFrom(proto)
    changed.graph.initializer[0].CopyFrom(numpy_helper.from_array(d, "W"))
    (y,) = run(changed, {"x": x})
    stored = group.stored_matrix(d).astype(np.float64)
    if h.ndim == 3:
        per = stored.shape[0] // h.shape[0]
        energy = sum(
            np.trace(stored[g * per : (g + 1) * per] @ h[g] @ stored[g * per : (g + 1) * per].T)
            for g in range(h.shape[0])
        )
    else:
        energy = np.trace(stored @ h @ stored.T)
    assert energy == pytest.approx(float(np.sum(np.square(y, dtype=np.float64))), rel=1e-4)


def test_h_smaller_than_a_row_covers_each_of_its_segments() -> None:
    # A recurrent weight's stored row is [gates x inputs]: one H over the inputs serves
    # each gate's segment, as if the rows were cut into one row per gate.
    rng = np.random.default_rng(6)
    x = _correlated_inputs(rng, 400, 8)
    h = x.T @ x
    w = rng.standard_normal((2, 3 * 8)).astype(np.float32)
    mask = rng.random(w.shape) > 0.2
    grid = np.linspace(-2, 2, 9)
    scales = np.array([0.5, 2.0])
    whole = compensate_groups(w, h, ColumnRounder(mask, grid, scales))
    cut = compensate(
        w.reshape(6, 8), h, ColumnRounder(mask.reshape(6, 8), grid, np.repeat(scales, 3))
    )
    assert np.array_equal(whole, cut.reshape(2, 24))
    assert compensable(w, h) and not compensable(w, np.eye(7))


def _recurrent_model(op: str, steps: int, batch: int, **attrs: Any) -> onnx.ModelProto:
    """One LSTM / GRU in the main graph, its Y the output; W and R [1, gates*16, 8|16]."""
    rng = np.random.default_rng(7)
    gates = {"LSTM": 4, "GRU": 3}[op]
    w = (0.3 * rng.standard_normal((1, gates * 16, 8))).astype(np.float32)
    r = (0.3 * rng.standard_normal((1, gates * 16, 16))).astype(np.float32)
    node = helper.make_node(op, ["x", "W", "R"], ["y"], name="rnn", hidden_size=16, **attrs)
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    return make_model(
        [node], {"x": [steps, batch, 8]}, {"y": [steps, dirs, batch, 16]}, {"W": w, "R": r}
    )


def test_recurrent_weights_get_h_of_their_step_inputs() -> None:
    steps, batch = 20, 4
    proto = _recurrent_model("LSTM", steps, batch)
    model = ir.from_proto(proto)
    weights = [w for w in find_stored_weights(model.graph, 0) if w.name in ("W", "R")]
    rng = np.random.default_rng(8)
    x = _correlated_inputs(rng, steps * batch, 8).reshape(steps, batch, 8).astype(np.float32)
    hessians = collect(model, weights, Calibration([{"x": x}], "file", "test"))
    flat = x.reshape(-1, 8).astype(np.float64)
    np.testing.assert_allclose(hessians.get("W"), flat.T @ flat, rtol=1e-5, atol=1e-4)
    (y,) = run(proto, {"x": x})  # [steps, 1, batch, 16]; the initial state is zero
    earlier = y[:-1].reshape(-1, 16).astype(np.float64)
    np.testing.assert_allclose(hessians.get("R"), earlier.T @ earlier, rtol=1e-4, atol=1e-6)
    assert hessians.rows == {"W": steps * batch, "R": (steps - 1) * batch}
    # compensated, W at 3 bits changes the output less than rounded to nearest
    w = model.graph.initializers["W"].const_value.numpy()
    errors = []
    for hessian in (None, hessians.get("W")):
        q = quantize(w, 3, 0.0, "mse", row_axis=0, hessian=hessian)
        changed = onnx.ModelProto()
        changed.CopyFrom(proto)
        changed.graph.initializer[0].CopyFrom(numpy_helper.from_array(q, "W"))
        errors.append(float(np.linalg.norm(run(changed, {"x": x})[0] - y)))
    assert errors[1] < 0.85 * errors[0]  # 0.68 here; compensation pays most on correlated x


@pytest.mark.parametrize(
    ("op", "attrs", "reason"),
    [
        ("GRU", {}, "GRU recurrent weight"),
        ("LSTM", {"direction": "bidirectional"}, "reverse or bidirectional"),
    ],
)
def test_recurrent_weights_without_a_known_input_keep_plain_rounding(
    op: str, attrs: dict[str, Any], reason: str
) -> None:
    proto = _recurrent_model(op, 40, 4, **attrs)
    model = ir.from_proto(proto)
    weights = [w for w in find_stored_weights(model.graph, 0) if w.name in ("W", "R")]
    x = np.random.default_rng(9).standard_normal((40, 4, 8)).astype(np.float32)
    hessians = collect(model, weights, Calibration([{"x": x}], "file", "test"))
    assert hessians.get("W") is not None  # every direction reads the same X
    assert hessians.get("R") is None and reason in hessians.left_out["R"]


def test_too_few_input_vectors_leave_a_weight_uncompensated() -> None:
    # 4 input vectors for 7 columns: H says little about the layer's inputs, and
    # compensating would fit those two (measured on the zoo's VAD models: worse on
    # other inputs than plain rounding).
    proto, x, _ = _h_model("gemm")
    model = ir.from_proto(proto)
    hessians = collect(model, find_weight_groups(model.graph), Calibration([{"x": x}], "file", ""))
    assert hessians.get("W") is None
    assert hessians.left_out["W"] == "4 input vectors for 7 columns"


def _conv_net(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv, grouped strided Conv, then two MatMuls after global pooling: small enough
    that 256 calibration samples give every layer 4 input vectors per column."""
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv2", strides=[2, 2], group=2),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "W3"], ["m3"], name="fc3"),
        helper.make_node("Relu", ["m3"], ["r3"]),
        helper.make_node("MatMul", ["r3", "W4"], ["y"], name="fc4"),
    ]
    weights = {
        "W1": rng.standard_normal((32, 3, 3, 3)) * 0.3,
        "W2": rng.standard_normal((64, 16, 3, 3)) * 0.1,
        "W3": rng.standard_normal((64, 48)) * 0.3,
        "W4": rng.standard_normal((48, 10)) * 0.3,
    }
    weights = {k: v.astype(np.float32) for k, v in weights.items()}
    return make_model(nodes, {"x": ["N", 3, 12, 12]}, {"y": ["N", 10]}, weights)


def _decoded(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in decode_model(path).graph.initializer}


def test_compiled_model_holds_the_compensated_arrays_it_simulated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(5)
    source = save(_conv_net(rng), tmp_path / "m.onnx")
    calibration = tmp_path / "cal.npz"
    np.savez(calibration, x=rng.standard_normal((256, 3, 12, 12)).astype(np.float32))
    captured: list[AllocatePass] = []
    build = compiler.build_passes

    def spy(*args: Any, **kwargs: Any) -> Any:
        passes = build(*args, **kwargs)
        captured.extend(p for p in passes if isinstance(p, AllocatePass))
        return passes

    monkeypatch.setattr(compiler, "build_passes", spy)
    out = tmp_path / "m.dc.onnx"
    options = dc_onnx.CompileOptions(calibration=str(calibration), max_error=0.02)
    report = dc_onnx.compile(source, out, options).report
    allocate = captured[-1]
    assert allocate.allocator is not None and allocate.allocation is not None
    assert allocate.stats["compensated"] == ["W1", "W2", "W3", "W4"]
    decoded = _decoded(out)
    compared = 0
    for layer in allocate.allocator.analysis.layers:
        setting = allocate.allocation.settings[layer.weight]
        if setting.keep or setting.float16:
            continue
        simulated = allocate.allocator.array(layer, setting)
        plain = quantize(layer.sizes.array, setting.bits or 8, setting.sparsity,
                         row_axis=row_axis_of(layer.group))  # fmt: skip
        assert not np.array_equal(simulated, plain), "compensation changed the weight"
        # a sparse kernel's weight is named after its layer; a decoded one keeps its name
        keys = [f"{layer.group.layers[0].name}.decoded_weight", layer.weight]
        got = next(decoded[k] for k in keys if k in decoded)
        if got.shape != simulated.shape:  # the kernel's [out, in] matrix
            got = layer.group.from_stored(got)
        assert np.array_equal(got, simulated), layer.weight
        compared += 1
    assert compared >= 2
    # The simulated and the measured error are the same number.
    simulated_error = allocate.allocation.simulated.worst if allocate.allocation.simulated else 0
    assert report.error is not None
    assert report.error["relative_l2"] == pytest.approx(simulated_error, rel=1e-4, abs=1e-7)
    cluster = next(p for p in report.passes if p.name == "cluster")
    assert all(layer["compensated"] for layer in cluster.stats["layers"].values())
    assert report.compensated == list(cluster.stats["layers"])
    assert report.to_json()["compensated"] == report.compensated
    assert "compensated: " in report.format_table()


def test_compensation_off_and_manual_mode(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    source = save(_conv_net(rng), tmp_path / "m.onnx")
    calibration = tmp_path / "cal.npz"
    x = rng.standard_normal((256, 3, 12, 12)).astype(np.float32)
    np.savez(calibration, x=x)
    errors = {}
    for mode in ("auto", "off"):
        out = tmp_path / f"{mode}.dc.onnx"
        options = dc_onnx.CompileOptions(
            sparsity=0.5, bits_conv=4, bits_fc=4, calibration=str(calibration), compensate=mode
        )
        report = dc_onnx.compile(source, out, options).report
        cluster = next(p for p in report.passes if p.name == "cluster")
        flags = [layer["compensated"] for layer in cluster.stats["layers"].values()]
        assert all(flags) if mode == "auto" else not any(flags)
        assert report.error is not None
        errors[mode] = report.error["relative_l2"]
    assert errors["auto"] < 0.8 * errors["off"]
    # On synthesized inputs, in either mode: no compensation unless asked for.
    manual = dc_onnx.CompileOptions(sparsity=0.5, bits_conv=4, bits_fc=4)
    for options in (manual, dc_onnx.CompileOptions()):
        report = dc_onnx.compile(source, tmp_path / "syn.dc.onnx", options).report
        assert report.calibration is not None and report.calibration["source"] == "synthetic"
        assert report.compensated == []


def test_compensate_flag_is_on_the_command_line(tmp_path: Path) -> None:
    from dc_onnx.cli import main

    rng = np.random.default_rng(7)
    source = save(_conv_net(rng), tmp_path / "m.onnx")
    report_path = tmp_path / "r.json"
    args = ["compile", str(source), "--sparsity", "0.3", "--compensate", "on",
            "--input-shape", "x=4,3,12,12", "--report", str(report_path)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    cluster = next(p for p in report["passes"] if p["name"] == "cluster")["stats"]
    # 8 synthesized samples: enough input vectors for the first conv only
    assert [n for n, layer in cluster["layers"].items() if layer["compensated"]] == ["conv1"]
    assert cluster["compensation"]["weights"] == ["W1"]
    assert "input vectors for" in cluster["compensation"]["left_out"]["W3"]
    with pytest.raises(SystemExit):
        main(["compile", str(source), "--compensate", "maybe"])


def _branch_model() -> onnx.ModelProto:
    """y = If(flag, Conv(Relu(x), Wt), Conv(Neg(x), We)): each weight multiplies a value
    computed inside its branch (silero-vad's shape: the network in one of two branches)."""
    rng = np.random.default_rng(10)
    weights = {n: rng.standard_normal((6, 4, 3)).astype(np.float32) for n in ("Wt", "We")}
    out = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)

    def branch(name: str, op: str, w: str) -> onnx.GraphProto:
        nodes = [
            helper.make_node(op, ["x"], [f"{name}_a"]),
            helper.make_node("Conv", [f"{name}_a", w], [f"{name}_y"], pads=[1, 1]),
        ]
        return helper.make_graph(
            nodes, name, [], [helper.make_tensor_value_info(f"{name}_y", 1, None)]
        )

    node = helper.make_node(
        "If", ["flag"], ["y"], then_branch=branch("then", "Relu", "Wt"),
        else_branch=branch("else", "Neg", "We"),
    )  # fmt: skip
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", 1, [1, 4, 16]),
         helper.make_tensor_value_info("flag", onnx.TensorProto.BOOL, [])],
        [out], [numpy_helper.from_array(w, n) for n, w in weights.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_weights_inside_if_branches_get_h_of_their_branch_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Runs alternate the branches; each weight's H sums only the runs of its own branch:
    # for any change D of it, tr(D H D^T) is the energy of the outputs D alone changes.
    monkeypatch.setattr(activations, "MIN_ROWS_PER_COLUMN", 0)
    proto = _branch_model()
    model = ir.from_proto(proto)
    weights = [w for w in find_stored_weights(model.graph, 0) if w.name in ("Wt", "We")]
    weights += [g for g in find_weight_groups(model.graph) if g.weight.name in ("Wt", "We")]
    assert {w.weight.name for w in weights} == {"Wt", "We"}
    rng = np.random.default_rng(11)
    runs = [
        {"x": rng.standard_normal((1, 4, 16)).astype(np.float32), "flag": np.array(i % 3 == 0)}
        for i in range(7)
    ]
    hessians = collect(model, weights, Calibration(runs, "file", "test"))
    assert hessians.rows == {"Wt": 3 * 16, "We": 4 * 16}
    for name, index in (("Wt", 0), ("We", 1)):
        h = hessians.get(name)
        assert h is not None and h.shape == (12, 12)
        d = rng.standard_normal((6, 4, 3)).astype(np.float32)
        changed = onnx.ModelProto()
        changed.CopyFrom(proto)
        changed.graph.initializer[index].CopyFrom(numpy_helper.from_array(d, name))
        zero = onnx.ModelProto()
        zero.CopyFrom(proto)
        zero.graph.initializer[index].CopyFrom(numpy_helper.from_array(0 * d, name))
        energy = sum(
            float(np.sum(np.square(run(changed, r)[0] - run(zero, r)[0], dtype=np.float64)))
            for r in runs
        )
        stored = d.reshape(6, -1).astype(np.float64)
        assert np.trace(stored @ h @ stored.T) == pytest.approx(energy, rel=1e-4)


def _reordered_lstm(axis: int) -> onnx.ModelProto:
    """An LSTM whose W is a 2-D weight with its halves swapped along `axis` and a leading
    axis added (Slice, Concat, Unsqueeze), as exporters reorder the gates."""
    rng = np.random.default_rng(12)
    w = (0.3 * rng.standard_normal((64, 8))).astype(np.float32)
    r = (0.3 * rng.standard_normal((1, 64, 16))).astype(np.float32)
    half = 32 if axis == 0 else 4
    consts = {
        "s0": np.array([0]), "e0": np.array([half]), "s1": np.array([half]),
        "e1": np.array([2 * half]), "ax": np.array([axis]), "u": np.array([0]),
    }  # fmt: skip
    nodes = [
        helper.make_node("Slice", ["W2", "s0", "e0", "ax"], ["lo"]),
        helper.make_node("Slice", ["W2", "s1", "e1", "ax"], ["hi"]),
        helper.make_node("Concat", ["hi", "lo"], ["swapped"], axis=axis),
        helper.make_node("Unsqueeze", ["swapped", "u"], ["W"]),
        helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="rnn", hidden_size=16),
    ]
    return make_model(nodes, {"x": [40, 2, 8]}, {"y": [40, 1, 2, 16]}, {"W2": w, "R": r, **consts})


@pytest.mark.parametrize("axis", [0, 1])
def test_a_recurrent_weight_reached_through_row_reordering_gets_h(axis: int) -> None:
    # Picking and stacking rows keeps every row's columns: H over the step inputs applies.
    # Cutting the columns does not: then no H.
    model = ir.from_proto(_reordered_lstm(axis))
    weights = [w for w in find_stored_weights(model.graph, 0) if w.name == "W2"]
    assert len(weights) == 1
    x = _correlated_inputs(np.random.default_rng(13), 80, 8).reshape(40, 2, 8)
    hessians = collect(model, weights, Calibration([{"x": x.astype(np.float32)}], "file", ""))
    if axis == 0:
        flat = x.reshape(-1, 8).astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(hessians.get("W2"), flat.T @ flat, rtol=1e-5, atol=1e-4)
    else:
        assert hessians.get("W2") is None and hessians.left_out["W2"] == "storage form"
