"""The lower pass's choice between the sparse kernels and the decode form (ORT's own Conv,
Gemm or MatMul on the weight decoded once): dense-ish and depthwise layers take the decode
form, sparse ones the kernel, and both match the original."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from conftest import compile_model, make_model, mlp_model, run


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]


def _two_convs(depthwise_second: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    second = (8, 1, 3, 3) if depthwise_second else (8, 8, 3, 3)
    inits = {
        "W1": rng.standard_normal((8, 4, 3, 3)).astype(np.float32),
        "W2": rng.standard_normal(second).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["h"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "Conv",
            ["h", "W2"],
            ["y"],
            name="c2",
            pads=[1, 1, 1, 1],
            group=8 if depthwise_second else 1,
        ),
    ]
    return make_model(nodes, {"x": ["N", 4, 12, 12]}, {"y": ["N", 8, 12, 12]}, inits)


def _check_matches_decoded(compiled: Path, tmp_path: Path) -> None:
    from dc_onnx.tools.decompile import decode_model

    x = np.random.default_rng(1).standard_normal((2, 4, 12, 12)).astype(np.float32)
    (expected,) = run(decode_model(compiled), {"x": x})
    (got,) = run(compiled, {"x": x})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_dense_conv_layers_take_the_decode_form(tmp_path: Path) -> None:
    compiled = compile_model(_two_convs(), tmp_path, sparsity=0.0, bits_conv=8)
    ops = _ops(compiled)
    assert "CompressedConv" not in ops
    assert ops.count("CompressedConstant") == 2 and ops.count("Conv") == 2
    _check_matches_decoded(compiled, tmp_path)


def test_sparse_conv_layers_keep_the_kernel(tmp_path: Path) -> None:
    compiled = compile_model(_two_convs(), tmp_path, sparsity=0.8, bits_conv=8)
    assert _ops(compiled).count("CompressedConv") == 2
    _check_matches_decoded(compiled, tmp_path)


def test_depthwise_conv_takes_the_decode_form_at_any_density(tmp_path: Path) -> None:
    compiled = compile_model(_two_convs(True), tmp_path, sparsity=0.8, bits_conv=8)
    ops = _ops(compiled)
    assert ops.count("CompressedConv") == 1  # c1; the depthwise c2 is decoded
    assert ops.count("CompressedConstant") == 1 and ops.count("Conv") == 1
    _check_matches_decoded(compiled, tmp_path)


@pytest.mark.parametrize(("threshold", "kernel"), [(0.1, 0), (1.5, 2)])
def test_the_crossover_is_an_option(threshold: float, kernel: int, tmp_path: Path) -> None:
    compiled = compile_model(
        _two_convs(), tmp_path, sparsity=0.5, bits_conv=8, conv_dense_density=threshold
    )
    assert _ops(compiled).count("CompressedConv") == kernel
    _check_matches_decoded(compiled, tmp_path)


def _mlp_outputs(path: Path | onnx.ModelProto) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    (y,) = run(path, {"x": x})
    return np.asarray(y)


def test_dense_fc_layers_take_the_decode_form(tmp_path: Path) -> None:
    """Every Gemm / MatMul form of mlp_model, unpruned: ORT's own op reads the decoded
    weight; those stored transposed (Gemm transB=0, MatMul X @ W) through a Transpose."""
    from dc_onnx.tools.decompile import decode_model

    model = mlp_model()
    compiled = compile_model(model, tmp_path, sparsity=0.0, bits_fc=8)
    ops = _ops(compiled)
    assert not {"CompressedGemm", "CompressedMatMul"} & set(ops)
    assert ops.count("CompressedConstant") == 5
    assert ops.count("Transpose") == 2 + 2  # the model's own two, then fc1's and fc3's
    expected = _mlp_outputs(decode_model(compiled))
    np.testing.assert_allclose(_mlp_outputs(compiled), expected, rtol=1e-5, atol=1e-5)
    reference = _mlp_outputs(model)  # 8-bit codes, nothing pruned: close to the original
    assert np.linalg.norm(expected - reference) < 0.01 * np.linalg.norm(reference)


def test_sparse_fc_layers_keep_the_kernels(tmp_path: Path) -> None:
    from dc_onnx.tools.decompile import decode_model

    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.5, bits_fc=8)
    ops = _ops(compiled)
    assert ops.count("CompressedGemm") == 3 and ops.count("CompressedMatMul") == 2
    assert "CompressedConstant" not in ops
    expected = _mlp_outputs(decode_model(compiled))
    np.testing.assert_allclose(_mlp_outputs(compiled), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("threshold", "kernels"), [(0.4, 0), (1.5, 5)])
def test_the_fc_crossover_is_an_option(threshold: float, kernels: int, tmp_path: Path) -> None:
    compiled = compile_model(
        mlp_model(), tmp_path, sparsity=0.5, bits_fc=8, fc_dense_density=threshold
    )
    ops = _ops(compiled)
    assert ops.count("CompressedGemm") + ops.count("CompressedMatMul") == kernels
    assert ops.count("CompressedConstant") == 5 - kernels


def test_the_default_fc_crossover_rises_with_the_layer_size() -> None:
    from dc_onnx.passes.lower import fc_dense_threshold

    sizes = [16 * 16, 384 * 384, 384 * 1536, 1024 * 8210, 4096 * 4096, 32768 * 8192]
    few = [fc_dense_threshold(n, many_rows=False) for n in sizes]
    many = [fc_dense_threshold(n, many_rows=True) for n in sizes]
    assert few == sorted(few) and many == sorted(many)
    assert few[0] == many[0] == 0.1 and few[-1] == 0.7 and many[-1] == 0.45
    assert many[-2] < few[-2]  # large layers: the panels lose to ORT's GEMM earlier


@pytest.mark.parametrize(("x_shape", "kernel"), [(["B", 1024], True), (["B", 16, 1024], False)])
def test_the_default_fc_crossover_depends_on_rows_per_run(
    x_shape: list[int | str], kernel: bool, tmp_path: Path
) -> None:
    # 1024 x 2048 at 40% non-zero: below the few-rows crossover (46%), above the one for
    # 16 rows per sample (31%), which runs on the panel kernel whatever the batch.
    w = np.random.default_rng(1).standard_normal((1024, 2048)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")
    model = make_model([node], {"x": x_shape}, {"y": [*x_shape[:-1], 2048]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.6, bits_fc=5, fc_dense_density=None)
    ops = _ops(compiled)
    assert ("CompressedMatMul" in ops) == kernel and ("CompressedConstant" in ops) != kernel
    x = np.random.default_rng(2).standard_normal([2, *[16] * (len(x_shape) - 2), 1024])
    (y,) = run(compiled, {"x": x.astype(np.float32)})
    assert y.shape == (*x.shape[:-1], 2048) and np.isfinite(y).all()


def test_a_small_layer_takes_the_decode_form_by_default(tmp_path: Path) -> None:
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.5, bits_fc=8, fc_dense_density=None)
    ops = _ops(compiled)
    assert ops.count("CompressedConstant") == 5
    assert "CompressedGemm" not in ops and "CompressedMatMul" not in ops


def test_the_default_conv_crossover_falls_with_the_output_size() -> None:
    from dc_onnx.passes.lower import conv_dense_threshold

    assert conv_dense_threshold(None) == conv_dense_threshold(150) == 0.35  # unknown: large
    assert conv_dense_threshold(149) == conv_dense_threshold(16) == 0.15
    assert conv_dense_threshold(15) == conv_dense_threshold(1) == 0.0  # never the kernel


def _conv(size: int | str) -> onnx.ModelProto:
    """One 3x3 conv, 8 -> 8 channels, over a size x size image (symbolic: a name)."""
    w = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="c", pads=[1, 1, 1, 1])
    return make_model([node], {"x": [1, 8, size, size]}, {"y": [1, 8, size, size]}, {"W": w})


@pytest.mark.parametrize(
    ("size", "calibration_size", "kernel"),
    [(13, None, True), (12, None, False), (3, None, False), ("S", 12, False), ("S", None, True)],
)
def test_the_default_conv_crossover_reads_the_output_size(
    size: int | str, calibration_size: int | None, kernel: bool, tmp_path: Path
) -> None:
    # 25% non-zero: the kernel on 13 x 13 = 169 outputs (crossover 35%), the decode form
    # on 12 x 12 = 144 (15%) and 3 x 3 (never the kernel). A symbolic image size is read
    # from the calibration inputs; with none to read it from it counts as large.
    options: dict[str, object] = dict(sparsity=0.75, bits_conv=8, conv_dense_density=None)
    if calibration_size is not None:
        x = np.random.default_rng(3).standard_normal((4, 8, calibration_size, calibration_size))
        np.savez(tmp_path / "cal.npz", x=x.astype(np.float32))
        options["calibration"] = str(tmp_path / "cal.npz")
    compiled = compile_model(_conv(size), tmp_path, **options)
    ops = _ops(compiled)
    assert ("CompressedConv" in ops) == kernel and ("CompressedConstant" in ops) != kernel
    from dc_onnx.tools.decompile import decode_model

    n = calibration_size or (size if isinstance(size, int) else 9)
    x = np.random.default_rng(4).standard_normal((1, 8, n, n)).astype(np.float32)
    (expected,) = run(decode_model(compiled), {"x": x})
    np.testing.assert_allclose(run(compiled, {"x": x})[0], expected, rtol=1e-5, atol=1e-4)


def test_conv_output_positions_leave_the_model_as_it_was() -> None:
    # Convs in the main graph and in an If branch (reading the outer image), sized from
    # the given input shape; the weights go back, in their order, with their values.
    import onnx_ir as ir

    from dc_onnx.output_positions import conv_output_positions

    rng = np.random.default_rng(0)
    inits = {
        "W": rng.standard_normal((8, 4, 3, 3)).astype(np.float32),
        "V": rng.standard_normal((8, 4, 1, 1)).astype(np.float32),
        "small": np.ones(2, np.float32),
    }
    branch = helper.make_graph(
        [helper.make_node("Conv", ["x", "V"], ["b"], name="in_branch", strides=[2, 2])],
        "then",
        [],
        [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, None)],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["o"])],
        "else",
        [],
        [helper.make_tensor_value_info("o", onnx.TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["y"], name="main", pads=[1, 1, 1, 1]),
        helper.make_node("If", ["flag"], ["z"], then_branch=branch, else_branch=other),
    ]
    float_ = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", float_, ["N", 4, "H", "W"]),
            helper.make_tensor_value_info("flag", onnx.TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info(n, float_, None) for n in ("y", "z")],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    before = [(v.name, v.const_value.numpy().copy()) for v in m.graph.initializers.values()]
    inputs = [v.name for v in m.graph.inputs]
    assert conv_output_positions(m, {"x": (2, 4, 9, 14)}) == {"y": 9 * 14, "b": 5 * 7}
    assert conv_output_positions(m, {}) == {}  # symbolic: unknown
    after = [(v.name, v.const_value.numpy()) for v in m.graph.initializers.values()]
    assert [n for n, _ in after] == [n for n, _ in before]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(after, before, strict=True))
    assert [v.name for v in m.graph.inputs] == inputs
