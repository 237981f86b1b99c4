"""`dc-onnx bench`: timings, memory, isolation of the sessions, and ORT's peers (`--peers`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
from onnx import helper
from test_latest_onnxruntime import _runtime_python

from conftest import make_model, run, save
from dc_onnx.cli import main
from dc_onnx.io import side_file_of
from dc_onnx.tools import bench as bench_module
from dc_onnx.tools import peers
from dc_onnx.tools.bench_sessions import NO_SPINNING
from dc_onnx.tools.memory import HIGH_WATER_MARK, PeakMeter

# ORT's 4-bit quantizer needs a native helper that onnxruntime-training 1.19.2 lacks.
HAS_4BIT = tuple(int(p) for p in onnxruntime.__version__.split(".")[:2]) >= (1, 20)


def fc_model(seed: int = 0) -> Any:
    """Two fully-connected layers as Gemm (transB 0 and 1, with biases) and an alpha Gemm."""
    rng = np.random.default_rng(seed)
    w = {
        "W1": rng.standard_normal((64, 64)) * 0.2,
        "b1": rng.standard_normal(64),
        "W2": rng.standard_normal((32, 64)) * 0.2,
        "b2": rng.standard_normal(32),
        "W3": rng.standard_normal((32, 8)) * 0.2,
    }
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["g1"], name="fc1"),
        helper.make_node("Relu", ["g1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "W2", "b2"], ["g2"], name="fc2", transB=1),
        helper.make_node("Gemm", ["g2", "W3"], ["y"], name="fc3", alpha=0.5),
    ]
    return make_model(
        nodes, {"x": ["N", 64]}, {"y": ["N", 8]}, {k: v.astype(np.float32) for k, v in w.items()}
    )


@pytest.fixture(scope="module")
def fc_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("fc")
    source = save(fc_model(), tmp / "fc.onnx")
    assert main(["compile", str(source), "--quiet", "--sparsity", "0.5"]) == 0
    return source, tmp / "fc.dc.onnx"


def test_gemm_to_matmul_keeps_the_product() -> None:
    model = fc_model()
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    (expected,) = run(model, {"x": x})
    assert peers.gemm_to_matmul(model) == 2  # fc3 has alpha 0.5: left alone
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["MatMul", "Add", "Relu", "MatMul", "Add", "Gemm"]
    names = {t.name for t in model.graph.initializer}
    assert "W2" not in names and "W1" in names  # the transposed copy replaced W2
    (actual,) = run(model, {"x": x})
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_a_missing_4bit_quantizer_is_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = save(fc_model(), tmp_path / "fc.onnx")
    for module in ("matmul_nbits_quantizer", "matmul_4bits_quantizer"):
        # None in sys.modules makes `import` raise ImportError
        monkeypatch.setitem(sys.modules, f"onnxruntime.quantization.{module}", None)
    builds = {b.name: b for b in peers.build_peers(source, tmp_path)}
    assert set(builds) == set(peers.PEERS)
    four_bit = builds[peers.FOUR_BIT]
    assert four_bit.path is None and four_bit.reason is not None
    assert "no usable 4-bit MatMul quantizer" in four_bit.reason
    int8 = builds[peers.INT8]
    assert int8.reason is None and int8.path is not None and Path(int8.path).is_file()


def test_peak_meter_sees_a_transient_allocation() -> None:
    meter = PeakMeter()
    assert meter.method == HIGH_WATER_MARK  # Linux with /proc/self/clear_refs

    def allocate() -> float:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched, freed on return
        return float(block.sum())

    total, peak = meter.measure(allocate)
    assert total == 64 * 2**20 // 8
    assert peak is not None and peak >= 60 * 2**20
    _, small = meter.measure(lambda: 1)
    assert small is not None and small < 8 * 2**20


def _check_result(result: dict[str, Any], batches: list[int], with_4bit: bool) -> None:
    forms = {f["name"]: f for f in result["forms"]}
    assert set(forms) == {"original", "compiled", peers.INT8, peers.FOUR_BIT}
    measured = ["original", "compiled", peers.INT8] + ([peers.FOUR_BIT] if with_4bit else [])
    for name in measured:
        f = forms[name]
        assert f["reason"] is None, f
        assert f["bytes"] > 0 and f["session"]["creation_s"] > 0
        assert f["session"]["rss_bytes"] is not None
        assert f["size_ratio"] == pytest.approx(forms["original"]["bytes"] / f["bytes"])
    assert forms["original"]["rel_l2_error"] == 0.0
    assert 0 < forms["compiled"]["rel_l2_error"] < 1.0
    assert 0 < forms[peers.INT8]["rel_l2_error"] < 0.1
    if with_4bit:
        assert 0 < forms[peers.FOUR_BIT]["rel_l2_error"] < 0.2
        assert "Gemm rewritten as MatMul" in forms[peers.FOUR_BIT]["note"]
        assert forms[peers.FOUR_BIT]["size_ratio"] > 2
    else:
        assert forms[peers.FOUR_BIT]["reason"], forms[peers.FOUR_BIT]
    compiled_files = side_file_of(forms["compiled"]["path"])
    assert compiled_files is not None
    assert forms["compiled"]["bytes"] == (
        Path(forms["compiled"]["path"]).stat().st_size + compiled_files.stat().st_size
    )
    assert [b["batch"] for b in result["batches"]] == batches
    for b in result["batches"]:
        assert b["runs"] == 3 and set(b["forms"]) == set(measured)
        for t in b["forms"].values():
            assert 0 < t["median_ms"] <= t["p90_ms"]
            assert t["after_others_ms"] > 0
            assert t["first_run_peak_bytes"] is not None and t["run_peak_bytes"] is not None
            expected = b["forms"]["original"]["median_ms"] / t["median_ms"]
            assert t["speedup"] == pytest.approx(expected)
    assert "allow_spinning=0" in result["isolation"]
    assert "twice in a row" in result["isolation"]
    assert result["memory_method"] == HIGH_WATER_MARK


class _Recorder:
    """A session stand-in that logs each Run by name."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def get_inputs(self) -> list[Any]:
        return []

    def run(self, _outputs: Any, _feeds: Any) -> list[np.ndarray]:
        self.log.append(self.name)
        return [np.ones(3, np.float32)]


