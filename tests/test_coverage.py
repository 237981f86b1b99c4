"""Weights wherever real models keep them: found, compressed, and run correctly.

Each model of coverage_models.py is compiled with the defaults (no pruning for storage
weights), run in ORT against the original, decoded by the Python reference decoder, and
checked for the bytes of its weights going down.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from coverage_models import BUILDERS
from onnx import TensorProto, helper, numpy_helper

import dc_onnx
from conftest import run, save
from dc_onnx.codecs.wiring import codebook_type
from dc_onnx.errors import InputError
from dc_onnx.passes.canonicalize import CanonicalizeStats
from dc_onnx.passes.fold import fold_constant_chains
from dc_onnx.pipeline import stats_of
from dc_onnx.tools.decompile import decode_model

LOSSLESS = {"qdq_int8", "matmul_integer"}


def _compile(
    name: str, tmp_path: Path, model: onnx.ModelProto | None = None, **options: object
) -> tuple[Path, dc_onnx.CompileResult]:
    model = model or BUILDERS[name]()[0]
    source = save(model, tmp_path / f"{name}.onnx")
    output = tmp_path / f"{name}.dc.onnx"
    result = dc_onnx.compile(source, output, dc_onnx.CompileOptions(**options))  # type: ignore[arg-type]
    return output, result


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    diff = actual.astype(np.float64) - expected.astype(np.float64)
    return float(np.linalg.norm(diff) / max(np.linalg.norm(expected.astype(np.float64)), 1e-12))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_weights_are_found_compressed_and_run(name: str, tmp_path: Path) -> None:
    model, feeds, names = BUILDERS[name]()
    # Settings that keep every weight: no pruning, 8-bit codebooks.
    compiled, result = _compile(name, tmp_path, model, quality=0.0, bits_fc=8)
    layers = {layer.name: layer for layer in result.report.layers}
    for weight in names:
        matching = [layer for key, layer in layers.items() if weight in key.split(",")]
        assert matching, f"{weight} not compressed; report: {sorted(layers)}"
        # Lossless int8 can only gain its entropy's share; clustered floats gain ~4x.
        assert matching[0].rate_pqh > (1.05 if name in LOSSLESS else 1.5), matching[0]
    assert not result.report.left
    if name not in LOSSLESS:  # a 6 KB int8 tensor saves less than the op and header add
        assert result.report.compressed_bytes < result.report.original_bytes
    (expected,) = run(model, feeds)
    (actual,) = run(compiled, feeds)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if name in LOSSLESS:
        assert np.array_equal(actual, expected)  # int8 weights: stored bit for bit
    else:
        assert _relative_error(actual, expected) < 0.03  # 8-bit k-means (quant-quality)
    # The Python reference decoder rebuilds the same model.
    (decoded,) = run(decode_model(compiled), feeds)
    np.testing.assert_allclose(decoded, actual, rtol=1e-5, atol=1e-5)


def test_decode_op_outputs_the_original_dtype(tmp_path: Path) -> None:
    compiled, _ = _compile("half_precision", tmp_path)
    graph = onnx.load(str(compiled), load_external_data=False).graph
    decoders = {n.output[0]: n for n in graph.node if n.op_type == "CompressedConstant"}
    assert set(decoders) == {"W_fp16", "T_bf16"}
    # Format version 3: no codebook input, so the attribute `dtype` types the output.
    dtypes = {name: codebook_type(n, {}) for name, n in decoders.items()}
    assert dtypes == {"W_fp16": TensorProto.FLOAT16, "T_bf16": TensorProto.BFLOAT16}


def test_shared_weight_is_decoded_once(tmp_path: Path) -> None:
    # The chained layer keeps its kernel even where the budget leaves it dense.
    compiled, result = _compile("shared_and_chains", tmp_path, fc_dense_density=2.0)
    graph = onnx.load(str(compiled), load_external_data=False).graph
    decoders = [n for n in graph.node if n.op_type == "CompressedConstant"]
    assert [n.output[0] for n in decoders] == ["S"]
    assert [n.op_type for n in graph.node if n.name == "chained"] == ["CompressedMatMul"]
    canonicalize = stats_of(result.report.passes, CanonicalizeStats)
    assert canonicalize is not None and len(canonicalize.chains_folded) == 2


def test_subgraph_weights_move_to_the_main_graph(tmp_path: Path) -> None:
    compiled, result = _compile("if_branches", tmp_path)
    canonicalize = stats_of(result.report.passes, CanonicalizeStats)
    assert canonicalize is not None and "W_else" in canonicalize.lifted_from_subgraphs
    graph = onnx.load(str(compiled), load_external_data=False).graph
    for attr in next(n for n in graph.node if n.op_type == "If").attribute:
        assert not attr.g.initializer and all(n.op_type != "Constant" for n in attr.g.node)


def test_threshold_leaves_small_tensors_alone(tmp_path: Path) -> None:
    _, result = _compile("recurrent", tmp_path, min_weight_elements=13000)
    assert [layer.name for layer in result.report.layers] == ["lstm_R"]
    kinds = {w["name"]: w["kind"] for w in result.report.weights}
    assert kinds == {"lstm_R": "storage"}


def test_weights_that_cannot_be_stored_are_named_with_a_reason(tmp_path: Path) -> None:
    table = np.arange(8192, dtype=np.int32).reshape(64, 128)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "T"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.INT32, [64, 128])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [numpy_helper.from_array(table, "T")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = save(model, tmp_path / "int32.onnx")
    with pytest.raises(InputError, match="'T': dtype INT32 has no storage form"):
        dc_onnx.compile(source, tmp_path / "int32.dc.onnx")


def test_storage_weights_are_not_pruned_unless_named(tmp_path: Path) -> None:
    _, result = _compile("recurrent", tmp_path, quality=2.0)
    lstm = next(layer for layer in result.report.layers if layer.name == "lstm_W")
    assert lstm.density == 1.0
    _, named = _compile("recurrent", tmp_path, sparsity_per_layer={"lstm_*": 0.5})
    lstm = next(layer for layer in named.report.layers if layer.name == "lstm_W")
    assert abs(lstm.density - 0.5) < 0.01


def test_fold_reports_modified_both_ways() -> None:
    model, _, _ = BUILDERS["shared_and_chains"]()
    ir_model = ir.from_proto(model)
    assert len(fold_constant_chains(ir_model)) == 2
    assert "ct" in ir_model.graph.initializers and "C_fp16" not in ir_model.graph.initializers
    assert fold_constant_chains(ir_model) == []


@pytest.mark.parametrize("name", ["if_branches", "recurrent", "half_precision", "qdq_int8"])
def test_decode_op_at_run_time_matches_materialised_weights(name: str, tmp_path: Path) -> None:
    """The op path (any ORT host) and dc_onnx.InferenceSession's materialised initializers
    compute the same outputs, and the materialised model has no decode node left."""
    import onnxruntime as ort

    from dc_onnx.materialize import materialize

    model, feeds, _ = BUILDERS[name]()
    compiled, _ = _compile(name, tmp_path, model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    op_path = dc_onnx.InferenceSession(compiled, options, materialize=False).run(None, feeds)
    (materialised,) = run(compiled, feeds)
    # Pre-packed (materialised) and plain LSTM weights take different GEMM paths.
    np.testing.assert_allclose(op_path[0], materialised, rtol=1e-5, atol=1e-6)
    flat = onnx.load_from_string(materialize(compiled, dc_onnx.runtime.session_options()))
    assert all(n.op_type != "CompressedConstant" for n in flat.graph.node)


def test_materialised_session_keeps_no_copy_of_the_model_and_can_be_created_again(
    tmp_path: Path,
) -> None:
    """ORT's Python session holds the bytes it was made from; with decoded weights in them
    that is a second copy, so dc_onnx's session lets them go, and decodes the file again
    when ORT creates the session anew (set_providers)."""
    model, feeds, _ = BUILDERS["recurrent"]()
    compiled, _ = _compile("recurrent", tmp_path, model)
    session = dc_onnx.InferenceSession(compiled)
    assert getattr(session, "_model_bytes", b"") is None
    before = session.run(None, feeds)
    session.set_providers(["CPUExecutionProvider"])
    assert getattr(session, "_model_bytes", b"") is None
    for a, b in zip(before, session.run(None, feeds), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_fold_leaves_casts_it_cannot_reproduce_alone() -> None:
    """An int32 -> int64 Cast (a shape computation) stays a Cast: not a weight chain."""
    nodes = [
        helper.make_node("Cast", ["n"], ["n64"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "n64"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
        [numpy_helper.from_array(np.array([6], dtype=np.int32), "n")],
    )  # fmt: skip
    ir_model = ir.from_proto(helper.make_model(graph))
    assert fold_constant_chains(ir_model) == []
    assert [n.op_type for n in ir_model.graph] == ["Cast", "Reshape"]


def test_dense_form_round_trips_and_drops_the_gaps() -> None:
    """index_bits 0: no gaps stream, one code per position (zeros included)."""
    from dc_onnx.codecs import decode_codes, encode_weight

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 17, size=(40, 50)).astype(np.uint8)
    codebook = np.concatenate([[0.0], rng.standard_normal(16)]).astype(np.float16)
    dense = encode_weight(codes, codebook, 0)
    sparse = encode_weight(codes, codebook, 4)
    assert dense.gaps == b"" and dense.num_entries == 0 and dense.num_codes == codes.size
    assert np.array_equal(decode_codes(dense, codes.size), codes.reshape(-1))
    assert len(dense.codes) + len(dense.gaps) < len(sparse.codes) + len(sparse.gaps)
