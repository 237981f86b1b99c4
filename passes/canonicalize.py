"""canonicalize: bring a model into the form the other passes expect.

- Constant nodes become initializers (in subgraphs too), and initializers of If / Loop /
  Scan bodies move to the main graph, where the subgraphs read them as outer-scope values:
  every weight is then found in one place and stored once;
- constant-only chains (Cast, Transpose, Reshape, Squeeze, Unsqueeze, Identity) are folded
  into a new initializer (passes/fold.py), so the consumer reads the weight directly;
- a BatchNormalization that follows a Conv or Gemm is folded into its weight and bias,
  so the folded weight is what gets compressed;
- the compressible layers are listed in the stats (graph helpers in dc_onnx.layers).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import (
    LiftConstantsToInitializersPass,
    LiftSubgraphInitializersToMainGraphPass,
)

from dc_onnx.layers import DEFAULT_MIN_ELEMENTS, SurveyStats, add_initializer, survey
from dc_onnx.passes.fold import fold_constant_chains
from dc_onnx.pipeline import CompilerPass

logger = logging.getLogger(__name__)


def _initializer(value: ir.Value | None) -> np.ndarray | None:
    if value is None or not value.is_initializer() or value.is_graph_input():
        return None
    tensor = value.const_value
    return None if tensor is None else tensor.numpy()


def _fold_batch_norm(graph: ir.Graph, bn: ir.Node) -> bool:
    """Fold `bn` into the Conv/Gemm producing its input; False when that is not safe."""
    if len(bn.outputs) != 1 or len(bn.inputs) != 5:
        return False
    x = bn.inputs[0]
    producer = None if x is None else x.producer()
    if x is None or producer is None or len(x.uses()) != 1 or x.is_graph_output():
        return False
    if producer.op_type not in ("Conv", "Gemm") or producer.domain not in ("", "ai.onnx"):
        return False
    params = [_initializer(v) for v in bn.inputs[1:]]
    weight_value = producer.inputs[1]
    weight = _initializer(weight_value)
    if any(p is None for p in params) or weight is None or weight_value is None:
        return False
    if len(weight_value.uses()) != 1:
        return False  # shared weight: folding would change its other readers
    scale, shift, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
    if scale.ndim != 1:
        return False
    s = scale / np.sqrt(var + bn.attributes.get_float("epsilon", 1e-5))
    bias_value = producer.inputs[2] if len(producer.inputs) > 2 else None
    bias = _initializer(bias_value)
    if bias_value is not None and bias is None:
        return False
    if producer.op_type == "Conv":
        new_weight = weight * s.reshape((-1,) + (1,) * (weight.ndim - 1))
        new_bias = ((0.0 if bias is None else bias) - mean) * s + shift
    else:
        trans_b = producer.attributes.get_int("transB", 0)
        new_weight = weight * (s[:, None] if trans_b else s[None, :])
        beta = producer.attributes.get_float("beta", 1.0)
        new_bias = (0.0 if bias is None else beta * bias) * s + shift - mean * s
        producer.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    weight_value.const_value = ir.Tensor(new_weight.astype(np.float32), name=weight_value.name)
    name = f"{producer.name or weight_value.name}.folded_bias"
    new_bias_value = add_initializer(graph, name, np.asarray(new_bias, dtype=np.float32))
    if len(producer.inputs) > 2:
        producer.replace_input_with(2, new_bias_value)
    else:
        producer.resize_inputs(3)
        producer.replace_input_with(2, new_bias_value)
    bn.outputs[0].replace_all_uses_with(x, replace_graph_outputs=True)
    x.name, bn.outputs[0].name = bn.outputs[0].name, x.name
    graph.remove(bn, safe=True)
    return True


@dataclasses.dataclass(frozen=True)
class CanonicalizeStats:
    batch_norms_folded: int
    chains_folded: list[str]  # nodes of constant-only chains folded into initializers
    lifted_from_subgraphs: list[str]  # weights that were subgraph initializers or Constants
    layers: list[str]
    survey: SurveyStats


class CanonicalizePass(CompilerPass):
    name = "canonicalize"

    def __init__(self, min_weight_elements: int = DEFAULT_MIN_ELEMENTS) -> None:
        super().__init__()
        self.min_weight_elements = min_weight_elements

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        in_subgraphs = [str(name) for sub in graph.subgraphs() for name in sub.initializers] + [
            str(node.outputs[0].name)
            for sub in graph.subgraphs()
            for node in sub
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx")
        ]
        modified = LiftConstantsToInitializersPass(size_limit=0)(model).modified
        modified = LiftSubgraphInitializersToMainGraphPass()(model).modified or modified
        chains = fold_constant_chains(model)
        folded = 0
        for node in list(graph):
            is_bn = node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx")
            if is_bn and _fold_batch_norm(graph, node):
                folded += 1
        found = survey(graph, self.min_weight_elements)
        for skipped in found.skipped:  # every pass surveys again; one warning is enough
            logger.warning("weight '%s' stays uncompressed: %s", skipped.name, skipped.reason)
        layers = [layer.name for g in found.groups for layer in g.layers]
        self.stats = CanonicalizeStats(folded, chains, in_subgraphs, layers, found.to_stats())
        unused = [
            v
            for v in graph.initializers.values()
            if not v.uses() and not v.is_graph_output() and not v.is_graph_input()
        ]
        for value in unused:
            graph.initializers.pop(str(value.name))
        return ir.passes.PassResult(model, modified or folded > 0 or bool(chains) or bool(unused))
