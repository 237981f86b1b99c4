"""The zoo harness offline: manifest, input synthesis, inventory, table writer, failures.

Nothing here downloads: the real models are only fetched by `make zoo`.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS

sys.path.insert(0, str(MODELS))
import zoo
import zoo_measure
import zoo_outputs


def test_manifest_is_sane() -> None:
    assert len(zoo.ZOO) >= 12
    assert len(zoo.BY_NAME) == len(zoo.ZOO), "names must be unique"
    for m in zoo.ZOO:
        assert re.fullmatch(r"[a-z0-9.-]+", m.name), m.name
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", m.package), m.package
        assert m.path.endswith(".onnx") and not m.path.startswith("/")
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256), m.name
        assert m.covers
        if m.derive:
            assert m.derive in zoo.DERIVATIONS
            assert m.derived_sha256 and re.fullmatch(r"[0-9a-f]{64}", m.derived_sha256)
        for spec in m.inputs.values():
            kinds = ("normal", "uniform", "int", "const", *zoo.GENERATORS)
            assert spec.dist is None or spec.dist[0] in kinds
    covers = " ".join(m.covers for m in zoo.ZOO)
    for construct in ("OCR", "detection", "If", "LSTM", "GRU", "Gather", "fp16", "int8"):
        assert construct in covers, construct


def _model_with_inputs() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h"])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x, ids, sr], [y])
    return helper.make_model(graph)


def test_inputs_fill_symbolic_dims_and_keep_integers_in_range() -> None:
    specs = {
        "ids": zoo.InputSpec((2, 7), ("int", 100, 110)),
        "sr": zoo.InputSpec((), ("const", 16000)),
    }
    feeds = zoo.synth_inputs(_model_with_inputs(), specs, seed=3)
    assert feeds["x"].shape == (1, 3, 1) and feeds["x"].dtype == np.float32
    assert feeds["ids"].shape == (2, 7) and feeds["ids"].dtype == np.int64
    assert feeds["ids"].min() >= 100 and feeds["ids"].max() < 110
    assert feeds["sr"].shape == () and int(feeds["sr"]) == 16000
    again = zoo.synth_inputs(_model_with_inputs(), specs, seed=3)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds), "seeded: same inputs"
    other = zoo.synth_inputs(_model_with_inputs(), specs, seed=4)
    assert not np.array_equal(feeds["x"], other["x"])
    sized = zoo.synth_inputs(_model_with_inputs(), specs, seed=3, dims={"batch": 2, "h": 5})
    assert sized["x"].shape == (2, 3, 5)


def _tensor(name: str, shape: tuple[int, ...], dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, dtype), name)


def _inventory_model() -> onnx.ModelProto:
    """Every place a weight can hide: If branches (own Constant, outer-scope read through a
    Transpose), LSTM, an embedding Gather, fp16 through Cast, int8 through DequantizeLinear."""
    out = helper.make_tensor_value_info
    then_branch = helper.make_graph(
        [
            helper.make_node("Constant", [], ["Wt"], value=_tensor("Wt", (16, 16))),
            helper.make_node("MatMul", ["x", "Wt"], ["t"]),
        ],
        "then",
        [],
        [out("t", TensorProto.FLOAT, None)],
    )
    else_branch = helper.make_graph(
        [
            helper.make_node("Transpose", ["W_outer"], ["W_outer_t"]),
            helper.make_node("MatMul", ["x", "W_outer_t"], ["e"]),
        ],
        "else",
        [],
        [out("e", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Gemm", ["x", "W_main"], ["g"]),
        helper.make_node(
            "If", ["cond"], ["branch"], then_branch=then_branch, else_branch=else_branch
        ),
        helper.make_node("LSTM", ["seq", "W_lstm", "R_lstm"], ["h"], hidden_size=16),
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("Cast", ["W_half"], ["W_half_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "W_half_f"], ["hf"]),
        helper.make_node("DequantizeLinear", ["W_q", "scale"], ["W_q_f"]),
        helper.make_node("MatMul", ["x", "W_q_f"], ["q"]),
    ]
    inits = [
        _tensor("W_main", (16, 16)),
        _tensor("W_outer", (16, 16)),
        _tensor("W_lstm", (1, 64, 8)),
        _tensor("R_lstm", (1, 64, 16)),
        _tensor("table", (100, 16)),
        _tensor("W_half", (16, 16), np.float16),
        _tensor("W_q", (16, 16), np.int8),
        numpy_helper.from_array(np.float32(0.1), "scale"),
    ]
    inputs = [
        out("x", TensorProto.FLOAT, [1, 16]),
        out("cond", TensorProto.BOOL, []),
        out("seq", TensorProto.FLOAT, [2, 1, 8]),
        out("ids", TensorProto.INT64, [3]),
    ]
    outputs = [out(n, TensorProto.FLOAT, None) for n in ("g", "branch", "h", "emb", "hf", "q")]
    graph = helper.make_graph(nodes, "inv", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_inventory_finds_every_place(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_inventory_model(), str(path))
    inv = zoo.inventory(path, "m")
    weights = {w.name: w for w in inv.weights}
    assert set(weights) == {
        "W_main",
        "W_outer",
        "W_lstm",
        "R_lstm",
        "table",
        "W_half",
        "W_q",
        "Wt",
    }  # fmt: skip  (scale is too small to be a weight)
    assert weights["W_main"].consumers == ["Gemm"] and weights["W_main"].scope == "main"
    assert weights["Wt"].source == "Constant" and weights["Wt"].scope.startswith("main/If:")
    assert weights["Wt"].consumers == ["MatMul"]
    assert weights["W_outer"].outer_scope_reads == 1
    assert weights["W_outer"].chain == "Transpose" and weights["W_outer"].consumers == ["MatMul"]
    assert weights["W_lstm"].consumers == ["LSTM"] and weights["R_lstm"].consumers == ["LSTM"]
    assert weights["table"].consumers == ["Gather"]
    assert weights["W_half"].dtype == "fp16" and weights["W_half"].chain == "Cast"
    assert weights["W_half"].nbytes == 16 * 16 * 2
    assert weights["W_q"].dtype == "int8" and weights["W_q"].chain == "DequantizeLinear"
    b = inv.breakdown()
    assert b["where"]["If body (depth 1) Constant"] == (1, 16 * 16 * 4)
    assert b["where"]["read from a subgraph (outer scope)"][0] == 1
    assert b["consumer"]["LSTM"][0] == 2 and b["dtype"]["int8"] == (1, 256)
    assert inv.ops["If"] == 1 and inv.ops["MatMul"] == 4  # subgraph nodes counted
    row = zoo.inventory_rows([inv])[0]
    assert row[0] == "m" and "If body" in row[3]


def test_fp16_derivation_keeps_outputs(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])
    w = numpy_helper.from_array(np.linspace(-1, 1, 256, dtype=np.float32).reshape(16, 16), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g", [x], [y], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    zoo.fp16_weights(path)
    weights = zoo.inventory(path).weights
    assert [(w.dtype, w.chain, w.consumers) for w in weights] == [("fp16", "Cast", ["MatMul"])]


def test_table_writer_keeps_failed_cells() -> None:
    model = zoo.ZOO[0]
    good = zoo_measure.Row(model, file_bytes=4000)
    good.cells = {
        "default": zoo_measure.Cell(bytes=1000, error=0.002, layers=3, layer_bytes=3900),
        "lossless-8bit": zoo_measure.Cell(failed="compile timed out after 9 s"),
        "max-error-0.05": zoo_measure.Cell(failed="n/a (no --max-error yet)"),
        "int8": zoo_measure.Cell(bytes=3990, failed="run failed: crashed (signal 11)"),
    }
    bad = zoo_measure.Row(zoo.ZOO[1], failed="pip download x==1 failed: ERROR: no | such")
    text = zoo_measure.tables([good, bad])
    assert "1000 B (4.0x), err 0.2% ok" in text
    assert "compile timed out after 9 s" in text and "n/a (no --max-error yet)" in text
    assert "no gain, run failed: crashed (signal 11)" in text
    assert "ERROR: no \\| such" in text  # escaped, the table keeps its columns
    for line in text.splitlines():
        if line.startswith(f"| {model.name} ") and "err" in line:
            assert line.count(" | ") == 5


def test_compile_failure_is_a_cell(tmp_path: Path) -> None:
    fake = tmp_path / "dc-onnx"
    fake.write_text(
        "#!/bin/sh\necho 'Traceback ...' >&2\necho 'dc-onnx: error: boom' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    setting = zoo_measure.SETTINGS[0]
    cell, out = zoo_measure.compile_cell(str(fake), setting, tmp_path / "m.onnx", tmp_path, 30)
    assert out is None and cell.failed == "boom"


def test_fetch_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 1, "", "noise\nERROR: No matching distribution\n")

    monkeypatch.setattr(zoo.subprocess, "run", refused)
    with pytest.raises(zoo.ZooError, match="failed: ERROR: No matching distribution"):
        zoo.fetch_one(zoo.ZOO[0], tmp_path)
    assert zoo.main(["fetch", "--cache", str(tmp_path), "--only", zoo.ZOO[0].name]) == 1
    assert zoo.main(["fetch", "--only", "no-such-model"]) == 2


def test_relative_l2_and_first_line() -> None:
    a = np.array([3.0, 4.0])
    assert zoo_measure.relative_l2(a, a) == 0.0
    assert zoo_measure.relative_l2(a, np.array([3.0, 4.5])) == pytest.approx(0.1)
    assert zoo_measure.relative_l2(a, np.zeros(3)) == float("inf")
    assert zoo_measure.first_line("x\nValueError: bad thing\n") == "ValueError: bad thing"
    assert zoo_measure.first_line("") == "failed (no message)"


def _row(index: int, file_bytes: int, **cells: zoo_measure.Cell) -> zoo_measure.Row:
    row = zoo_measure.Row(zoo.ZOO[index], file_bytes=file_bytes)
    row.cells = dict(cells)
    return row


def test_summary_counts_each_done_criterion() -> None:
    Cell = zoo_measure.Cell
    rows = [
        # within budget, smaller than int8 and more accurate: counts everywhere; 8x at 0.05
        _row(0, 8000, default=Cell(bytes=1000, error=0.004, analysis_s=12.0, analysed=40),
             int8=Cell(bytes=2000, error=0.03), **{"max-error-0.05": Cell(bytes=1000, error=0.04),
                                                    "lossless-8bit": Cell(error=0.009, bytes=9)}),
        # over budget, but no worse than an int8 that is itself over: beats int8 only
        _row(1, 8000, default=Cell(bytes=1500, error=0.02, analysis_s=50.0, analysed=5),
             int8=Cell(bytes=2000, error=0.03), **{"max-error-0.05": Cell(bytes=2000, error=0.04),
                                                    "lossless-8bit": Cell(error=0.011, bytes=9)}),
        # int8 failed: only the budget counts; the 0.05 compile failed: 1.0x
        _row(2, 8000, default=Cell(bytes=7000, error=0.001), int8=Cell(failed="no output"),
             **{"max-error-0.05": Cell(failed="compile timed out after 9 s")}),
        # the default failed: counts nowhere
        _row(3, 8000, default=Cell(failed="boom"), int8=Cell(bytes=2000, error=0.01)),
    ]  # fmt: skip
    text = zoo_measure.summary(rows)
    assert "within the 1% budget (measured here): 2 of 4 (50%)" in text
    assert "whichever is looser (where int8 fails, only the budget counts): 3 of 4 (75%)" in text
    assert "(a failed compile counts as 1.0x): 2.5x" in text  # median of 8, 4, 1, 1
    assert "40 weights analysed: 12 s (slowest: " in text and "50 s)" in text
    assert "--bits-fc 8`) within 1%: 1 of 4 (25%) (target all)" in text
    assert text in zoo_measure.tables(rows)


def test_coverage_cell_has_no_report_dump() -> None:
    row = _row(0, 8000)
    cell = zoo_measure.Cell(bytes=1000, layers=3, layer_bytes=3900, compile_s=61.4,
                            analysis_s=40.2, analysed=3)  # fmt: skip
    text = zoo_measure.coverage_cell(row, cell)
    assert text.startswith("3 / ") and text.endswith("; compile 61 s (analysis 40 s, 3 weights)")
    assert "None" not in text and "mode" not in text


def test_analysis_of_reads_the_allocate_pass() -> None:
    report = {"passes": [
        {"name": "canonicalize", "stats": {}},
        {"name": "allocate", "stats": {"analysis_seconds": 3.5, "layers": {"a": {}, "b": {}}}},
        "junk",
    ]}  # fmt: skip
    assert zoo_measure.analysis_of(report) == (3.5, 2)
    assert zoo_measure.analysis_of({}) == (None, None)


def test_each_setting_is_marked_against_its_own_budget() -> None:
    Cell = zoo_measure.Cell
    row = _row(0, 8000, default=Cell(bytes=1000, error=0.03), int8=Cell(bytes=2000, error=0.03),
               **{"max-error-0.05": Cell(bytes=900, error=0.03)})  # fmt: skip
    text = zoo_measure.tables([row])
    assert "1000 B (8.0x), err 3% over" in text  # the default budget: 1%
    assert "900 B (8.9x), err 3% ok" in text  # --max-error 0.05
    assert "2.0 KB (4.0x), err 3% over" in text  # int8 against the default budget


def test_carried_state_is_the_state_after_earlier_chunks(tmp_path: Path) -> None:
    # s_out = s + x: after CARRY_CHUNKS chunks of ones from the zero state, s holds that count.
    def value(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 2])

    nodes = [
        helper.make_node("Add", ["s", "x"], ["s_out"]),
        helper.make_node("Identity", ["x"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [value("x"), value("s")], [value("y"), value("s_out")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    specs = {"x": zoo.InputSpec(None, ("const", 1.0)), "s": zoo.InputSpec(None, ("const", 0.0))}
    model = dataclasses.replace(zoo.ZOO[0], inputs=specs, carry={"s": "s_out"})
    feeds = zoo.synth_inputs(proto, specs, seed=0)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    carried = zoo.carried_state(model, session, proto, feeds, 0, specs)
    np.testing.assert_array_equal(carried["s"], np.full((1, 2), zoo.CARRY_CHUNKS, np.float32))
    np.testing.assert_array_equal(carried["x"], feeds["x"])


def test_inputs_of_several_runs_are_a_directory_with_the_alternate_specs(
    tmp_path: Path,
) -> None:
    # y = x + s; every other run draws x from the alternate spec (a different width).
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "n"])
    graph = helper.make_graph([helper.make_node("Add", ["x", "s"], ["y"])], "g", [x, s], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    specs = {"x": zoo.InputSpec((1, 4), ("normal", 1.0)), "s": zoo.InputSpec(None, ("const", 0.0))}
    model = dataclasses.replace(
        zoo.ZOO[0], name="tiny", path="pkg/tiny.onnx", inputs=specs, runs=3,
        alternate={"x": zoo.InputSpec((1, 2), ("normal", 1.0))},
    )  # fmt: skip
    zoo.model_path(model, tmp_path).parent.mkdir(parents=True)
    onnx.save(proto, str(zoo.model_path(model, tmp_path)))
    out = zoo.write_inputs(model, tmp_path)
    assert out.is_dir() and out == zoo.inputs_path(model, tmp_path)
    runs = zoo.read_runs(out)
    assert [r["x"].shape for r in runs] == [(1, 4), (1, 2), (1, 4)]
    assert not np.array_equal(runs[0]["x"], runs[2]["x"])  # seeded apart
    # the first run is what a one-run model writes (the same seed)
    one = zoo.write_inputs(dataclasses.replace(model, runs=1), tmp_path)
    assert one.suffix == ".npz"
    np.testing.assert_array_equal(zoo.read_runs(one)[0]["x"], runs[0]["x"])
    # written again: replaced whole, nothing half-written left beside it
    zoo.write_inputs(model, tmp_path)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, one.name])
    # drawn differently, they are other inputs: a cache never serves the old ones
    wider = dataclasses.replace(model, inputs={"x": zoo.InputSpec((1, 5), ("normal", 1.0))})
    assert zoo.inputs_path(wider, tmp_path) != out


def test_speech_sampled_at_8k_has_the_pitch_and_formants_of_16k() -> None:
    """The 8 kHz chunks are speech sampled at 8 kHz, not 16 kHz samples read at 8 kHz
    (which would halve every frequency): the strongest harmonic sits at the same Hz."""
    from zoo_inputs import speech

    peaks = []
    for rate in (16000, 8000):
        x = speech(np.random.default_rng(7), (1, rate), rate)[0].astype(np.float64)
        spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        hz = np.fft.rfftfreq(x.size, 1 / rate)
        peaks.append(hz[int(np.argmax(spectrum))])
    assert abs(peaks[0] - peaks[1]) <= 2.0, peaks


def test_zoo_outputs_tells_near_ties_from_confident_rows() -> None:
    rows = np.array([[0.98, 0.01, 0.01], [0.55, 0.45, 0.0]], np.float32)
    assert zoo_outputs.is_probability_rows(rows)
    assert not zoo_outputs.is_probability_rows(rows * 2)  # rows that do not sum to 1
    assert not zoo_outputs.is_probability_rows(np.array([0.002], np.float32))  # one value
    lines = zoo_outputs.describe("p", [rows, rows[:1]])
    assert lines[0].startswith("  p: 9 values")
    assert "1 of 3 rows under 0.9" in lines[1]
    assert len(zoo_outputs.describe("state", [rows - 0.5])) == 1  # not probabilities
