"""`dc-onnx inspect` and `dc-onnx decompress`: reading compiled models on their own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import dc_onnx
from conftest import compile_model, make_model, mlp_model, run, save, shared_weights_model
from dc_onnx.cli import main
from dc_onnx.codecs.container import FORMAT_VERSION, parse_header
from dc_onnx.codecs.schema import stream_kinds
from dc_onnx.io import side_file_of
from dc_onnx.tools.decompile import decode_node_weight
from dc_onnx.tools.inspect import inspect


def _model_with_a_dense_node() -> onnx.ModelProto:
    """A Mul by a 128-value constant (no compressed form) before a compressible Gemm."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["s"], name="scale"),
        helper.make_node("Gemm", ["s", "W", "b"], ["y"], name="fc"),
    ]
    inits = {
        "scale": rng.standard_normal(128).astype(np.float32),
        "W": (rng.standard_normal((128, 16)) * 0.1).astype(np.float32),
        "b": rng.standard_normal(16).astype(np.float32),
    }
    return make_model(nodes, {"x": ["N", 128]}, {"y": ["N", 16]}, inits)


def _stream_location(compiled: Path, layer: str, stream: str) -> tuple[int, int]:
    """(offset, length) in the side file of one layer's stream (codes, gaps, ...)."""
    model = onnx.load(str(compiled), load_external_data=False)
    node = next(n for n in model.graph.node if n.name == layer)
    ids = list(next(a.ints for a in node.attribute if a.name == "stream_ids"))
    kinds = [kind.name.lower() for kind in stream_kinds(ids)]
    entry = parse_header(_side(compiled).read_bytes())[ids[kinds.index(stream)]]
    return entry.offset, entry.nbytes


def _damage(side: Path, position: int, mask: int) -> None:
    data = bytearray(side.read_bytes())
    data[position] ^= mask
    side.write_bytes(bytes(data))


def test_inspect_lists_every_layer_with_checked_streams(tmp_path: Path) -> None:
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.8, bits_fc=4)
    result = inspect(compiled)
    assert [layer.name for layer in result.layers] == ["fc1", "fc2", "fc3", "fc4", "fc5"]
    assert result.format_version == FORMAT_VERSION and result.opset_version == 1
    assert not result.problems and all(layer.verified for layer in result.layers)
    fc1 = result.layers[0]
    assert fc1.op == "Gemm" and fc1.shape == [48, 64] and fc1.weights == 64 * 48
    assert fc1.density == pytest.approx(0.2, abs=2e-3)
    assert fc1.codebook_size <= 16 and fc1.weight_bits <= 4
    assert fc1.stream_bytes == 4 * fc1.codebook_size + fc1.codes_bytes + fc1.gaps_bytes + (
        fc1.codebook_size + (1 << fc1.index_bits)
    )
    side = _side(compiled)
    assert result.file_bytes == {
        compiled.name: compiled.stat().st_size, side.name: side.stat().st_size
    }  # fmt: skip
    assert result.totals()["stream_bytes"] < side.stat().st_size


def test_inspect_names_the_nodes_left_dense_and_why(tmp_path: Path) -> None:
    compiled = compile_model(_model_with_a_dense_node(), tmp_path, sparsity=0.5)
    (dense,) = inspect(compiled).dense
    assert (dense.name, dense.op, dense.weight, dense.elements) == ("scale", "Mul", "scale", 128)
    assert "below the storage-form threshold" in dense.reason


