"""The C++ kernels against the Python reference decoder and ORT's own dense kernels."""

from __future__ import annotations

import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from conftest import (
    cnn_model,
    compile_model,
    lower_only,
    make_model,
    mlp_model,
    run,
    shared_weights_model,
)
from dc_onnx.io import side_file_of
from dc_onnx.passes.lower import LowerOptions, LowerPass
from dc_onnx.pipeline import run_passes
from dc_onnx.tools.bench import DECODE_STATS_ENV, read_decode_stats
from dc_onnx.tools.decompile import decode_model
from dc_onnx.writer import save_compiled


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 70),
    cols=st.integers(1, 70),
    k=st.integers(1, 256),
    index_bits=st.integers(1, 8),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_cpp_decoder_is_bit_identical_to_python(rows, cols, k, index_bits, density, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    codebook = np.concatenate([[0.0], rng.standard_normal(k - 1)]).astype(np.float32)
    codes = rng.integers(0, k, size=(rows, cols)) * (rng.random((rows, cols)) < density)
    w = codebook[codes]  # [K, N] weight of X @ W
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], {"x": ["B", rows]}, {"y": ["B", cols]}, {"W": w})
    with tempfile.TemporaryDirectory() as tmp:
        compiled = lower_only(model, Path(tmp), index_bits)
        # X = I makes Y = W exactly: each output sums one stored product and zeros.
        (cpp,) = run(compiled, {"x": np.eye(rows, dtype=np.float32)})
        python = onnx.numpy_helper.to_array(decode_model(compiled).graph.initializer[0])
    assert cpp.tobytes() == w.tobytes()
    assert python.tobytes() == w.tobytes()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("build", [mlp_model, cnn_model])
