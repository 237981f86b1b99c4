"""Row scales (side-file format version 2): each stored row's weights are float32(scale[r] *
codebook[code]) with one codebook shared by the rows. The C++ kernels and the Python
reference decoder must agree bit for bit, every op must read them, and the cluster pass
must choose them only where they pay."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper
from wiring_v2 import downgrade

import dc_onnx
from conftest import compile_model, make_model, run
from dc_onnx import blocks
from dc_onnx.codecs.container import FORMAT_VERSION, ContainerError
from dc_onnx.io import side_file_of
from dc_onnx.layers import annotate_rows, find_weight_groups
from dc_onnx.passes.lower import LowerOptions, LowerPass
from dc_onnx.pipeline import run_passes
from dc_onnx.quantize import quantize, share_layer
from dc_onnx.tools.decompile import decode_model
from dc_onnx.writer import save_compiled


def _row_scaled(rng: np.random.Generator, rows: int, cols: int, k: int, density: float):  # type: ignore[no-untyped-def]
    """(weight [rows, cols], scales, codebook) in the row-scaled form."""
    codebook = np.unique(rng.standard_normal(k).astype(np.float32))
    codebook = codebook[codebook != 0]
    scales = np.exp(rng.standard_normal(rows) * 3).astype(np.float32)
    codes = rng.integers(1, codebook.size + 1, size=(rows, cols)) * (
        rng.random((rows, cols)) < density
    )
    full = np.concatenate([[0.0], codebook]).astype(np.float32)
    return (full[codes] * scales[:, None]).astype(np.float32), scales, codebook


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(2, 60),
    cols=st.integers(1, 60),
    k=st.integers(1, 255),
    index_bits=st.integers(1, 8),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
@pytest.mark.parametrize("form", ["CompressedMatMul", "CompressedConstant"])
def test_row_scaled_decoders_are_bit_identical(  # type: ignore[no-untyped-def]
    form, rows, cols, k, index_bits, density, seed
) -> None:
    """The kernel, and the decode form (the [out, in] matrix decoded, then transposed)."""
    rng = np.random.default_rng(seed)
    stored, scales, codebook = _row_scaled(rng, rows, cols, k, density)
    # Y = X @ W with W = stored^T [cols, rows]: the stored matrix's rows are W's columns.
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], {"x": ["B", cols]}, {"y": ["B", rows]}, {"W": stored.T.copy()})
    ir_model = ir.from_proto(model)
    (group,) = find_weight_groups(ir_model.graph)
    annotate_rows(group.weight, scales, codebook)
    with tempfile.TemporaryDirectory() as tmp:
        dense_density = 2.0 if form == "CompressedMatMul" else 0.0
        options = LowerOptions(index_bits, index_bits, fc_dense_density=dense_density)
        compiled, _ = run_passes(ir_model, [LowerPass(options)])
        path = Path(tmp) / "m.dc.onnx"
        save_compiled(compiled, path)
        proto = onnx.load(str(path), load_external_data=False)
        (op,) = [n for n in proto.graph.node if n.op_type == form]
        assert len(next(a.ints for a in op.attribute if a.name == "stream_ids")) == 5
        # X = I gives Y = W exactly: one stored product per output, times its row scale.
        (cpp,) = run(path, {"x": np.eye(cols, dtype=np.float32)})
        python = numpy_helper.to_array(decode_model(path).graph.initializer[0])
    assert cpp.tobytes() == stored.T.tobytes()
    assert python.tobytes() == stored.T.tobytes()


def _spread(rng: np.random.Generator, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Normal weights whose slices along `axis` (the stored rows) differ in magnitude by
    orders, as a BatchNorm folded into a layer makes them."""
    gains = np.exp(rng.standard_normal(shape[axis]) * 2.5)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return (rng.standard_normal(shape) * gains.reshape(view)).astype(np.float32)


def _channels_model() -> onnx.ModelProto:
    """Conv -> Gemm -> MatMul, and a Gather, each weight with rows of spread magnitudes."""
    rng = np.random.default_rng(0)
    inits = {
        "C": _spread(rng, (16, 3, 3, 3), 0),
        "W1": _spread(rng, (16 * 36, 32), 1) * 0.05,  # Gemm, transB=0: stored as W1^T
        "W2": _spread(rng, (32, 24), 1) * 0.2,  # MatMul X @ W2: stored as W2^T
        "T": _spread(rng, (40, 24), 0),
        "shape": np.array([-1, 16 * 36], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "C"], ["c"], name="conv"),
        helper.make_node("Reshape", ["c", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "W1"], ["g"], name="fc"),
        helper.make_node("MatMul", ["g", "W2"], ["h"], name="mm"),
        helper.make_node("Gather", ["T", "ids"], ["e"], name="emb"),
    ]
    inputs = {"x": ["N", 3, 8, 8], "ids": [5]}
    model = make_model(nodes, inputs, {"h": ["N", 24], "e": [5, 24]}, inits)
    model.graph.input[1].type.tensor_type.elem_type = onnx.TensorProto.INT64
    return model


