"""Each pass on tiny hand-built graphs: what it changes, and `modified` both ways."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import helper

from conftest import make_model
from dc_onnx.errors import CompileError
from dc_onnx.layers import find_weight_groups
from dc_onnx.passes.canonicalize import CanonicalizePass
from dc_onnx.passes.cluster import ClusterOptions, ClusterPass, kmeans_1d
from dc_onnx.passes.lower import DOMAIN, LowerOptions, LowerPass
from dc_onnx.passes.prune import PrunePass, PrunePolicy
from dc_onnx.passes.simplify import SimplifyPass
from dc_onnx.pipeline import run_passes


def _fc(w: np.ndarray, trans_b: int = 0) -> ir.Model:
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=trans_b)
    n_out = w.shape[0] if trans_b else w.shape[1]
    return ir.from_proto(make_model([node], {"x": ["N", 16]}, {"y": ["N", n_out]}, {"W": w}))


def _weights(model: ir.Model) -> list[np.ndarray]:
    return [g.array() for g in find_weight_groups(model.graph)]


def _outputs(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString())
    return session.run(None, feeds)


# canonicalize -------------------------------------------------------------------------


def test_canonicalize_leaves_a_canonical_model_alone(rng: np.random.Generator) -> None:
    model = _fc(rng.standard_normal((16, 4)).astype(np.float32))
    result = CanonicalizePass()(model)
    assert not result.modified
    assert len(find_weight_groups(result.model.graph)) == 1


def test_canonicalize_lifts_constant_weights(rng: np.random.Generator) -> None:
    w = rng.standard_normal((16, 4)).astype(np.float32)
    nodes = [
        helper.make_node(
            "Constant", [], ["W"], value=helper.make_tensor("W", 1, w.shape, w.ravel())
        ),
        helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
    ]
    model = ir.from_proto(make_model(nodes, {"x": ["N", 16]}, {"y": ["N", 4]}, {}))
    assert not find_weight_groups(model.graph)
    pass_ = CanonicalizePass()
    assert pass_(model).modified
    assert pass_.stats.layers == ["mm"]


@pytest.mark.parametrize("producer", ["Conv", "Gemm", "GemmTransB"])
def test_canonicalize_folds_batch_norm(producer: str, rng: np.random.Generator) -> None:
    c = 6
    bn = {
        "s": rng.uniform(0.5, 2, c), "b": rng.standard_normal(c),
        "m": rng.standard_normal(c), "v": rng.uniform(0.5, 2, c),
    }  # fmt: skip
    if producer == "Conv":
        inits = {"W": rng.standard_normal((c, 3, 3, 3)), "B": rng.standard_normal(c)}
        first = helper.make_node("Conv", ["x", "W", "B"], ["h"], name="conv", pads=[1] * 4)
        shapes: tuple[list[int | str], list[int | str]] = (["N", 3, 5, 5], ["N", c, 5, 5])
    else:
        trans = producer == "GemmTransB"
        inits = {"W": rng.standard_normal((c, 8) if trans else (8, c)), "B": rng.standard_normal(c)}
        first = helper.make_node(
            "Gemm", ["x", "W", "B"], ["h"], name="fc", transB=int(trans), beta=0.5
        )
        shapes = (["N", 8], ["N", c])
    norm = helper.make_node("BatchNormalization", ["h", "s", "b", "m", "v"], ["y"], epsilon=1e-3)
    inits.update(bn)
    model = make_model(
        [first, norm], {"x": shapes[0]}, {"y": shapes[1]},
        {k: v.astype(np.float32) for k, v in inits.items()},
    )  # fmt: skip
    feeds = {"x": rng.standard_normal([2 if d == "N" else d for d in shapes[0]]).astype(np.float32)}
    expected = _outputs(ir.from_proto(model), feeds)[0]
    ir_model = ir.from_proto(model)
    assert CanonicalizePass()(ir_model).modified
    assert [n.op_type for n in ir_model.graph] == [first.op_type]
    assert [o.name for o in ir_model.graph.outputs] == ["y"]
    np.testing.assert_allclose(_outputs(ir_model, feeds)[0], expected, rtol=1e-4, atol=1e-4)


def test_shared_weight_read_by_another_op_stays_dense(rng: np.random.Generator) -> None:
    w = rng.standard_normal((16, 16)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["a"], name="mm"),
        helper.make_node("Add", ["a", "W"], ["y"]),
    ]
    model = ir.from_proto(make_model(nodes, {"x": [16, 16]}, {"y": [16, 16]}, {"W": w}))
    assert find_weight_groups(model.graph) == []


def test_shared_weight_read_by_two_layers_is_one_group(rng: np.random.Generator) -> None:
    w = rng.standard_normal((16, 16)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["a"], name="mm1"),
        helper.make_node("MatMul", ["a", "W"], ["y"], name="mm2"),
    ]
    model = ir.from_proto(make_model(nodes, {"x": ["N", 16]}, {"y": ["N", 16]}, {"W": w}))
    (group,) = find_weight_groups(model.graph)
    assert [layer.name for layer in group.layers] == ["mm1", "mm2"]


# prune --------------------------------------------------------------------------------


def test_prune_to_a_target_sparsity(rng: np.random.Generator) -> None:
    w = rng.standard_normal((16, 50)).astype(np.float32)
    model = _fc(w)
    assert PrunePass(PrunePolicy(sparsity=0.75))(model).modified
    (pruned,) = _weights(model)
    assert np.count_nonzero(pruned) == 200
    kept = pruned != 0
    assert np.abs(w[kept]).min() >= np.abs(w[~kept]).max()  # magnitude order respected
    assert np.array_equal(pruned[kept], w[kept])


def test_prune_by_quality_threshold(rng: np.random.Generator) -> None:
    w = rng.standard_normal((16, 50)).astype(np.float32)
    model = _fc(w)
    PrunePass(PrunePolicy(quality=0.5))(model)
    (pruned,) = _weights(model)
    assert np.array_equal(pruned != 0, np.abs(w) >= 0.5 * w.std())


def test_prune_per_layer_glob_beats_global(rng: np.random.Generator) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["h"], name="encoder.fc"),
        helper.make_node("MatMul", ["h", "B"], ["y"], name="head"),
    ]
    inits = {"A": rng.standard_normal((16, 16)), "B": rng.standard_normal((16, 10))}
    model = ir.from_proto(
        make_model(nodes, {"x": ["N", 16]}, {"y": ["N", 10]},
                   {k: v.astype(np.float32) for k, v in inits.items()})
    )  # fmt: skip
    pass_ = PrunePass(PrunePolicy(sparsity=0.5, per_layer={"encoder.*": 0.9}))
    pass_(model)
    a, b = _weights(model)
    assert np.count_nonzero(a) == 256 - 230 and np.count_nonzero(b) == 80
    assert pass_.stats["layers"]["encoder.fc"]["rule"] == "sparsity=0.9"


def test_prune_without_a_target_changes_nothing(rng: np.random.Generator) -> None:
    model = _fc(rng.standard_normal((16, 4)).astype(np.float32))
    assert not PrunePass(PrunePolicy())(model).modified
    assert not PrunePass(PrunePolicy(sparsity=0.0))(model).modified


def test_prune_policy_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="sparsity"):
        PrunePolicy(sparsity=1.0)
    with pytest.raises(ValueError, match="quality"):
        PrunePolicy(quality=-1)


# cluster ------------------------------------------------------------------------------


def test_kmeans_1d_matches_brute_force_lloyd(rng: np.random.Generator) -> None:
    x = rng.standard_normal(500)
    centroids, assignment, _ = kmeans_1d(x, 7, max_iterations=300)
    # Fixed point of Lloyd: each centroid is the mean of its points, each point nearest.
    for j, c in enumerate(centroids):
        assert np.isclose(x[assignment == j].mean(), c)
    nearest = np.abs(x[:, None] - centroids[None, :]).argmin(1)
    assert np.array_equal(nearest, assignment)


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_cluster_shares_weights_and_keeps_zeros(init: str, rng: np.random.Generator) -> None:
    w = rng.standard_normal((16, 64)).astype(np.float32)
    w[rng.random(w.shape) < 0.5] = 0
    model = _fc(w)
    pass_ = ClusterPass(ClusterOptions(bits_fc=3, init=init))  # type: ignore[arg-type]
    assert pass_(model).modified
    (shared,) = _weights(model)
    assert np.array_equal(shared == 0, w == 0)
    assert np.unique(shared[shared != 0]).size <= 7
    kept = w != 0
    assert np.mean((shared[kept] - w[kept]) ** 2) < 0.1 * np.var(w[kept])
    again = _fc(w)
    ClusterPass(ClusterOptions(bits_fc=3, init=init))(again)  # type: ignore[arg-type]
    assert np.array_equal(_weights(again)[0], shared)  # deterministic


def test_cluster_leaves_few_distinct_values_alone(rng: np.random.Generator) -> None:
    w = rng.choice(np.array([0, -0.5, 0.25, 1.0], dtype=np.float32), size=(16, 8))
    assert not ClusterPass(ClusterOptions(bits_fc=2))(_fc(w)).modified


# lower --------------------------------------------------------------------------------


@pytest.mark.parametrize("trans_b", [0, 1])
def test_lower_replaces_layers_with_compressed_ops(trans_b: int, rng: np.random.Generator) -> None:
    w = rng.choice(np.array([0, 0, 0, -0.5, 0.25], dtype=np.float32), size=(16, 8))
    model = _fc(w.T.copy() if trans_b else w, trans_b)
    pass_ = LowerPass(LowerOptions(index_bits_fc=3, fc_dense_density=2.0))  # the kernel form
    assert pass_(model).modified
    (node,) = list(model.graph)
    assert (node.domain, node.op_type) == (DOMAIN, "CompressedGemm")
    assert list(node.attributes.get_ints("weight_shape")) == [8, 16]
    assert "W" not in model.graph.initializers
    stats = pass_.stats.layers["fc"]
    assert stats.nonzeros == np.count_nonzero(w) and stats.codebook_size == 3


def test_lower_without_layers_is_not_modified(rng: np.random.Generator) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    model = ir.from_proto(make_model([node], {"x": [4]}, {"y": [4]}, {}))
    assert not LowerPass(LowerOptions())(model).modified


def test_lower_refuses_unclustered_weights(rng: np.random.Generator) -> None:
    model = _fc(rng.standard_normal((16, 64)).astype(np.float32))
    with pytest.raises(CompileError, match="distinct"):
        run_passes(model, [LowerPass(LowerOptions())])


def test_pipeline_names_the_failing_pass_and_its_predecessors(rng: np.random.Generator) -> None:
    model = _fc(rng.standard_normal((16, 64)).astype(np.float32))
    passes = [CanonicalizePass(), PrunePass(PrunePolicy(sparsity=0.5)), LowerPass(LowerOptions())]
    with pytest.raises(
        CompileError, match=r"pass 'lower' failed \(passes run before it: canonicalize, prune\)"
    ):
        run_passes(model, passes)


# simplify -----------------------------------------------------------------------------


def test_simplify_folds_a_computed_weight_into_a_compressible_one(
    rng: np.random.Generator,
) -> None:
    nodes = [
        helper.make_node("Add", ["A", "B"], ["W"]),
        helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
    ]
    inits = {"A": rng.standard_normal((16, 8)), "B": rng.standard_normal((16, 8))}
    model = ir.from_proto(
        make_model(nodes, {"x": ["N", 16]}, {"y": ["N", 8]},
                   {k: v.astype(np.float32) for k, v in inits.items()})
    )  # fmt: skip
    assert find_weight_groups(model.graph) == []
    result = SimplifyPass()(model)
    assert result.modified and result.model is not model
    assert [layer.name for g in find_weight_groups(result.model.graph) for layer in g.layers] == [
        "mm"
    ]


def test_simplify_of_a_simple_model_is_not_modified(rng: np.random.Generator) -> None:
    model = _fc(rng.standard_normal((16, 4)).astype(np.float32))
    assert not SimplifyPass()(model).modified