@pytest.mark.parametrize("sparsity", [0.6, 0.0])
def test_compiled_equals_dense_model_of_decoded_weights(
    build, batch, threads, sparsity, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    model = build()
    compiled = compile_model(model, tmp_path, sparsity=sparsity, bits_conv=6, bits_fc=4)
    graph = onnx.load(compiled, load_external_data=False).graph
    forms = {a.i for n in graph.node for a in n.attribute if a.name == "index_bits"}
    # Unpruned weights take the dense form (relative indices would cost more).
    assert forms and (forms == {0} or sparsity > 0)
    shape = [
        batch if d.dim_param else d.dim_value
        for d in model.graph.input[0].type.tensor_type.shape.dim
    ]
    x = np.random.default_rng(batch).standard_normal(shape).astype(np.float32)
    (expected,) = run(decode_model(compiled), {"x": x}, threads)
    (actual,) = run(compiled, {"x": x}, threads)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", [mlp_model, cnn_model])
def test_single_file_runs_the_same(build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = build()
    side = compile_model(model, tmp_path, name="side", sparsity=0.5)
    single = compile_model(model, tmp_path, name="single", sparsity=0.5, single_file=True)
    side_file = side_file_of(side)
    assert side_file is not None and side_file.is_file() and side_file_of(single) is None
    assert sorted(p.name for p in tmp_path.glob("single*")) == ["single.dc.onnx", "single.onnx"]
    shape = [
        2 if d.dim_param else d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim
    ]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert run(side, {"x": x})[0].tobytes() == run(single, {"x": x})[0].tobytes()


def test_unpruned_compile_is_close_to_the_original(tmp_path: Path) -> None:
    model = mlp_model()
    compiled = compile_model(model, tmp_path, bits_fc=8, quality=0.0)
    x = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    (expected,) = run(model, {"x": x})
    (actual,) = run(compiled, {"x": x})
    np.testing.assert_allclose(actual, expected, rtol=0.05, atol=0.05 * np.abs(expected).max())


def test_shared_weight_is_stored_once(tmp_path: Path) -> None:
    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["a"], name="mm1"),
        helper.make_node("MatMul", ["a", "W"], ["y"], name="mm2"),
    ]
    model = make_model(nodes, {"x": ["N", 16]}, {"y": ["N", 16]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.5)
    graph = onnx.load(str(compiled), load_external_data=False).graph
    first, second = (list(n.input[2:6]) for n in graph.node)
    assert first == second
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(
        run(compiled, {"x": x})[0], run(decode_model(compiled), {"x": x})[0], rtol=1e-5, atol=1e-5
    )


_STORAGE_DTYPES = {
    "float32": (np.float32, TensorProto.FLOAT),
    "float16": (np.float16, TensorProto.FLOAT16),
    "bfloat16": (ml_dtypes.bfloat16, TensorProto.BFLOAT16),
    "int8": (np.int8, TensorProto.INT8),
    "uint8": (np.uint8, TensorProto.UINT8),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    dtype=st.sampled_from(sorted(_STORAGE_DTYPES)),
    k=st.integers(1, 256),
    index_bits=st.integers(1, 8),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_storage_decoder_is_bit_identical_to_python(
    shape, dtype, k, index_bits, density, seed
) -> None:  # type: ignore[no-untyped-def]
    """CompressedConstant (C++) and the reference decoder rebuild the weight bit for bit."""
    np_type, onnx_type = _STORAGE_DTYPES[dtype]
    rng = np.random.default_rng(seed)
    if np_type in (np.int8, np.uint8):
        info = np.iinfo(np_type)
        pool = np.arange(info.min, info.max + 1)
        pool = pool[pool != 0]
    else:
        pool = (rng.standard_normal(4 * 256) * 3).astype(np_type)
        pool = np.unique(pool[pool.astype(np.float32) != 0])
    values = rng.choice(pool, size=min(k - 1, pool.size), replace=False).astype(np_type)
    codebook = np.concatenate([np.zeros(1, np_type), values])
    codes = rng.integers(0, codebook.size, size=shape) * (rng.random(shape) < density)
    w = codebook[codes]
    raw = helper.make_tensor("W", onnx_type, w.shape, w.tobytes(), raw=True)
    nodes = [helper.make_node("Identity", ["W"], ["y"])]
    out_type, expected = onnx_type, w
    if onnx_type == TensorProto.BFLOAT16:  # ORT's Python API has no bfloat16 arrays
        nodes = [helper.make_node("Cast", ["W"], ["y"], to=TensorProto.FLOAT)]
        out_type, expected = TensorProto.FLOAT, w.astype(np.float32)
    graph = helper.make_graph(
        nodes, "g", [], [helper.make_tensor_value_info("y", out_type, list(w.shape))], [raw]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as tmp:
        ir_model = ir.from_proto(model)
        lower = LowerPass(LowerOptions(index_bits, index_bits, index_bits), min_weight_elements=1)
        compiled, _ = run_passes(ir_model, [lower])
        if not any(n.op_type == "CompressedConstant" for n in compiled.graph):
            event("left uncompressed")
            return  # incompressible (tiny or high-entropy): left as it was, nothing to decode
        path = Path(tmp) / "w.dc.onnx"
        save_compiled(compiled, path)
        (cpp,) = run(path, {})
        python = decode_model(path).graph.initializer[0]
    assert cpp.dtype == expected.dtype and cpp.tobytes() == expected.tobytes()
    assert python.raw_data == w.tobytes() or numpy_helper.to_array(python).tobytes() == w.tobytes()


def test_decode_stats_file_gets_one_json_line_per_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.6)
    stats = tmp_path / "decode.jsonl"
    stats.write_text(
        '{"layer": "earlier run", "rows": 1, "cols": 1, "nonzeros": 0, '
        '"symbols": 0, "decode_ns": 0}\n'
    )  # the library appends
    monkeypatch.setenv(DECODE_STATS_ENV, str(stats))
    x = np.zeros((1, 64), np.float32)
    run(compiled, {"x": x})
    earlier, *records = read_decode_stats(stats)
    assert earlier["layer"] == "earlier run"
    layers = {r["layer"]: r for r in records}
    assert len(records) == 5 and sorted(layers) == ["fc1", "fc2", "fc3", "fc4", "fc5"]
    for r in records:
        assert set(r) == {"layer", "rows", "cols", "nonzeros", "symbols", "decode_ns", "isa"}
        assert r["isa"] in ("scalar", "avx2", "avx512")
        # every stored non-zero took a gap and a code
        assert 0 < r["nonzeros"] <= r["rows"] * r["cols"] and r["symbols"] >= 2 * r["nonzeros"]
        assert r["decode_ns"] >= 0
    assert (layers["fc1"]["rows"], layers["fc1"]["cols"]) == (48, 64)


def test_a_weight_read_by_many_nodes_is_decoded_once_per_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = compile_model(shared_weights_model(), tmp_path, sparsity=0.7, bits_fc=6)
    graph = onnx.load(str(compiled), load_external_data=False).graph
    readers = [n for n in graph.node if n.domain == "ai.dc_onnx"]
    assert len(readers) == 8  # every node reads its weight compressed: nothing decoded dense
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((2, 64)).astype(np.float32),
        "img": rng.standard_normal((1, 8, 6, 6)).astype(np.float32),
        "ids": np.array([0, 5, 299, 5, 17]),
        "ids2": np.array([3, 3, 1, 200, 0]),
    }
    stats = tmp_path / "decode.jsonl"
    monkeypatch.setenv(DECODE_STATS_ENV, str(stats))
    first = run(compiled, feeds)
    # One decode per stored weight, not per reader.
    assert sorted(r["rows"] for r in read_decode_stats(stats)) == [8, 64, 300]
    reference = run(decode_model(compiled), feeds)
    for ours, theirs in zip(first, reference, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    # The first session is gone with its forms: the next one decodes afresh, and the same.
    again = run(compiled, feeds)
    assert len(read_decode_stats(stats)) == 6
    for ours, before in zip(again, first, strict=True):
        assert np.array_equal(ours, before)