def _feeds() -> dict[str, np.ndarray]:
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    return {"x": x, "ids": np.array([0, 7, 39, 3, 12], np.int64)}


def _error(reference: list[np.ndarray], actual: list[np.ndarray]) -> float:
    return max(
        float(np.linalg.norm(a - r) / np.linalg.norm(r))
        for r, a in zip(reference, actual, strict=True)
    )


def _stream_id_counts(path: Path) -> dict[str, int]:
    proto = onnx.load(str(path), load_external_data=False)
    return {
        n.op_type: len(next(a.ints for a in n.attribute if a.name == "stream_ids"))
        for n in proto.graph.node
        if n.domain == "ai.dc_onnx"
    }


def test_row_scales_keep_every_op_near_lossless_at_8_bits(tmp_path: Path) -> None:
    model = _channels_model()
    feeds = _feeds()
    reference = run(model, feeds)
    scaled = compile_model(
        model, tmp_path, name="rows", sparsity=0.0, bits_conv=8, bits_fc=8, fc_dense_density=2.0
    )
    # An unpruned Conv takes the decode form (ORT's Conv on the decoded weight); the FC
    # layers keep their kernels here (test_decode_form.py has their decode form).
    assert _stream_id_counts(scaled) == {
        "CompressedConstant": 5,
        "CompressedGemm": 5,
        "CompressedMatMul": 5,
        "CompressedGather": 5,
    }
    actual = run(scaled, feeds)
    dense = run(decode_model(scaled), feeds)
    for a, d in zip(actual, dense, strict=True):
        np.testing.assert_allclose(a, d, rtol=1e-5, atol=1e-6 * float(np.abs(d).max()))
    assert actual[1].tobytes() == dense[1].tobytes()  # Gather: the decoded rows, bit for bit
    # The one-codebook form, as the paper's linear start gives it, loses far more.
    plain = compile_model(
        model, tmp_path, name="plain", sparsity=0.0, bits_conv=8, bits_fc=8, init="linear"
    )
    assert _error(reference, actual) < min(0.01, _error(reference, run(plain, feeds)))


@pytest.mark.parametrize("bias", [False, True])
def test_sparse_conv_applies_row_scales(tmp_path: Path, bias: bool) -> None:
    rng = np.random.default_rng(2)
    inits = {"C": _spread(rng, (16, 24, 3, 3), 0)}
    if bias:
        inits["b"] = rng.standard_normal(16).astype(np.float32)
    node = helper.make_node("Conv", ["x", "C", *(["b"] if bias else [])], ["y"], name="conv")
    model = make_model([node], {"x": ["N", 24, 9, 9]}, {"y": ["N", 16, 7, 7]}, inits)
    # 40% non-zero: the kernel form only when asked for (lower's conv_dense_density).
    pruned = compile_model(model, tmp_path, sparsity=0.6, bits_conv=8, conv_dense_density=2.0)
    assert _stream_id_counts(pruned) == {"CompressedConv": 5}  # the sparse kernel, scaled
    x = {"x": rng.standard_normal((2, 24, 9, 9)).astype(np.float32)}
    (actual,) = run(pruned, x)
    (dense,) = run(decode_model(pruned), x)
    np.testing.assert_allclose(actual, dense, rtol=1e-5, atol=1e-6 * float(np.abs(dense).max()))


