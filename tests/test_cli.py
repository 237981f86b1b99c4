"""The dc-onnx command line: exit codes, outputs, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import mlp_model, save
from dc_onnx.cli import main
from dc_onnx.io import side_file_of


def test_compile_prints_the_table_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    report = tmp_path / "report.json"
    code = main([
        "compile", str(source), "-o", str(tmp_path / "out.onnx"), "--sparsity", "0.8",
        "--sparsity-per-layer", "fc5=0.5", "--bits-fc", "4", "--report", str(report),
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "rate P+Q+H" in out and "fc1" in out and "ratio:" in out
    data = json.loads(report.read_text())
    side = side_file_of(tmp_path / "out.onnx")
    assert side is not None and side.parent == tmp_path
    assert data["compressed_bytes"] == sum(
        (tmp_path / f).stat().st_size for f in ("out.onnx", side.name)
    )
    assert data["ratio"] == pytest.approx(data["original_bytes"] / data["compressed_bytes"])
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert layers["fc1"]["density"] == pytest.approx(0.2, abs=1e-3)
    assert layers["fc5"]["density"] == pytest.approx(0.5, abs=1e-2)
    assert all(layer["weight_bits"] <= 4 for layer in layers.values())


def test_compile_quiet_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    assert main(["compile", str(source), "--quiet", "--sparsity", "0.5"]) == 0
    assert capsys.readouterr() == ("", "")
    side = side_file_of(tmp_path / "m.dc.onnx")
    assert side is not None and side.is_file() and side.name.startswith("m.dc.")


def test_verify_reports_errors_and_agreement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    main(["compile", str(source), "--quiet", "--bits-fc", "8", "--quality", "0"])
    inputs = tmp_path / "inputs.npz"
    x = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    np.savez(inputs, x=x)
    capsys.readouterr()
    assert (
        main(
            ["verify", str(source), str(tmp_path / "m.dc.onnx"), "--inputs", str(inputs), "--json"]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    (out,) = result["outputs"]
    assert result["samples"] == 32
    assert out["max_abs_error"] > 0 and out["max_rel_error"] < 0.1


def test_errors_exit_non_zero_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("nope")
    assert main(["compile", str(bogus)]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert main(["verify", str(bogus), str(tmp_path / "absent.onnx")]) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["compile"],
        ["compile", "m.onnx", "--bits-fc", "9"],
        ["compile", "m.onnx", "--sparsity-per-layer", "x"],
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2


def test_sparsity_out_of_range_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    assert main(["compile", str(source), "--sparsity", "1.5"]) == 1
    assert "sparsity must be in [0, 1)" in capsys.readouterr().err


def test_bench_prints_timings_memory_and_decode_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    main(["compile", str(source), "--quiet", "--sparsity", "0.8"])
    compiled = str(tmp_path / "m.dc.onnx")
    args = ["bench", str(source), compiled, "--batch", "1,5", "--repeat", "3", "--threads", "2"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threads"] == 2
    assert [b["batch"] for b in result["batches"]] == [1, 5]
    for b in result["batches"]:
        assert b["runs"] == 3
        assert b["original_median_ms"] > 0 and b["compiled_p90_ms"] >= b["compiled_median_ms"]
        assert b["speedup"] == pytest.approx(b["original_median_ms"] / b["compiled_median_ms"])
    for side in ("original", "compiled"):
        assert result[side]["creation_s"] > 0 and result[side]["rss_bytes"] is not None
    assert result["decode"]["layers"] == 5 and result["decode"]["symbols"] > 0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "huffman decode:" in out and "speedup" in out and "RSS +" in out


def test_bench_rejects_bad_batches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "a.onnx", "b.onnx", "--batch", "0,x"])
    assert exit_info.value.code == 2
    assert "batch sizes" in capsys.readouterr().err