def test_each_form_is_timed_on_its_second_run_in_a_row() -> None:
    log: list[str] = []
    names = ["original", "compiled", peers.INT8]
    live = [
        bench_module._Live(bench_module.Form(n, None), _Recorder(n, log)) for n in names
    ]  # fmt: skip
    timing = bench_module._time_batch(
        live, 1, PeakMeter(), 1, 4, 60.0, 0, time.perf_counter, {}, {}, ()
    )  # fmt: skip
    assert timing.runs == 4
    timed = log[len(names) :]  # after one warm-up Run per form
    pairs = [timed[i : i + 2] for i in range(0, len(timed), 2)]
    assert all(a == b for a, b in pairs), pairs  # every form twice in a row
    firsts = [a for a, _ in pairs]
    assert firsts[: len(names)] == names and firsts[len(names)] == "compiled"  # rotated
    assert all(t.after_others_ms is not None for t in timing.forms.values())


def test_bench_peers_sizes_times_and_compares_every_form(
    fc_pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source, compiled = fc_pair
    args = ["bench", str(source), str(compiled), "--batch", "1,5", "--repeat", "3", "--peers"]
    assert main([*args, "--threads", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threads"] == 2
    _check_result(result, [1, 5], HAS_4BIT)
    assert result["decode"]["layers"] == 3 and result["decode"]["symbols"] > 0
    assert main(args) == 0
    out = capsys.readouterr().out
    for text in ("isolation:", "peak RSS during Run:", "huffman decode:", "speedup", "ort-int8"):
        assert text in out
    assert ("ort-4bit  not measured:" in out) != HAS_4BIT


def test_bench_without_peers_measures_two_forms(
    fc_pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source, compiled = fc_pair
    assert (
        main(["bench", str(source), str(compiled), "--batch", "2", "--repeat", "3", "--json"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in result["forms"]] == ["original", "compiled"]
    assert set(result["batches"][0]["forms"]) == {"original", "compiled"}


def test_bench_cpu_time_says_so_and_needs_one_thread(
    fc_pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source, compiled = fc_pair
    args = ["bench", str(source), str(compiled), "--batch", "2", "--repeat", "3", "--cpu-time"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"clock: {bench_module.CPU_CLOCK}" in out
    assert "kernel path: " in out  # the library's ISA path, from the decode statistics
    assert main([*args, "--threads", "2"]) == 1
    assert "--cpu-time needs --threads 1" in capsys.readouterr().err


def test_every_session_has_spinning_off(
    fc_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    open_session = bench_module.open_session

    def spy(path: Any, options: Any = None) -> Any:
        seen.append(options)
        return open_session(path, options)

    monkeypatch.setattr(bench_module, "open_session", spy)
    source, compiled = fc_pair
    result = bench_module.bench(source, compiled, [1], repeat=3, peers=True)
    measured = [f for f in result.forms if f.reason is None]
    assert len(seen) == len(measured) >= 3
    for options in seen:
        for key in NO_SPINNING:
            assert options.get_session_config_entry(key) == "0"


def test_a_peer_that_fails_at_one_batch_size_is_a_row(
    fc_pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fc_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # batch 1 only
    fixed = save(model, tmp_path / "fixed.onnx")

    def fake_peers(original: Any, out_dir: Any) -> list[peers.PeerBuild]:
        return [peers.PeerBuild(peers.INT8, str(fixed))]

    monkeypatch.setattr(bench_module.peer_forms, "build_peers_in_child", fake_peers)
    source, compiled = fc_pair
    result = bench_module.bench(source, compiled, [1, 2], repeat=3, peers=True)
    int8 = result.form(peers.INT8)
    assert int8.reason is not None and "cannot run it at batch 2" in int8.reason
    assert int8.path is None and int8.session is None
    assert peers.INT8 in result.batches[0].forms and peers.INT8 not in result.batches[1].forms
    assert "ort-int8  not measured: ONNX Runtime cannot run it at batch 2" in result.format_table()


def test_a_peer_that_cannot_be_built_or_loaded_is_a_row(
    fc_pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")

    def fake_peers(original: Any, out_dir: Any) -> list[peers.PeerBuild]:
        return [
            peers.PeerBuild(peers.INT8, str(broken)),
            peers.PeerBuild(peers.FOUR_BIT, None, "ImportError: no quantizer here"),
        ]

    monkeypatch.setattr(bench_module.peer_forms, "build_peers_in_child", fake_peers)
    source, compiled = fc_pair
    args = ["bench", str(source), str(compiled), "--batch", "1", "--repeat", "3", "--peers"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ort-4bit  not measured: ImportError: no quantizer here" in out
    assert "ort-int8  not measured:" in out and "cannot load it" in out


def test_bench_peers_in_the_latest_onnxruntime(fc_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """The runtime venv's onnxruntime has both quantizers: both peers are measured there."""
    source, compiled = fc_pair
    done = subprocess.run(
        [str(_runtime_python()), "-m", "dc_onnx.cli", "bench", str(source), str(compiled),
         "--batch", "1", "--repeat", "3", "--peers", "--json"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _check_result(json.loads(done.stdout), [1], with_4bit=True)


def test_bench_footprint_measures_each_form_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 16 MiB of dense weights against ~1 MiB resident for the compiled form at 10% density.
    w = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc")
    source = save(make_model([node], {"x": ["N", 2048]}, {"y": ["N", 2048]}, {"W": w}),
                  tmp_path / "big.onnx")  # fmt: skip
    assert main(["compile", str(source), "--quiet", "--sparsity", "0.9"]) == 0
    monkeypatch.chdir(tmp_path)  # paths relative to here (the children run elsewhere)
    args = ["bench", "big.onnx", "big.dc.onnx", "--batch", "4", "--repeat", "3", "--footprint"]
    assert main([*args, "--json"]) == 0
    forms = {f["name"]: f["footprint"] for f in json.loads(capsys.readouterr().out)["forms"]}
    original, small = forms["original"], forms["compiled"]
    assert original["batch"] == small["batch"] == 4
    assert original["session_bytes"] > 12 * 2**20
    assert small["session_bytes"] < original["session_bytes"] / 4
    for f in (original, small):
        assert f["peak_bytes"] >= f["session_bytes"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "memory of each form alone in a child process" in out
    assert f"peak: {original['method']}" in out
