"""Writing outputs: never over an input, atomic model/side-file pairs, external data kept."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from coverage_models import if_branches
from onnx import TensorProto, helper

import dc_onnx
import dc_onnx.writer
from conftest import MODELS, make_model, mlp_model, run, save
from dc_onnx.cli import main
from dc_onnx.io import side_file_of
from dc_onnx.tools.decompile import decode_model

X = {"x": np.random.default_rng(5).standard_normal((3, 64)).astype(np.float32)}


def _external(model: onnx.ModelProto, path: Path, location: str) -> Path:
    onnx.save(model, str(path), save_as_external_data=True, location=location, size_threshold=0)
    return path


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_side_file_name_equal_to_the_inputs_data_leaves_the_input_intact(tmp_path: Path) -> None:
    source = _external(mlp_model(), tmp_path / "m.onnx", "weights.dcw")
    before = _snapshot(tmp_path)
    dc_onnx.compile(source, tmp_path / "weights.onnx")
    after = _snapshot(tmp_path)
    assert {k: after[k] for k in before} == before
    side = side_file_of(tmp_path / "weights.onnx")
    assert side is not None and side.name != "weights.dcw"
    out = tmp_path / "weights.onnx"
    np.testing.assert_allclose(run(out, X)[0], run(decode_model(out), X)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["m.onnx.data", "m.onnx", "link.onnx"])
def test_output_over_an_input_file_is_refused(tmp_path: Path, target: str) -> None:
    source = _external(mlp_model(), tmp_path / "m.onnx", "m.onnx.data")
    (tmp_path / "link.onnx").hardlink_to(tmp_path / "m.onnx.data")
    before = _snapshot(tmp_path)
    with pytest.raises(dc_onnx.OutputError, match="refusing to write the output over the input"):
        dc_onnx.compile(source, tmp_path / target)
    assert _snapshot(tmp_path) == before


def test_dcw_output_name_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    with pytest.raises(dc_onnx.OutputError, match="side file's suffix"):
        dc_onnx.compile(source, tmp_path / "out.dcw")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_side_file_name_carries_a_content_hash(tmp_path: Path) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    files = dc_onnx.compile(source, out, dc_onnx.CompileOptions(bits_fc=5)).report.files
    first = side_file_of(out)
    assert first is not None and files == ["out.onnx", first.name]
    assert first.name.startswith("out.") and first.name.endswith(".dcw")
    dc_onnx.compile(source, out, dc_onnx.CompileOptions(bits_fc=5))
    assert side_file_of(out) == first  # same content, same name: builds are reproducible
    dc_onnx.compile(source, out, dc_onnx.CompileOptions(bits_fc=3))
    second = side_file_of(out)
    assert second is not None and second != first
    assert not first.exists()  # the previous output's side file went with it
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.onnx", "out.onnx", second.name])


def test_failed_rename_of_the_model_keeps_the_previous_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    dc_onnx.compile(source, out, dc_onnx.CompileOptions(bits_fc=5))
    expected = run(out, X)[0]
    before = _snapshot(tmp_path)
    real_replace = os.replace

    def fail_on_the_model(src: str, dst: str) -> None:
        if Path(dst) == out:
            raise OSError(5, "simulated I/O error", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_the_model)
    with pytest.raises(dc_onnx.OutputError, match="simulated I/O error"):
        dc_onnx.compile(source, out, dc_onnx.CompileOptions(bits_fc=3))
    monkeypatch.undo()
    np.testing.assert_array_equal(run(out, X)[0], expected)
    after = _snapshot(tmp_path)
    assert {k: after[k] for k in before} == before  # the previous pair, untouched
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_a_file_that_only_looks_like_ours_is_not_removed(tmp_path: Path) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    dc_onnx.compile(source, out)
    side = side_file_of(out)
    assert side is not None
    side.write_bytes(b"someone else's file now")  # no dc-onnx magic: not ours to delete
    dc_onnx.compile(source, out, dc_onnx.CompileOptions(bits_fc=3))
    assert side.read_bytes() == b"someone else's file now"


def _gather_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    table = rng.integers(-9, 9, (300, 64)).astype(np.int64)  # int64: nothing encodes it
    # Large enough that codes beat float16 (a small layer's codebook outweighs its codes).
    w = rng.standard_normal((64, 256)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["g"]),
        helper.make_node("Cast", ["g"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["f", "W"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(table, "E"), onnx.numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


IDS = {"ids": np.array([0, 5, 17, 299], np.int64)}


def test_dense_external_weights_stay_external(tmp_path: Path) -> None:
    source = _external(_gather_model(), tmp_path / "m.onnx", "m.weights")
    out = tmp_path / "m.dc.onnx"
    files = dc_onnx.compile(source, out).report.files
    data = [f for f in files if f.endswith(".data")]
    assert len(data) == 1 and data[0].startswith("m.dc.")
    assert (tmp_path / data[0]).stat().st_size >= 300 * 64 * 8
    assert out.stat().st_size < 300 * 64 * 8 // 4  # the table is not inlined
    np.testing.assert_allclose(
        run(out, IDS)[0], run(decode_model(out), IDS)[0], rtol=1e-5, atol=1e-5
    )
    table = next(t for t in onnx.load(str(out), load_external_data=False).graph.initializer)
    entries = {e.key: e.value for e in table.external_data}
    assert table.name == "E" and int(entries["offset"]) % 4096 == 0


def test_single_file_inlines_dense_external_weights(tmp_path: Path) -> None:
    source = _external(_gather_model(), tmp_path / "m.onnx", "m.weights")
    out = tmp_path / "m.dc.onnx"
    files = dc_onnx.compile(source, out, dc_onnx.CompileOptions(single_file=True)).report.files
    assert files == ["m.dc.onnx"]
    np.testing.assert_allclose(
        run(out, IDS)[0], run(decode_model(out), IDS)[0], rtol=1e-5, atol=1e-5
    )


def test_single_file_over_the_protobuf_limit_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _external(_gather_model(), tmp_path / "m.onnx", "m.weights")
    monkeypatch.setattr(dc_onnx.writer, "PROTOBUF_LIMIT", 50_000)  # 2 GiB, scaled down
    with pytest.raises(dc_onnx.OutputError, match=r"--single-file: .* over protobuf's 2 GiB"):
        dc_onnx.compile(source, tmp_path / "out.onnx", dc_onnx.CompileOptions(single_file=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.weights"]
    dc_onnx.compile(source, tmp_path / "out.onnx")  # without --single-file it fits


def _cli(cwd: Path, *args: str, limit_fsize: int | None = None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if limit_fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))

    return subprocess.run(
        [sys.executable, "-m", "dc_onnx", *args],
        capture_output=True,
        text=True,
        cwd=cwd,  # not the source checkout, whose dc_onnx/ would shadow the installed one
        preexec_fn=limit,
        timeout=300,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("dc-onnx: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


LENET = str(MODELS / "lenet-300-100.onnx")


def test_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    line = _one_error_line(
        _cli(tmp_path.parent, "compile", LENET, "-o", str(tmp_path / "c.onnx"), limit_fsize=0)
    )
    assert "cannot write the output" in line
    assert list(tmp_path.iterdir()) == []


def test_output_path_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "dir.onnx").mkdir()
    line = _one_error_line(
        _cli(tmp_path.parent, "compile", LENET, "-o", str(tmp_path / "dir.onnx"))
    )
    assert "is a directory" in line
    assert [p.name for p in tmp_path.iterdir()] == ["dir.onnx"]


def test_report_in_a_missing_folder_is_refused_before_writing(tmp_path: Path) -> None:
    result = _cli(
        tmp_path.parent,
        "compile",
        LENET,
        "-o",
        str(tmp_path / "c.onnx"),
        "--report",
        str(tmp_path / "no/r.json"),
    )
    assert "directory does not exist" in _one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root passes permission checks: show it what a user would see
        access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode, **kw: Path(p) != folder and access(p, mode, **kw)
        )
    try:
        code = main(["compile", str(LENET), "-o", str(folder / "c.onnx")])
    finally:
        folder.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("dc-onnx: error:") == 1 and "no permission" in err, err
    assert list(folder.iterdir()) == []


def test_report_is_written_after_the_outputs(tmp_path: Path) -> None:
    result = _cli(
        tmp_path.parent,
        "compile", LENET, "-o", str(tmp_path / "c.onnx"), "--report", str(tmp_path / "r.json"),
        "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r.json").read_text().startswith("{")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _conv_model(auto_pad: str, strides: list[int]) -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    node = helper.make_node(
        "Conv", ["x", "W"], ["y"], name="conv", auto_pad=auto_pad, strides=strides
    )
    return make_model([node], {"x": [1, 3, 9, 9]}, {"y": [1, 8, "H", "W"]}, {"W": w})


@pytest.mark.parametrize("auto_pad", ["VALID", "SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("sparsity", [None, 0.8])  # None: quality 0.5 keeps ~60% (dense path)
@pytest.mark.parametrize("strides", [[1, 1], [2, 2]])
def test_conv_auto_pad_loads_and_matches_at_any_density(
    tmp_path: Path, auto_pad: str, sparsity: float | None, strides: list[int]
) -> None:
    source = save(_conv_model(auto_pad, strides), tmp_path / "m.onnx")
    out = tmp_path / "m.dc.onnx"
    options = (
        dc_onnx.CompileOptions(sparsity=sparsity)
        if sparsity
        else dc_onnx.CompileOptions(quality=0.5)
    )
    dc_onnx.compile(source, out, options)
    x = {"x": np.random.default_rng(1).standard_normal((1, 3, 9, 9)).astype(np.float32)}
    (expected,) = run(decode_model(out), x)
    (actual,) = run(out, x)
    assert actual.shape == run(source, x)[0].shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("inputs", [["a", "W", "W"], ["W", "W"]])
def test_a_node_reading_its_weight_twice_is_not_lowered_as_a_layer(
    tmp_path: Path, inputs: list[str]
) -> None:
    w = ((np.arange(16) % 7 - 3) * 0.25).astype(np.float32).reshape(4, 4)
    v = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", inputs, ["g"], name="self"),
        helper.make_node("Gemm", ["g", "V"], ["y"], name="other"),
    ]
    feeds = {"a": np.random.default_rng(1).standard_normal((4, 4)).astype(np.float32)}
    feeds = {k: a for k, a in feeds.items() if k in inputs}
    model = make_model(nodes, {k: [4, 4] for k in feeds}, {"y": [4, 4]}, {"W": w, "V": v})
    source = save(model, tmp_path / "m.onnx")
    out = tmp_path / "m.dc.onnx"
    report = dc_onnx.compile(source, out, dc_onnx.CompileOptions(quality=0)).report
    assert [layer.name for layer in report.layers] == ["other"]
    np.testing.assert_allclose(run(out, feeds)[0], run(source, feeds)[0], rtol=1e-4, atol=1e-4)


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                found += _graphs(sub)
    return found


def test_no_value_info_repeats_an_initializers_type(tmp_path: Path) -> None:
    # The serializer writes a value_info for every initializer; the initializer already
    # holds its type and shape, so the writer leaves those out, in subgraphs as well.
    model, feeds, _ = if_branches()
    source = save(model, tmp_path / "m.onnx")
    out = tmp_path / "m.dc.onnx"
    dc_onnx.compile(source, out, dc_onnx.CompileOptions(sparsity=0.5, bits_fc=6))
    proto = onnx.load(str(out), load_external_data=False)
    graphs = _graphs(proto.graph)
    assert len(graphs) == 3
    for graph in graphs:
        initializers = {t.name for t in graph.initializer}
        assert not initializers & {v.name for v in graph.value_info}, graph.name
    assert proto.graph.initializer  # there were initializers to repeat
    np.testing.assert_allclose(
        run(out, feeds)[0], run(decode_model(out), feeds)[0], rtol=1e-5, atol=1e-5
    )
