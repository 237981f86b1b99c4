"""The C++ kernels against the Python reference decoder and ORT's own dense kernels."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

from conftest import cnn_model, compile_model, lower_only, make_model, mlp_model, run
from dc_onnx.tools.bench import DECODE_STATS_ENV, read_decode_stats
from dc_onnx.tools.decompile import decode_model


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
def test_compiled_equals_dense_model_of_decoded_weights(build, batch, threads, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = build()
    compiled = compile_model(model, tmp_path, sparsity=0.6, bits_conv=6, bits_fc=4)
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
    assert side.with_suffix(".dcw").exists() and not single.with_suffix(".dcw").exists()
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
        assert set(r) == {"layer", "rows", "cols", "nonzeros", "symbols", "decode_ns"}
        # every stored non-zero took a gap and a code
        assert 0 < r["nonzeros"] <= r["rows"] * r["cols"] and r["symbols"] >= 2 * r["nonzeros"]
        assert r["decode_ns"] >= 0
    assert (layers["fc1"]["rows"], layers["fc1"]["cols"]) == (48, 64)
