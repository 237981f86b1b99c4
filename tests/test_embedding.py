"""Embeddings: Gather on a constant table becomes CompressedGather, which expands only the
rows it is asked for. Checked against the reference decoder (bits), the original model
(values), and ORT's own Gather for the errors."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from conftest import compile_model, lower_only, run, stream_bytes
from dc_onnx.layers import find_weight_groups
from dc_onnx.tools.decompile import decode_model

_NP_TO_ONNX = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


def embedding_model(
    table: np.ndarray,
    index_rank: int = 2,
    index_type: int = TensorProto.INT64,
    axis: int = 0,
    then_relu: bool = False,
) -> onnx.ModelProto:
    """idx -> Gather(table, idx) [-> Relu]: the table a constant, the indices an input."""
    elem = _NP_TO_ONNX[table.dtype.type]
    idx_shape = [f"i{d}" for d in range(index_rank)]
    y_shape = [f"o{d}" for d in range(index_rank + table.ndim - 1)]
    nodes = [
        helper.make_node("Gather", ["E", "idx"], ["g" if then_relu else "y"], name="emb", axis=axis)
    ]
    if then_relu:
        nodes.append(helper.make_node("Relu", ["g"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "embedding",
        [helper.make_tensor_value_info("idx", index_type, idx_shape)],
        [helper.make_tensor_value_info("y", elem, y_shape)],
        [numpy_helper.from_array(table, "E")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _table(rows: int = 300, width: int = 24, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(rows + width).standard_normal((rows, width)).astype(dtype)


def _ops(compiled: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(compiled), load_external_data=False).graph.node]


@pytest.mark.parametrize("sparsity", [0.0, 0.9], ids=["dense-codes", "csr-rows"])
def test_gather_matches_decoder_and_original(sparsity: float, tmp_path: Path) -> None:
    table = _table()
    model = embedding_model(table)
    compiled = compile_model(model, tmp_path, sparsity_per_layer={"emb": sparsity})
    assert _ops(compiled) == ["CompressedGather"]
    assert stream_bytes(compiled) < table.nbytes / 3
    # 2-D indices with negative entries, repeats and both ends of the vocabulary.
    idx = np.array([[0, 299, -1, -300], [5, 5, -150, 17]], dtype=np.int64)
    (actual,) = run(compiled, {"idx": idx})
    (decoded,) = run(decode_model(compiled), {"idx": idx})
    assert actual.shape == (2, 4, 24)
    assert actual.tobytes() == decoded.tobytes()
    if sparsity == 0.0:  # the defaults: 8-bit codebook, nothing pruned: close to the table
        (expected,) = run(model, {"idx": idx})
        np.testing.assert_allclose(actual, expected, atol=0.02 * np.abs(table).max())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(20, 80),  # large enough that the streams beat the table
    width=st.integers(16, 48),
    k=st.integers(1, 64),
    index_bits=st.integers(1, 8),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_gathering_every_row_gives_the_table_bits(  # type: ignore[no-untyped-def]
    rows, width, k, index_bits, density, seed
) -> None:
    rng = np.random.default_rng(seed)
    codebook = np.concatenate([[0.0], rng.standard_normal(k - 1)]).astype(np.float32)
    codes = rng.integers(0, k, size=(rows, width)) * (rng.random((rows, width)) < density)
    table = codebook[codes]  # dense codes or CSR rows, whichever the density makes smaller
    with tempfile.TemporaryDirectory() as tmp:
        compiled = lower_only(embedding_model(table, 1), Path(tmp), index_bits)
        assert _ops(compiled) == ["CompressedGather"]
        (actual,) = run(compiled, {"idx": np.arange(rows) - rows * (seed % 2)})
    assert actual.tobytes() == table.tobytes()


@pytest.mark.parametrize("index_rank", [0, 1, 3])
def test_gather_index_ranks_and_int32(index_rank: int, tmp_path: Path) -> None:
    table = _table(50, 8).reshape(50, 2, 4)  # a 3-D table: rows of shape [2, 4]
    model = embedding_model(table, index_rank, TensorProto.INT32)
    compiled = compile_model(model, tmp_path, sparsity_per_layer={"emb": 0.5})
    idx = np.random.default_rng(index_rank).integers(-50, 50, size=(3,) * index_rank)
    idx = idx.astype(np.int32)
    (actual,) = run(compiled, {"idx": idx})
    (decoded,) = run(decode_model(compiled), {"idx": idx})
    assert actual.shape == (*idx.shape, 2, 4)
    assert actual.tobytes() == decoded.tobytes()


def test_gather_of_no_indices(tmp_path: Path) -> None:
    compiled = compile_model(embedding_model(_table(), 2), tmp_path, quality=0.5)
    (actual,) = run(compiled, {"idx": np.zeros((3, 0), dtype=np.int64)})
    assert actual.shape == (3, 0, 24)


def test_empty_tables_are_left_alone() -> None:
    graph = ir.from_proto(embedding_model(np.zeros((0, 4), np.float32), 1)).graph
    assert find_weight_groups(graph) == []


def test_gather_float16_table_keeps_float16(tmp_path: Path) -> None:
    table = _table(1000, 32, np.float16)
    model = embedding_model(table, then_relu=True)
    compiled = compile_model(model, tmp_path, quality=0.5)
    assert _ops(compiled) == ["CompressedGather", "Cast", "Relu"]
    assert stream_bytes(compiled) < table.nbytes / 1.5
    idx = np.array([[3, -4, 999]], dtype=np.int64)
    (actual,) = run(compiled, {"idx": idx})
    (expected,) = run(model, {"idx": idx})
    (decoded,) = run(decode_model(compiled), {"idx": idx})
    assert actual.dtype == np.float16
    assert actual.tobytes() == decoded.tobytes()
    np.testing.assert_allclose(actual, expected, atol=0.02 * float(np.abs(table).max()))


def test_gather_threads_give_the_same_bits(tmp_path: Path) -> None:
    # 4096 x 64 floats: above the size where rows are expanded on several threads.
    table = _table(1000, 64)
    compiled = compile_model(embedding_model(table, 1), tmp_path, sparsity_per_layer={"E": 0.6})
    idx = np.random.default_rng(0).integers(-1000, 1000, size=4096)
    one, two = (run(compiled, {"idx": idx}, threads)[0] for threads in (1, 2))
    assert one.tobytes() == two.tobytes()
    assert one.tobytes() == run(decode_model(compiled), {"idx": idx})[0].tobytes()


@pytest.mark.parametrize("bad", [300, -301])
def test_gather_out_of_range_index_names_the_layer(bad: int, tmp_path: Path) -> None:
    table = _table()
    compiled = compile_model(embedding_model(table, 1), tmp_path, quality=0.5)
    idx = np.array([1, bad], dtype=np.int64)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument) as err:
        run(compiled, {"idx": idx})
    message = str(err.value)
    assert "layer 'emb'" in message and str(bad) in message and "[-300, 299]" in message
    with pytest.raises(Exception, match="out of"):  # ORT's Gather refuses it as well
        run(decode_model(compiled), {"idx": idx})


def test_embeddings_are_pruned_only_when_named(tmp_path: Path) -> None:
    table = _table()
    model = embedding_model(table, 1)
    plain = compile_model(model, tmp_path, name="plain", sparsity=0.9)
    named = compile_model(model, tmp_path, name="named", sparsity_per_layer={"em*": 0.9})
    idx = np.arange(300)
    assert np.count_nonzero(run(plain, {"idx": idx})[0]) == table.size
    assert np.count_nonzero(run(named, {"idx": idx})[0]) == round(0.1 * table.size)


def test_only_axis_0_gathers_are_embeddings() -> None:
    table = _table(40, 30)
    kinds = {}
    for axis in (0, -2, 1, -1):
        graph = ir.from_proto(embedding_model(table, 1, axis=axis)).graph
        kinds[axis] = [g.kind for g in find_weight_groups(graph)]
    assert kinds == {0: ["embedding"], -2: ["embedding"], 1: [], -1: []}


def _bag_of_embeddings(dtype: type) -> onnx.ModelProto:
    """idx [N, 4] -> table rows -> flattened -> Gemm -> 3 outputs: a trainable embedding."""
    rng = np.random.default_rng(5)
    table = rng.standard_normal((60, 8)).astype(dtype)
    w = (rng.standard_normal((32, 3)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["E", "idx"], ["g"], name="emb"),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Cast", ["f"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Gemm", ["c", "W"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "bag",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(table, "E"), numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_retraining_trains_the_table(dtype: type, tmp_path: Path) -> None:
    from dc_onnx.data import Dataset
    from dc_onnx.passes.prune import PrunePass, PrunePolicy
    from dc_onnx.passes.retrain import RetrainPass
    from dc_onnx.training.trainer import TrainingData, TrainOptions

    model = _bag_of_embeddings(dtype)
    idx = np.random.default_rng(0).integers(0, 60, size=(256, 4))
    np.savez(tmp_path / "train.npz", idx=idx)
    data = TrainingData(Dataset(tmp_path / "train.npz"), None, model.SerializeToString())
    pruned = ir.from_proto(model)
    PrunePass(PrunePolicy(0.5))(pruned)
    table = pruned.graph.initializers["E"].const_value.numpy().copy()  # type: ignore[union-attr]
    options = TrainOptions(epochs=2, lr=1e-2, batch_size=32, loss="distill-mse")
    assert RetrainPass("weights", data, options)(pruned).modified
    trained = pruned.graph.initializers["E"].const_value.numpy()  # type: ignore[union-attr]
    assert trained.dtype == dtype
    assert np.all(trained[table == 0] == 0) and not np.array_equal(trained, table)


def test_small_tables_stay_as_they_are(tmp_path: Path) -> None:
    words, types = _table(300, 16), _table(2, 16)
    nodes = [
        helper.make_node("Gather", ["words", "idx"], ["w"], name="word_emb"),
        helper.make_node("Gather", ["types", "tt"], ["t"], name="type_emb"),
        helper.make_node("Add", ["w", "t"], ["y"]),
    ]
    index = [helper.make_tensor_value_info(n, TensorProto.INT64, ["n"]) for n in ("idx", "tt")]
    graph = helper.make_graph(
        nodes,
        "bert_like",
        index,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [numpy_helper.from_array(words, "words"), numpy_helper.from_array(types, "types")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    compiled = compile_model(model, tmp_path, quality=0.5)
    assert sorted(_ops(compiled)) == ["Add", "CompressedGather", "Gather"]
    feeds = {"idx": np.array([3, -1, 7]), "tt": np.array([0, 1, 1])}
    (actual,) = run(compiled, feeds)
    (expected,) = run(model, feeds)
    np.testing.assert_allclose(actual, expected, atol=0.02 * np.abs(words).max())
