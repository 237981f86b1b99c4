"""Large weights one at a time: chunked pruning and scratch files for rewritten weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import dc_onnx
from conftest import cnn_model, make_model, mlp_model, run, save
from dc_onnx import blocks, quantize, scratch
from dc_onnx.codecs import encode_weight
from dc_onnx.codecs.blocks import encode_blocks
from dc_onnx.io import side_file_of
from dc_onnx.large_weights import kmeans_sorted
from dc_onnx.passes import prune
from dc_onnx.passes.cluster import kmeans_1d
from dc_onnx.tools.decompile import decode_model


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
        scratch.discard(tensor)  # replaced: its file goes at once
        assert list(folder.iterdir()) == []
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


@pytest.mark.parametrize("dense_if_smaller", [False, True])
@pytest.mark.parametrize("index_bits", [1, 3, 5, 8])
@pytest.mark.parametrize("density", [0.0, 0.003, 0.1, 0.7, 1.0])
def test_block_encoder_gives_the_bytes_of_the_whole_matrix_encoder(
    index_bits: int, density: float, dense_if_smaller: bool
) -> None:
    rng = np.random.default_rng(index_bits)
    codes = rng.integers(1, 9, size=(40, 333)).astype(np.uint8)
    codes[rng.random(codes.shape) >= density] = 0
    codes[10:20] = 0  # zero runs across block boundaries
    codebook = np.arange(9, dtype=np.float32)
    expected = encode_weight(codes, codebook, index_bits, dense_if_smaller=dense_if_smaller)
    for rows in (1, 3, 40):
        actual = encode_blocks(
            lambda rows=rows: (codes[i : i + rows] for i in range(0, 40, rows)),
            codebook,
            index_bits,
            dense_if_smaller,
        )
        assert actual.index_bits == expected.index_bits
        assert actual.codes == expected.codes and actual.gaps == expected.gaps
        np.testing.assert_array_equal(actual.code_lengths, expected.code_lengths)
        assert (actual.num_entries, actual.num_codes) == (expected.num_entries, expected.num_codes)


def test_block_kmeans_finds_the_in_memory_centroids() -> None:
    x = np.sort(np.random.default_rng(3).standard_normal(50_000).astype(np.float32))
    centroids, _, iterations = kmeans_1d(x, 31)
    initial = np.linspace(x[0], x[-1], 31)
    actual, actual_iterations = kmeans_sorted(x, initial, 100)
    np.testing.assert_allclose(actual, centroids, rtol=1e-9, atol=1e-9)
    assert actual_iterations == iterations


@pytest.mark.parametrize("build", [mlp_model, cnn_model])
def test_large_weight_paths_compile_to_a_working_model(
    build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    source = save(build(), tmp_path / "m.onnx")
    # linear: the block path starts k-means there for every init but the paper's others
    options = dc_onnx.CompileOptions(sparsity=0.6, bits_fc=4, init="linear")
    reference = dc_onnx.compile(source, tmp_path / "a.onnx", options).report
    # Every weight takes the block-by-block paths: prune, cluster, encode, scratch files.
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 256)
    monkeypatch.setattr(prune, "CHUNK", 100)
    monkeypatch.setattr(scratch, "SPILL_BYTES", 1)
    report = dc_onnx.compile(source, tmp_path / "b.onnx", options).report
    for ours, theirs in zip(report.layers, reference.layers, strict=True):
        assert (ours.name, ours.density) == (theirs.name, theirs.density)
        assert ours.codebook_size == theirs.codebook_size
    shape = [2 if isinstance(d, str) else d for d in _input_shape(build())]
    x = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    out = tmp_path / "b.onnx"
    np.testing.assert_allclose(run(out, x)[0], run(decode_model(out), x)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(out, x)[0], run(tmp_path / "a.onnx", x)[0], rtol=1e-3, atol=1e-3)


def _input_shape(model) -> list[int | str]:  # type: ignore[no-untyped-def]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def test_large_weights_get_the_mse_start_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above one block a weight is clustered by the block path; with the default mse start
    its shared values are those the in-memory path finds (row scales aside: the block path
    keeps one codebook), not the linear start's, which outliers strand."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 48)).astype(np.float32)
    w[0, :3] = [40.0, -35.0, 30.0]  # a few outliers, as a folded BatchNorm leaves
    node = onnx.helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], {"x": ["N", 64]}, {"y": ["N", 48]}, {"W": w})
    source = save(model, tmp_path / "m.onnx")
    options = dc_onnx.CompileOptions(sparsity=0.0, bits_fc=5)
    monkeypatch.setattr(quantize, "rows_pay", lambda *args: False)
    dc_onnx.compile(source, tmp_path / "a.onnx", options)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 256)
    dc_onnx.compile(source, tmp_path / "b.onnx", options)
    in_memory, large = decode_model(tmp_path / "a.onnx"), decode_model(tmp_path / "b.onnx")
    a, b = (onnx.numpy_helper.to_array(m.graph.initializer[0]) for m in (in_memory, large))
    np.testing.assert_array_equal(a, b)
    expected = quantize.quantize(w, 5)  # what the budget's simulation gets
    np.testing.assert_array_equal(b, expected)
