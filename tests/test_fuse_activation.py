"""The fuse-activation pass (passes/fuse_activation.py) and the kernels' epilogues: a
Relu / Clip / LeakyRelu folded into a compressed op gives the unfused graph's bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper

from conftest import compile_model, make_model, run
from dc_onnx.passes.fuse_activation import FuseActivationPass
from dc_onnx.tools.decompile import decode_model

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")


def _net(rng: np.random.Generator) -> onnx.ModelProto:
    """Every compute op followed by each kind of activation: a sparse conv + Relu, a conv
    run by ORT's Conv inside the kernel (80% dense) + Clip(min, max), a Gemm + LeakyRelu,
    a MatMul + Clip(min only), a Gemm + Clip without bounds."""
    w = {
        "W1": rng.standard_normal((8, 3, 3, 3)),
        "B1": rng.standard_normal(8),
        "W2": rng.standard_normal((6, 8, 3, 3)),
        "W3": rng.standard_normal((6 * 5 * 5, 40)) * 0.1,
        "B3": rng.standard_normal(40),
        "W4": rng.standard_normal((40, 30)) * 0.1,
        "W5": rng.standard_normal((30, 20)) * 0.1,
        "lo": np.array(-0.25),
        "hi": np.array(0.5),
    }
    inits = {k: v.astype(np.float32) for k, v in w.items()}
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv2", strides=[2, 2]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "W3", "B3"], ["g3"], name="fc3"),
        helper.make_node("LeakyRelu", ["g3"], ["r3"], alpha=0.2),
        helper.make_node("MatMul", ["r3", "W4"], ["m4"], name="fc4"),
        helper.make_node("Clip", ["m4", "lo"], ["r4"]),
        helper.make_node("Gemm", ["r4", "W5"], ["g5"], name="fc5"),
        helper.make_node("Clip", ["g5"], ["y"]),
    ]
    return make_model(nodes, {"x": ["N", 3, 11, 11]}, {"y": ["N", 20]}, inits)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(fused, unfused) compilations of the same model with the same weights."""
    model = _net(np.random.default_rng(0))
    out = tmp_path_factory.mktemp("fuse")
    # conv_dense_density 2: every conv runs in CompressedConv (conv2 at 80% on ORT's Conv).
    options = dict(
        sparsity_per_layer={"conv2": 0.2}, sparsity=0.6, bits_conv=8, bits_fc=5,
        conv_dense_density=2.0,
    )  # fmt: skip
    fused = compile_model(model, out, "fused", **options)
    unfused = compile_model(model, out, "unfused", keep_activations=True, **options)
    return fused, unfused


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]


def test_every_activation_is_folded(compiled: tuple[Path, Path]) -> None:
    fused, unfused = compiled
    assert not set(_ops(fused)) & set(ACTIVATIONS)
    assert _ops(unfused).count("Clip") == 3
    proto = onnx.load(str(fused), load_external_data=False)
    acts = {
        n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute}
        for n in proto.graph.node
        if n.domain == "ai.dc_onnx"
    }
    assert acts["conv1"]["activation"] == b"Relu"
    assert acts["conv2"]["activation_params"] == [-0.25, 0.5]
    assert acts["fc3"]["activation_params"] == pytest.approx([0.2])
    lowest = float(np.finfo(np.float32).min)
    assert acts["fc4"]["activation_params"] == [-0.25, -lowest]
    assert acts["fc5"]["activation_params"] == [lowest, -lowest]
    assert [o.name for o in proto.graph.output] == ["y"]


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_outputs_are_the_unfused_bits(
    compiled: tuple[Path, Path], batch: int, threads: int
) -> None:
    fused, unfused = compiled
    x = np.random.default_rng(batch).standard_normal((batch, 3, 11, 11)).astype(np.float32)
    if batch > 2:  # NaN and -inf through every epilogue, in their own images
        x[0, 0, 2, 3] = np.nan
        x[-1, 1, 4, 4] = -np.inf
    (a,) = run(fused, {"x": x}, threads)
    (b,) = run(unfused, {"x": x}, threads)
    assert a.tobytes() == b.tobytes()
    assert np.isfinite(a[1:-1]).all() and (batch == 1 or np.isnan(a[0]).all())
    # The reference decoder re-emits each activation after its dense op.
    reference = decode_model(fused)
    assert set(ACTIVATIONS) <= {n.op_type for n in reference.graph.node}
    x = np.nan_to_num(x, nan=0.0, neginf=-1.0)
    np.testing.assert_allclose(
        run(fused, {"x": x})[0], run(reference, {"x": x})[0], rtol=1e-5, atol=1e-5
    )


def _lowered(reader_nodes: list[onnx.NodeProto], outputs: list[str]) -> ir.Model:
    """A compressed Gemm (as `lower` writes it, streams left out) read by `reader_nodes`."""
    gemm = helper.make_node(
        "CompressedGemm", ["x", "h", "s0", "s1", "s2", "s3"], ["g"], name="fc",
        domain="ai.dc_onnx", layer="fc",
    )  # fmt: skip
    names = ("h", "s0", "s1", "s2", "s3")
    inits = [numpy_helper.from_array(np.zeros(1, np.uint8), n) for n in names]
    graph = helper.make_graph(
        [gemm, *reader_nodes],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.dc_onnx", 1)]
    return ir.from_proto(helper.make_model(graph, opset_imports=opsets))


def test_fused_when_the_activation_is_the_only_reader() -> None:
    model = _lowered([helper.make_node("Relu", ["g"], ["y"])], ["y"])
    result = FuseActivationPass()(model)
    assert result.modified
    (node,) = list(result.model.graph)
    assert node.attributes["activation"].value == "Relu"
    assert node.outputs[0].name == "y" and result.model.graph.outputs[0] is node.outputs[0]


@pytest.mark.parametrize(
    "readers, outputs, why",
    [
        # Two readers: the value before the activation is still needed.
        ([helper.make_node("Relu", ["g"], ["y"]), helper.make_node("Neg", ["g"], ["z"])],
         ["y", "z"], "2 readers"),
        # A graph output itself.
        ([helper.make_node("Relu", ["g"], ["y"])], ["g", "y"], "graph output"),
        # Not an activation the kernels know.
        ([helper.make_node("Sigmoid", ["g"], ["y"])], ["y"], "Sigmoid is not one of"),
        # A bound computed at run time.
        ([helper.make_node("ReduceMin", ["x"], ["x0"], keepdims=0),
          helper.make_node("Clip", ["g", "x0"], ["y"])], ["y"], "not a constant"),
    ],
)  # fmt: skip
def test_not_fused(readers: list[onnx.NodeProto], outputs: list[str], why: str) -> None:
    model = _lowered(readers, outputs)
    count = len(list(model.graph))
    p = FuseActivationPass()
    result = p(model)
    assert not result.modified
    assert len(list(result.model.graph)) == count
    assert why in p.stats["left"]["fc"]
    assert "activation" not in next(iter(result.model.graph)).attributes
