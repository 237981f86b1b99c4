"""The dc-onnx command line: exit codes, outputs, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from coverage_models import BUILDERS

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
        ["compile", "m.onnx", "--min-weight-elements", "0"],
        ["compile", "m.onnx", "--bits-other", "0"],
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sparsity", "1.5"], "sparsity must be in [0, 1)"),
        (["--quality", "-1"], "quality must be a finite number >= 0"),
        (["--quality", "nan"], "quality must be a finite number >= 0"),
        (["--quality", "inf"], "quality must be a finite number >= 0"),
        (["--sparsity-per-layer", "fc1=1.2"], "sparsity_per_layer 'fc1' must be in [0, 1)"),
        (["--bits-conv", "0"], "bits_conv must be in 1..8"),
        (["--epochs", "-1"], "epochs must be a finite number >= 0"),
        (["--centroid-lr", "0"], "lr must be a finite number > 0"),
        (["--prune-rounds", "0"], "rounds must be >= 1"),
        (["--recipe", "nope"], "invalid choice: 'nope'"),
        (["--val", "v.npz"], "--val needs --data"),
    ],
)
def test_bad_option_values_are_usage_errors_naming_the_option(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compile", "m.onnx", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_glob_that_matches_no_layer_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    args = ["compile", str(source), "--quiet", "--sparsity-per-layer", "fc1=0.5,fcx=0.9"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "dc-onnx: error:" in err and "'fcx' matches no layer" in err and "'fc1'" not in err
    assert not (tmp_path / "m.dc.onnx").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "a.onnx", "b.onnx", "--batch", "0"],
        ["verify", "a.onnx", "b.onnx", "--batch", "-3"],
        ["bench", "a.onnx", "b.onnx", "--repeat", "0"],
        ["bench", "a.onnx", "b.onnx", "--threads", "0"],
        ["bench", "a.onnx", "b.onnx", "--max-seconds", "nan"],
        ["eval", "a.onnx", "--data", "d.npz", "--batch", "0"],
    ],
)
def test_non_positive_counts_are_usage_errors(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "expected a positive" in capsys.readouterr().err


def test_compile_help_shows_every_option_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in [
        ("--quality", "0.5"), ("--bits-conv", "8"), ("--bits-fc", "5"),
        ("--index-bits-conv", "8"), ("--index-bits-fc", "5"),
        ("--prune-rounds", "1"), ("--epochs", "2"), ("--lr", "0.001"),
        ("--centroid-epochs", "2"), ("--centroid-lr", "0.0001"), ("--batch-size", "64"),
        ("--optimizer", "adamw"), ("--loss", "auto"), ("--temperature", "4.0"),
        ("--labels", "labels"), ("--weight-decay", "0.0"), ("--seed", "0"),
    ]:  # fmt: skip
        assert flag in text
        after = text[text.rindex(flag + " ") :]
        assert f"(default {default})" in after, flag
    for flag in ("--sparsity", "--sparsity-per-layer", "--simplify", "--single-file", "--data",
                 "--val", "--recipe", "--report", "--quiet", "--init",
                 "--bits-per-layer"):  # fmt: skip
        assert flag in text


def test_the_flags_build_the_nested_options() -> None:
    from dc_onnx.cli import _parser
    from dc_onnx.cli_args import options_from_args
    from dc_onnx.options import CompileOptions

    args = _parser().parse_args([
        "compile", "m.onnx", "--sparsity-per-layer", "a*=0.5", "--bits-fc", "4",
        "--index-bits-conv", "6", "--prune-rounds", "3", "--epochs", "5", "--centroid-lr",
        "0.01", "--batch-size", "16", "--loss", "distill", "--single-file",
    ])  # fmt: skip
    options = options_from_args(args, CompileOptions)
    assert options.prune.sparsity_per_layer == {"a*": 0.5} and options.prune.rounds == 3
    assert options.prune.quality == 0.5 and options.cluster.bits_fc == 4
    assert options.lower.index_bits_conv == 6 and options.single_file
    assert options.retrain.epochs == 5 and options.retrain.lr == 1e-3
    # Centroid retraining: its own epochs and lr, the shared settings of --batch-size etc.
    assert options.retrain_centroids.epochs == 2 and options.retrain_centroids.lr == 0.01
    assert options.retrain_centroids.batch_size == 16
    assert options.retrain_centroids.loss == "distill"
    assert options_from_args(_parser().parse_args(["compile", "m.onnx"]), CompileOptions) == (
        CompileOptions()
    )


def test_bench_rejects_bad_batches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "a.onnx", "b.onnx", "--batch", "0,x"])
    assert exit_info.value.code == 2
    assert "batch sizes" in capsys.readouterr().err


def test_compile_reports_storage_weights_and_what_it_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An LSTM/GRU model: the storage weights by kind in the table and the JSON report,
    the bias below the threshold named nowhere, a threshold moved by the option."""
    model, _, _ = BUILDERS["recurrent"]()
    source = save(model, tmp_path / "rnn.onnx")
    report = tmp_path / "report.json"
    assert main(["compile", str(source), "--bits-other", "6", "--report", str(report)]) == 0
    assert "weights:    4 storage" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert sorted(w["name"] for w in data["weights"]) == ["gru_R", "gru_W", "lstm_R", "lstm_W"]
    assert data["left_uncompressed"] == []
    assert all(layer["codebook_size"] <= 64 for layer in data["layers"])
    args = ["compile", str(source), "--min-weight-elements", "512", "--report", str(report)]
    assert main(args) == 0
    assert "lstm_B" in {w["name"] for w in json.loads(report.read_text())["weights"]}
