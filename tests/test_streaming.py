"""Large weights one at a time: chunked pruning and scratch files for rewritten weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

import dc_onnx
from conftest import cnn_model, mlp_model, save
from dc_onnx import scratch
from dc_onnx.io import side_file_of
from dc_onnx.passes import prune


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prune, "CHUNK", 1000)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.93, 0.999])
def test_chunked_pruning_zeroes_what_the_in_memory_one_does(sparsity: float) -> None:
    w = np.random.default_rng(0).standard_normal((97, 103)).astype(np.float32)
    expected = prune.prune_array(w, "sparsity", sparsity).reshape(-1)
    actual = np.concatenate(list(prune.prune_chunks(w.reshape(-1), "sparsity", sparsity)))
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.usefixtures("small_chunks")
def test_chunked_pruning_cuts_ties_by_index() -> None:
    w = np.tile(np.float32([0.5, -0.5, 0.25, 2.0]), 2500)  # 5000 weights of magnitude 0.5
    pruned = np.concatenate(list(prune.prune_chunks(w, "sparsity", 0.5)))
    assert np.count_nonzero(pruned == 0) == 5000
    half = np.flatnonzero(np.abs(w) == 0.5)
    assert np.all(pruned[half[:2500]] == 0) and np.all(pruned[half[2500:]] != 0)


@pytest.mark.usefixtures("small_chunks")
def test_chunked_quality_threshold_matches_numpy() -> None:
    w = (np.random.default_rng(1).standard_normal(20000) * 3 + 1).astype(np.float32)
    expected = prune.prune_array(w, "quality", 0.7)
    actual = np.concatenate(list(prune.prune_chunks(w, "quality", 0.7)))
    # float64 chunk sums against numpy's float32 pairwise sums: at most a boundary weight apart
    assert abs(np.count_nonzero(actual) - np.count_nonzero(expected)) <= 1


def test_spilled_tensors_are_mapped_files_removed_with_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scratch, "SPILL_BYTES", 1)
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    with scratch.scratch_directory(tmp_path) as folder:
        tensor = scratch.as_tensor(array, "w")
        assert isinstance(tensor, ir.ExternalTensor) and scratch.is_scratch(tensor)
        np.testing.assert_array_equal(tensor.numpy(), array)
        view = tensor.numpy()
        scratch.release(tensor)  # a view is still alive: no error, the map goes with it
        np.testing.assert_array_equal(view, array)
        assert list(folder.iterdir())
    assert list(tmp_path.iterdir()) == []
    assert isinstance(scratch.as_tensor(array, "w"), ir.Tensor)  # no folder: in memory


@pytest.mark.parametrize("build", [mlp_model, cnn_model])
def test_compiling_through_scratch_files_gives_the_same_bytes(
    build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    source = save(build(), tmp_path / "m.onnx")
    options = dc_onnx.CompileOptions(sparsity=0.6)
    dc_onnx.compile(source, tmp_path / "a.onnx", options)
    monkeypatch.setattr(scratch, "SPILL_BYTES", 1)  # every rewritten weight goes to a file
    result = dc_onnx.compile(source, tmp_path / "b.onnx", options)
    a, b = side_file_of(tmp_path / "a.onnx"), side_file_of(tmp_path / "b.onnx")
    assert a is not None and b is not None and a.read_bytes() == b.read_bytes()
    assert not [p for p in tmp_path.iterdir() if "scratch" in p.name]
    for value in result.model.graph.initializers.values():  # nothing left pointing at them
        assert not isinstance(value.const_value, ir.ExternalTensor)
