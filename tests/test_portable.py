"""`--target portable`: standard ONNX ops only, run without the custom-op library."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import MODELS, REPO, cnn_model, compile_model, mlp_model, run, save
from dc_onnx.cli import main
from dc_onnx.passes.lower_portable import relative_entries
from dc_onnx.tools.decompile import decode_model, decode_node_weight

LENETS = {"lenet-300-100": (1, 1, 28, 28), "lenet5": (1, 1, 28, 28)}


def _positions(gaps: np.ndarray) -> np.ndarray:
    return np.cumsum(gaps.astype(np.int64) + 1) - 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=0, max_size=2000), st.integers(0, 1200))
def test_relative_entries_rebuild_the_codes(pattern: list[int], lead: int) -> None:
    # Long zero runs (leading, and from the 0-heavy pattern) exercise the fillers.
    codes = np.array([0] * lead + [c if c != 3 else 0 for c in pattern], dtype=np.uint8)
    gaps, values = relative_entries(codes)
    assert gaps.dtype == values.dtype == np.uint8
    rebuilt = np.zeros(codes.size, dtype=np.uint8)
    positions = _positions(gaps)
    assert positions.size == 0 or positions[-1] < codes.size
    rebuilt[positions] = values
    np.testing.assert_array_equal(rebuilt, codes)
    assert gaps.size == np.count_nonzero(codes) + np.count_nonzero(values == 0)


def test_relative_entries_at_the_filler_boundaries() -> None:
    for run_length in (254, 255, 256, 257, 511, 512, 513):
        codes = np.zeros(run_length + 1, dtype=np.uint8)
        codes[-1] = 7
        gaps, values = relative_entries(codes)
        assert values[-1] == 7 and int(_positions(gaps)[-1]) == run_length
        assert gaps.size == 1 + run_length // 256


def _plain_session(path: Path, optimized: Path | None = None) -> ort.InferenceSession:
    """A plain ORT session: no custom-op library registered."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if optimized is not None:  # basic level: constant folding, no layout changes
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _plain_session_of(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("build", "shape", "sparsity"),
    [(mlp_model, (5, 64), 0.8), (mlp_model, (5, 64), 0.0), (cnn_model, (2, 3, 8, 8), 0.6)],
)
def test_portable_form_folds_to_the_custom_op_form_weights(
    tmp_path: Path, build: object, shape: tuple[int, ...], sparsity: float
) -> None:
    model = build()  # type: ignore[operator]
    options = {"sparsity": sparsity, "quality": 0.0} if sparsity == 0 else {"sparsity": sparsity}
    portable = compile_model(model, tmp_path, "portable", target="portable", **options)
    # The custom-op form with its kernels: each compressed node keeps its layer's name.
    custom = compile_model(
        model, tmp_path, "custom", fc_dense_density=2.0, conv_dense_density=2.0, **options
    )
    proto = onnx.load(str(portable))
    onnx.checker.check_model(proto, full_check=True)
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    assert not list(tmp_path.glob("portable*.dcw"))
    ops = {n.op_type for n in proto.graph.node}
    assert ("ScatterND" in ops) == (sparsity > 0.5), ops  # sparse storage only where it pays

    optimized = tmp_path / "folded.onnx"
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (out,) = _plain_session(portable, optimized).run(None, {"x": x})
    (expected,) = run(custom, {"x": x})
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

    # ORT folded every rebuilding node into a dense initializer holding exactly the
    # weights that the custom ops decode.
    folded = onnx.load(str(optimized))
    assert not {"Gather", "ScatterND", "CumSum"} & {n.op_type for n in folded.graph.node}
    folded_weights = {t.name: onnx.numpy_helper.to_array(t) for t in folded.graph.initializer}
    source = onnx.load(str(custom))
    tensors = {t.name: t for t in source.graph.initializer}
    # A compressed node keeps its layer's name; in the portable form that layer reads its
    # rebuilt weight, which ORT folded into an initializer.
    weight_of = {
        n.name: next(i for i in n.input if i in folded_weights)
        for n in proto.graph.node
        if any(i in folded_weights for i in n.input)
    }
    for node in (n for n in source.graph.node if n.domain == "ai.dc_onnx"):
        weight_name = weight_of[node.name]
        decoded = decode_node_weight(node, tensors)
        weight = folded_weights[weight_name]
        candidates = [weight.reshape(decoded.shape)] + ([weight.T] if weight.ndim == 2 else [])
        assert any(np.array_equal(c, decoded) for c in candidates if c.shape == decoded.shape)