def test_inspect_cli_prints_a_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compiled = compile_model(_model_with_a_dense_node(), tmp_path, sparsity=0.5)
    assert main(["inspect", str(compiled)]) == 0
    out = capsys.readouterr().out
    assert "fc" in out and f"format:   version {FORMAT_VERSION}" in out and "scale (Mul" in out
    assert main(["inspect", str(compiled), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["layers"] == 1 and data["layers"][0]["verified"] is True
    assert data["dense"][0]["weight"] == "scale" and data["problems"] == []


@pytest.mark.parametrize("stream", ["codes", "gaps", "codebook"])
def test_inspect_on_a_damaged_side_file_names_the_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stream: str
) -> None:
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.8)
    # fc2 keeps relative indices at this sparsity (the small fc3 takes the dense form).
    offset, length = _stream_location(compiled, "fc2", stream)
    assert length > 0
    _damage(_side(compiled), offset + length // 2, 0x5A)
    assert main(["inspect", str(compiled)]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out
    assert "error:" in captured.err and "layer 'fc2'" in captured.err
    assert "CRC-32" in captured.err and "Traceback" not in captured.err
    assert "fc1" not in captured.err  # only the damaged layer is blamed


def test_inspect_on_a_truncated_side_file_names_a_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.8)
    offset, _ = _stream_location(compiled, "fc5", "gaps")
    side = _side(compiled)
    side.write_bytes(side.read_bytes()[:offset])
    assert main(["inspect", str(compiled)]) == 1
    err = capsys.readouterr().err
    assert "layer 'fc5'" in err and "truncated" in err


def test_inspect_of_a_model_with_nothing_compressed_lists_its_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What compile writes when no layer is worth compressing, or any plain model.
    plain = save(mlp_model(), tmp_path / "plain.onnx")
    assert main(["inspect", str(plain)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no compressed layers: the model has no dc_onnx.header")
    assert "dense:    5 nodes read constant weights" in out
    assert inspect(plain).layers == []


def test_decompress_writes_a_standard_model_with_the_decoded_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.7, bits_fc=5)
    plain = tmp_path / "plain.onnx"
    assert main(["decompress", str(compiled), "-o", str(plain)]) == 0
    assert "wrote" in capsys.readouterr().out
    model = onnx.load(str(plain))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    # The dense weights are exactly what the custom op decodes.
    source = onnx.load(str(compiled))
    tensors = {t.name: t for t in source.graph.initializer}
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in (n for n in source.graph.node if n.domain == "ai.dc_onnx"):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        stored = weights[f"{attrs.get('layer', node.name.encode()).decode()}.decoded_weight"]
        if attrs.get("weight_side") == 1:  # MatMul X @ W keeps W as [K, N]
            stored = stored.T
        np.testing.assert_array_equal(stored, decode_node_weight(node, tensors))
    # It runs in plain ORT, with no custom-op library registered.
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    (dense_out,) = ort.InferenceSession(str(plain)).run(None, {"x": x})
    (compiled_out,) = run(compiled, {"x": x})
    np.testing.assert_allclose(dense_out, compiled_out, rtol=1e-5, atol=1e-5)


def test_decompress_refuses_a_plain_model_and_its_own_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = save(mlp_model(), tmp_path / "plain.onnx")
    assert main(["decompress", str(plain), "-o", str(tmp_path / "out.onnx")]) == 1
    err = capsys.readouterr().err
    assert "not a compiled dc-onnx model" in err and "Traceback" not in err
    assert not (tmp_path / "out.onnx").exists()
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.5)
    side = _side(compiled)
    before = compiled.read_bytes(), side.read_bytes()
    for target in (compiled, side):
        assert main(["decompress", str(compiled), "-o", str(target)]) == 1
        assert "refusing to overwrite the input" in capsys.readouterr().err
    assert (compiled.read_bytes(), side.read_bytes()) == before


def test_decompress_of_a_damaged_model_names_the_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.8)
    offset, _ = _stream_location(compiled, "fc2", "codes")
    _damage(_side(compiled), offset, 0xFF)
    out = tmp_path / "plain.onnx"
    assert main(["decompress", str(compiled), "-o", str(out)]) == 1
    assert "layer 'fc2'" in capsys.readouterr().err
    assert not out.exists()


def _side(compiled: Path) -> Path:
    side = side_file_of(compiled)
    assert side is not None
    return side


def test_a_matmul_of_an_activation_is_not_called_all_constant() -> None:
    """A dense MatMul weight's reason: both inputs constant only when both are."""
    from dc_onnx.tools.inspect import _why_dense

    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "W")
    of_activation = helper.make_node("MatMul", ["x", "W"], ["y"])
    of_constants = helper.make_node("MatMul", ["V", "W"], ["y"])
    assert "both MatMul inputs are constant" not in _why_dense(of_activation, 1, weight, {"W"})
    assert "both MatMul inputs are constant" in _why_dense(of_constants, 1, weight, {"V", "W"})


@pytest.mark.parametrize("fc_dense_density", [0.7, 0.0], ids=["kernels", "decode-form"])
def test_a_weight_read_by_many_nodes_is_one_row(fc_dense_density: float, tmp_path: Path) -> None:
    source = save(shared_weights_model(steps=5), tmp_path / "unrolled.onnx")
    compiled = tmp_path / "unrolled.dc.onnx"
    # The conv K keeps the fixed crossover: its small image would give it the decode form.
    options = dc_onnx.CompileOptions(
        sparsity=0.7, bits_fc=6, fc_dense_density=fc_dense_density, conv_dense_density=0.35
    )
    result = dc_onnx.compile(source, compiled, options)
    cell = next(r for r in result.report.layers if r.name.startswith("cell0"))
    assert cell.readers == 5 and cell.weights == 64 * 64  # counted once, not per reader
    assert "cell0 (and 4 more readers)" in result.report.format_table()
    listed = inspect(compiled)
    assert [layer.readers for layer in listed.layers] == [5, 2, 2]  # W, K, T
    assert listed.totals()["weights"] == 64 * 64 + 8 * 8 * 9 + 300 * 32
    assert "cell0 (and 4 more readers)" in listed.format_table()


def test_inspect_lists_dense_weights_in_branches_and_integer_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)

    def branch(name: str) -> onnx.GraphProto:
        weight = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32))
        nodes = [
            helper.make_node("Constant", [], [f"W_{name}"], value=weight),
            helper.make_node("MatMul", ["x", f"W_{name}"], [f"y_{name}"], name=f"mm_{name}"),
        ]
        out = helper.make_tensor_value_info(f"y_{name}", onnx.TensorProto.FLOAT, [4, 16])
        return helper.make_graph(nodes, name, [], [out])

    q = rng.integers(-100, 100, (16, 16)).astype(np.int8)
    nodes = [
        helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"),
                         else_branch=branch("else")),
        helper.make_node("DequantizeLinear", ["Q", "scale"], ["q"], name="dq"),
        helper.make_node("MatMul", ["y", "q"], ["z"], name="mm_q"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [4, 16])],
        [numpy_helper.from_array(q, "Q"), numpy_helper.from_array(np.float32(0.01), "scale")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    listed = inspect(save(model, tmp_path / "branches.onnx"))
    assert {(d.name, d.weight) for d in listed.dense} == {
        ("mm_then", "W_then"), ("mm_else", "W_else"), ("dq", "Q"),
    }  # fmt: skip
