"""The error budget's float16 rung (dc_onnx.budget.candidates.FLOAT16, passes/half.py): a
weight that 8-bit codes would change too much is stored as float16 behind a Cast, not left
float32 whole; the compiled model computes exactly what the allocation simulated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_budget import _two_paths

import dc_onnx
from conftest import save
from dc_onnx import scratch
from dc_onnx.budget.allocate import Allocator
from dc_onnx.runtime import open_session


def _halved_original(source: Path, name: str) -> onnx.ModelProto:
    """The original model with one initializer rounded to float16 (kept float32)."""
    model = onnx.load(source)
    for tensor in model.graph.initializer:
        if tensor.name == name:
            rounded = onnx.numpy_helper.to_array(tensor).astype(np.float16).astype(np.float32)
            tensor.CopyFrom(onnx.numpy_helper.from_array(rounded, name))
    return model


@pytest.mark.parametrize("target", ["ort", "portable"])
def test_a_sensitive_layer_is_stored_as_float16(tmp_path: Path, target: str) -> None:
    # `direct` feeds an output: 8 bits cost it about 1e-3, float16 about 2e-4.
    source = save(_two_paths(width=256), tmp_path / "m.onnx")
    out = tmp_path / "m.dc.onnx"
    options = dc_onnx.CompileOptions(max_error=0.001, target=target)  # type: ignore[arg-type]
    report = dc_onnx.compile(source, out, options).report
    assert report.within_budget and report.stored_float16 == ["direct"]
    assert report.kept_dense == []

    compiled = onnx.load(out)
    original = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(source).graph.initializer}
    (stored,) = [t for t in compiled.graph.initializer if t.name == "sensitive"]
    assert stored.data_type == onnx.TensorProto.FLOAT16
    assert len(stored.raw_data) == original["sensitive"].nbytes // 2
    values = onnx.numpy_helper.to_array(stored)
    assert np.array_equal(values, original["sensitive"].astype(np.float16))
    (cast,) = [n for n in compiled.graph.node if n.input == ["sensitive"]]
    assert cast.op_type == "Cast"
    (direct,) = [n for n in compiled.graph.node if n.name == "direct"]
    assert direct.input[1] == cast.output[0]

    # The layer computes from exactly the float16 values: the same bits as the original
    # with that weight rounded, run in plain ORT.
    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    expected = ort.InferenceSession(_halved_original(source, "sensitive").SerializeToString())
    y_expected = expected.run(["y"], {"x": x})[0]
    session = (
        ort.InferenceSession(str(out)) if target == "portable" else open_session(out)
    )  # the portable form needs no custom ops
    y = session.run(["y"], {"x": x})[0]
    assert np.array_equal(y, y_expected)
    y_original = ort.InferenceSession(str(source)).run(["y"], {"x": x})[0]
    assert 0 < np.linalg.norm(y - y_original) / np.linalg.norm(y_original) < 0.001


@pytest.mark.parametrize("single_file", [False, True])
def test_a_large_float16_weight_is_external_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, single_file: bool
) -> None:
    # Past the scratch threshold (16 MiB; here every size) a float16 weight goes to the
    # `.data` file like a weight left dense, or into the `.onnx` with --single-file.
    monkeypatch.setattr(scratch, "SPILL_BYTES", 1)
    source = save(_two_paths(width=256), tmp_path / "m.onnx")
    out = tmp_path / "m.dc.onnx"
    options = dc_onnx.CompileOptions(max_error=0.001, single_file=single_file)
    report = dc_onnx.compile(source, out, options).report
    assert report.within_budget and report.stored_float16 == ["direct"]
    data_files = [f for f in report.files if f.endswith(".data")]
    assert len(data_files) == (0 if single_file else 1)
    (stored,) = [t for t in onnx.load(out, load_external_data=False).graph.initializer
                 if t.name == "sensitive"]  # fmt: skip
    assert stored.data_type == onnx.TensorProto.FLOAT16
    assert onnx.external_data_helper.uses_external_data(stored) != single_file
    loaded = onnx.numpy_helper.to_array(
        next(t for t in onnx.load(out).graph.initializer if t.name == "sensitive")
    )
    original = onnx.numpy_helper.to_array(
        next(t for t in onnx.load(source).graph.initializer if t.name == "sensitive")
    )
    assert np.array_equal(loaded, original.astype(np.float16))
    x = np.ones((2, 32), np.float32)
    y = open_session(out).run(["y"], {"x": x})[0]
    expected = ort.InferenceSession(_halved_original(source, "sensitive").SerializeToString())
    assert np.array_equal(y, expected.run(["y"], {"x": x})[0])
    assert not list(tmp_path.glob(".*scratch*"))  # the scratch folder is gone


def test_a_weight_out_of_float16_range_never_takes_it(tmp_path: Path) -> None:
    # A value past float16's largest would turn infinite: not a candidate at all.
    model = _two_paths(width=256)
    for tensor in model.graph.initializer:
        if tensor.name == "sensitive":
            array = onnx.numpy_helper.to_array(tensor).copy()
            array[0, 0] = 1e5
            tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
    source = save(model, tmp_path / "m.onnx")
    options = dc_onnx.CompileOptions(max_error=0.001)
    report = dc_onnx.compile(source, tmp_path / "m.dc.onnx", options).report
    assert report.within_budget and report.stored_float16 == []
    (allocate,) = [p for p in report.passes if p.name == "allocate"]
    assert "16" not in allocate.stats["layers"]["direct"]["bits_error"]


def test_the_search_also_runs_without_float16_and_keeps_the_cheapest(tmp_path: Path) -> None:
    # The searches are heuristic: a new candidate must not steer them to a larger result
    # than they find without it, so they run both ways and the cheapest choice wins.
    source = save(_two_paths(width=256), tmp_path / "m.onnx")
    options = dc_onnx.CompileOptions(max_error=0.001)
    report = dc_onnx.compile(source, tmp_path / "m.dc.onnx", options).report
    (allocate,) = [p for p in report.passes if p.name == "allocate"]
    attempts = allocate.stats["attempts"]
    assert {a["float16"] for a in attempts} == {True, False}
    within = [a["estimated_bytes"] for a in attempts if a["within"]]
    assert allocate.stats["estimated_bytes"] == min(within)


def test_the_float16_search_starts_from_the_same_points_as_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where a search goes depends on the points measured before it: the one with float16
    # must take the same path whether or not the float16-free searches ran before it.
    source = save(_two_paths(width=256), tmp_path / "m.onnx")
    options = dc_onnx.CompileOptions(max_error=0.001)

    def fresh_float16_path(out: Path) -> list[tuple[float, float, int]]:
        (allocate,) = [
            p for p in dc_onnx.compile(source, out, options).report.passes if p.name == "allocate"
        ]
        return [
            (a["target"], a["simulated_error"], a["estimated_bytes"])
            for a in allocate.stats["attempts"]
            if a["float16"] and a["fresh"]
        ]

    after_the_others = fresh_float16_path(tmp_path / "a.dc.onnx")
    search = Allocator._search

    def float16_only(self: Allocator, *args: Any, **kwargs: Any) -> Any:
        return search(self, *args, **kwargs) if args[4] else None

    monkeypatch.setattr(Allocator, "_search", float16_only)
    alone = fresh_float16_path(tmp_path / "b.dc.onnx")
    assert after_the_others and after_the_others == alone


def test_ort_folds_the_cast_once_at_session_creation(tmp_path: Path) -> None:
    # A Run must read the float32 values, not convert the weight again each time.
    source = save(_two_paths(width=256), tmp_path / "m.onnx")
    out = tmp_path / "m.dc.onnx"
    dc_onnx.compile(source, out, dc_onnx.CompileOptions(max_error=0.001))
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = open_session(out, options)
    session.run(None, {"x": np.ones((2, 32), np.float32)})
    events = json.loads(Path(session.end_profiling()).read_text())
    ran = {e["name"] for e in events if e.get("cat") == "Node"}
    assert any(name.startswith("direct") for name in ran)  # the profile does list nodes
    assert not any(name.startswith("sensitive.float32") for name in ran)