def test_portable_compile_reports_raw_and_zipped_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    report = tmp_path / "report.json"
    out = tmp_path / "m.portable.onnx"
    args = ["compile", str(source), "-o", str(out), "--target", "portable", "--sparsity", "0.9"]
    assert main([*args, "--report", str(report)]) == 0
    assert "zipped:" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["files"] == [out.name] and data["compressed_bytes"] == out.stat().st_size
    assert 0 < data["zipped_bytes"] < data["compressed_bytes"] < data["original_bytes"]
    # inspect and decompress read the custom-op form: they name this one for what it is
    # (they said "no dc_onnx.header", and listed its codes as weights left as they were).
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert "a portable-form model (--target portable): 5 weight(s)" in capsys.readouterr().out
    assert main(["decompress", str(out), "-o", str(tmp_path / "d.onnx")]) != 0
    assert "a portable-form model" in capsys.readouterr().err
    assert not (tmp_path / "d.onnx").exists()


def _runtime_python() -> Path:
    return Path(os.environ.get("DC_ONNX_RT_PYTHON", REPO / ".venv-rt" / "bin" / "python"))


PLAIN_RUN = """
import sys
import numpy as np, onnxruntime as ort
x = np.load(sys.argv[2])
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
np.save(sys.argv[3], session.run(None, {session.get_inputs()[0].name: x})[0])
"""


@pytest.mark.parametrize("name", list(LENETS))
def test_portable_lenets_run_in_both_onnxruntimes_without_the_library(
    tmp_path: Path, name: str
) -> None:
    source = MODELS / f"{name}.onnx"
    portable = tmp_path / f"{name}.portable.onnx"
    custom = tmp_path / f"{name}.dc.onnx"
    for target, out in (("portable", portable), ("ort", custom)):
        assert main(["compile", str(source), "-o", str(out), "--quiet", "--target", target]) == 0
    x = np.random.default_rng(1).random((8, 1, 28, 28), dtype=np.float32)
    (expected,) = run(custom, {"input": x})
    (dev,) = _plain_session(portable).run(None, {"input": x})
    np.testing.assert_allclose(dev, expected, rtol=1e-5, atol=1e-5)
    python = _runtime_python()
    assert python.exists(), f"{python} missing: `make test` creates the latest-onnxruntime venv"
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run(
        [str(python), "-c", PLAIN_RUN, str(portable), str(tmp_path / "x.npy"),
         str(tmp_path / "y.npy")], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)


def test_portable_tables_and_storage_weights_keep_their_dtype(tmp_path: Path) -> None:
    """A float16 Gather table and a 5,120-value Add constant (storage form in the custom-op
    target) are rebuilt by standard ops too, bit for bit the custom form's decoded values."""
    rng = np.random.default_rng(5)
    table = rng.standard_normal((1000, 32)).astype(np.float16)
    bias = rng.standard_normal((64, 80)).astype(np.float32)
    nodes = [
        onnx.helper.make_node("Gather", ["E", "idx"], ["g"], name="emb", axis=0),
        onnx.helper.make_node("Add", ["x", "B"], ["y"], name="add"),
    ]
    graph = onnx.helper.make_graph(
        nodes, "tables",
        [onnx.helper.make_tensor_value_info("idx", onnx.TensorProto.INT64, ["n"]),
         onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [64, 80])],
        [onnx.helper.make_tensor_value_info("g", onnx.TensorProto.FLOAT16, ["n", 32]),
         onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64, 80])],
        [onnx.numpy_helper.from_array(table, "E"), onnx.numpy_helper.from_array(bias, "B")],
    )  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    portable = compile_model(model, tmp_path, "portable", target="portable")
    custom = compile_model(model, tmp_path, "custom")
    proto = onnx.load(str(portable))
    onnx.checker.check_model(proto, full_check=True)
    assert not {i.name for i in proto.graph.initializer} & {"E", "B"}  # both rebuilt
    feeds = {"idx": np.array([0, 5, 999, 5], np.int64), "x": np.zeros((64, 80), np.float32)}
    got = _plain_session(portable).run(None, feeds)
    expected = _plain_session_of(decode_model(custom)).run(None, feeds)
    assert got[0].dtype == np.float16
    for a, b in zip(got, expected, strict=True):
        assert a.tobytes() == b.tobytes()
