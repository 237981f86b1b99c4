"""`--plot DIR` figures and the progress output of long work."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from conftest import cnn_model, compile_model, mlp_model, save
from dc_onnx.budget import sensitivity
from dc_onnx.cli import main
from dc_onnx.progress import Progress, track
from dc_onnx.tools.plots import FIGURES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_pngs(directory: Path) -> None:
    for name in FIGURES:
        data = (directory / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 10_000, name  # drawn, not an empty canvas


def test_compile_plot_writes_one_png_per_figure_kind(tmp_path: Path) -> None:
    source = save(cnn_model(), tmp_path / "cnn.onnx")
    plots = tmp_path / "plots"
    assert main(["compile", str(source), "--quiet", "--sparsity", "0.6", "--plot", str(plots)]) == 0
    _assert_pngs(plots)
    assert sorted(p.name for p in plots.iterdir()) == sorted(FIGURES)


def test_inspect_plot_writes_the_figures(tmp_path: Path) -> None:
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.8)
    assert main(["inspect", str(compiled), "--plot", str(tmp_path / "figs")]) == 0
    _assert_pngs(tmp_path / "figs")


def test_plot_without_matplotlib_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    source = save(mlp_model(), tmp_path / "m.onnx")
    args = ["compile", str(source), "--quiet", "--plot", str(tmp_path / "p")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "pip install 'dc-onnx[plot]'" in err and "Traceback" not in err
    assert not (tmp_path / "m.dc.onnx").exists()  # refused before compiling
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.5)
    assert main(["inspect", str(compiled), "--plot", str(tmp_path / "p")]) == 1
    assert "dc-onnx[plot]" in capsys.readouterr().err


def test_plot_refuses_the_portable_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    args = ["compile", str(source), "--target", "portable", "--plot", str(tmp_path / "p")]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "--target portable" in capsys.readouterr().err


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dc_onnx.progress._PLAIN_AFTER_S", 0.0)  # as if the work were long
    logging.getLogger("dc_onnx").setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.INFO, logger="dc_onnx"), Progress(20, "retrain", "step") as p:
            for i in range(20):
                p.update(loss=1.0 / (i + 1))
    finally:
        logging.getLogger("dc_onnx").setLevel(logging.NOTSET)
    lines = [r.getMessage() for r in caplog.records if r.name == "dc_onnx.progress"]
    # The first step, then one per tenth; none between (the run is fast).
    assert len(lines) == 11 and lines[0].startswith("retrain: 1/20 step (")
    assert lines[-1].startswith("retrain: 20/20 step (") and "loss 0.05" in lines[-1]
    assert "step/s" in lines[0]


def test_progress_is_off_when_quiet(caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("dc_onnx").setLevel(logging.WARNING)  # what --quiet sets
    try:
        with caplog.at_level(logging.INFO, logger="dc_onnx.progress"):
            assert list(track([1, 2, 3], "cluster")) == [1, 2, 3]
    finally:
        logging.getLogger("dc_onnx").setLevel(logging.NOTSET)
    assert not [r for r in caplog.records if r.name == "dc_onnx.progress"]


def test_progress_draws_a_tqdm_bar_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    logging.getLogger("dc_onnx").setLevel(logging.INFO)
    try:
        with Progress(4, "encode", "layer") as p:
            for _ in range(4):
                p.update(loss=0.5)
    finally:
        logging.getLogger("dc_onnx").setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    assert "encode:" in err and "/4 [" in err and "layer/s" in err and "\r" in err


def test_short_work_prints_no_progress_lines(caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("dc_onnx").setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.INFO, logger="dc_onnx"):
            assert list(track(list(range(5)), "cluster")) == list(range(5))
    finally:
        logging.getLogger("dc_onnx").setLevel(logging.NOTSET)
    assert not [r for r in caplog.records if r.name == "dc_onnx.progress"]


def test_compile_cli_logs_per_layer_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dc_onnx.progress._PLAIN_AFTER_S", 0.0)
    source = save(mlp_model(), tmp_path / "m.onnx")
    with caplog.at_level(logging.INFO, logger="dc_onnx"):
        assert main(["compile", str(source), "--sparsity", "0.5"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "dc_onnx.progress"]
    assert any(line.startswith("cluster: 5/5 layer") for line in lines), lines
    assert any(line.startswith("encode: 5/5 layer") for line in lines), lines


def test_a_long_analysis_says_how_long_and_how_to_go_faster(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sensitivity, "SLOW_ANALYSIS_S", 0.0)  # every analysis counts as slow
    with caplog.at_level(logging.INFO, logger="dc_onnx"):
        compile_model(mlp_model(), tmp_path, max_error=0.02)
    lines = [r.getMessage() for r in caplog.records if r.name == "dc_onnx.budget.sensitivity"]
    progress = [line for line in lines if line.startswith("sensitivity ")]
    assert len(progress) == 5 and all("left in the analysis)" in line for line in progress[:-1])
    hints = [line for line in lines if "--analysis-samples" in line]
    assert len(hints) == 1 and "a manual compile" in hints[0]