def test_storage_weight_with_row_scales_decodes_in_both_decoders(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 96)) * np.exp(rng.standard_normal((64, 1)) * 2.5)).astype(
        np.float32
    )
    node = helper.make_node("Add", ["x", "W"], ["y"])
    model = make_model([node], {"x": [64, 96]}, {"y": [64, 96]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.0, bits_other=8)
    proto = onnx.load(str(compiled), load_external_data=False)
    (op,) = [n for n in proto.graph.node if n.op_type == "CompressedConstant"]
    assert len(next(a.ints for a in op.attribute if a.name == "stream_ids")) == 5
    x = np.zeros((64, 96), np.float32)
    (cpp,) = run(compiled, {"x": x})
    python = numpy_helper.to_array(
        next(t for t in decode_model(compiled).graph.initializer if t.name == "W")
    )
    assert cpp.tobytes() == python.tobytes()
    rel = np.linalg.norm(cpp - w, axis=1) / np.linalg.norm(w, axis=1)
    assert rel.max() < 0.02  # every row keeps its own precision


def test_row_scales_only_where_they_pay() -> None:
    rng = np.random.default_rng(0)
    even = rng.standard_normal((64, 128)).astype(np.float32)
    assert share_layer(even, 255).rows is None  # rows alike: one codebook is as good
    spread = (even * np.exp(rng.standard_normal((64, 1)) * 2)).astype(np.float32)
    chosen = share_layer(spread, 255)
    assert chosen.rows is not None and chosen.rows.codebook.size <= 255
    assert share_layer(spread, 255, "linear").rows is None  # the paper's start: unchanged
    assert share_layer(spread, 255, row_scales=False).rows is None
    # one weight a row ([N, 1] scales): exact with row scales, but a scale costs more
    column = np.abs(spread[:, :1]) + 1.0
    assert share_layer(column, 3).rows is None
    # quantize() simulates exactly what the cluster pass keeps, for either layout.
    assert np.array_equal(quantize(spread, 8, row_axis=0), chosen.values)
    assert np.array_equal(quantize(spread.T.copy(), 8, row_axis=1), chosen.values.T)


def _set_version(side: Path, version: int) -> None:
    data = bytearray(side.read_bytes())
    data[8:10] = version.to_bytes(2, "little")
    side.write_bytes(bytes(data))


def test_a_future_format_version_is_refused_by_both_decoders(tmp_path: Path) -> None:
    w = np.random.default_rng(0).standard_normal((12, 6)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="tiny")
    model = make_model([node], {"x": ["N", 12]}, {"y": ["N", 6]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.5)
    side = side_file_of(compiled)
    assert side is not None and int.from_bytes(side.read_bytes()[8:10], "little") == FORMAT_VERSION
    _set_version(side, FORMAT_VERSION + 1)
    expected = (
        f"format_version {FORMAT_VERSION + 1} is not supported (this library reads versions 1 "
        f"to {FORMAT_VERSION})"
    )
    with pytest.raises(Exception, match=expected.replace("(", r"\(").replace(")", r"\)")):
        dc_onnx.InferenceSession(compiled)
    with pytest.raises(
        ContainerError,
        match=rf"format_version {FORMAT_VERSION + 1} .*versions 1 to {FORMAT_VERSION}",
    ):
        decode_model(compiled)


def test_a_version_1_side_file_still_loads(tmp_path: Path) -> None:
    w = np.random.default_rng(0).standard_normal((12, 6)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="tiny")
    model = make_model([node], {"x": ["N", 12]}, {"y": ["N", 6]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.5, init="linear")
    x = np.ones((2, 12), np.float32)
    before = run(compiled, {"x": x})[0]
    downgrade(compiled, 1)  # no row scales: the bytes and wiring of a version 1 model
    assert run(compiled, {"x": x})[0].tobytes() == before.tobytes()
    decode_model(compiled)


def test_flipped_bytes_of_row_scales_are_detected(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = _spread(rng, (40, 12), 1)  # Gemm, transB=0: the stored rows are W's columns
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="tiny")
    model = make_model([node], {"x": ["N", 40]}, {"y": ["N", 12]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.0, bits_fc=8)
    proto = onnx.load(str(compiled), load_external_data=False)
    assert any(len(a.ints) == 5 for n in proto.graph.node for a in n.attribute)  # stream_ids
    side = side_file_of(compiled)
    assert side is not None
    original = side.read_bytes()
    for offset in range(len(original)):
        corrupted = bytearray(original)
        corrupted[offset] ^= 0x10
        side.write_bytes(bytes(corrupted))
        with pytest.raises(Exception) as info:
            run(compiled, {"x": np.zeros((1, 40), np.float32)})
        assert "dc_onnx" in str(info.value) and "tiny" in str(info.value), offset
    side.write_bytes(original)


def test_quantize_keeps_one_codebook_above_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """The block path (weights above blocks.BLOCK_BYTES) has no row scales: nor does the
    simulation of such a weight."""
    rng = np.random.default_rng(0)
    spread = (rng.standard_normal((64, 128)) * np.exp(rng.standard_normal((64, 1)) * 2)).astype(
        np.float32
    )
    assert not np.array_equal(quantize(spread, 8, row_axis=0), quantize(spread, 8))
    monkeypatch.setattr(blocks, "BLOCK_BYTES", spread.nbytes - 1)
    assert np.array_equal(quantize(spread, 8, row_axis=0), quantize(spread, 8))
