"""fuse-activation: fold a Relu, Clip or LeakyRelu into the compressed op it follows.

After `lower`, a `CompressedGemm` / `CompressedMatMul` / `CompressedConv` is often read by
one activation node only. The kernels can apply that activation while they write their
output (after the bias), which saves ORT a pass over the whole tensor. The activation
moves into two attributes of the op (docs/format.md, "Fused activation"):

    activation         "Relu" | "Clip" | "LeakyRelu"
    activation_params  []     | [min, max]  | [alpha]

Clip's missing bounds are stored as float32's lowest and max, the values ORT's Clip uses
then, so the kernel computes exactly what the unfused node did. The op's output takes the
activation's output name (graph outputs keep their names).

Left alone, with the reason logged: an output read by more than one node or that is
itself a graph output (the value before the activation is needed), a Clip whose bounds
are not constant float32 scalars, a NaN bound or alpha.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from dc_onnx.codecs.schema import COMPRESSED_OP, DOMAIN
from dc_onnx.pipeline import CompilerPass

__all__ = ["ACTIVATIONS", "FuseActivationPass", "activation_of"]

logger = logging.getLogger(__name__)

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")
_COMPUTE_OPS = {COMPRESSED_OP[op] for op in ("Gemm", "MatMul", "Conv")}
_LOWEST, _HIGHEST = float(np.finfo(np.float32).min), float(np.finfo(np.float32).max)


def _scalar(value: ir.Value | None, default: float) -> float | str:
    """A Clip bound: its float value, `default` when absent, or why it cannot be used."""
    if value is None:
        return default
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None:
        return f"bound '{value.name}' is not a constant"
    array = tensor.numpy()
    if array.dtype != np.float32 or array.size != 1:
        return f"bound '{value.name}' is not one float32"
    return float(array.reshape(()))


def activation_of(node: ir.Node) -> tuple[str, list[float]] | str:
    """(activation, params) for an activation node, or why it cannot be fused."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in ACTIVATIONS:
        return f"{op} is not one of {', '.join(ACTIVATIONS)}"
    params: list[float] = []
    if op == "LeakyRelu":
        params = [node.attributes.get_float("alpha", 0.01)]
    elif op == "Clip" and ("min" in node.attributes or "max" in node.attributes):  # opset < 11
        params = [node.attributes.get_float("min", _LOWEST),
                  node.attributes.get_float("max", _HIGHEST)]  # fmt: skip
    elif op == "Clip":
        inputs = [*node.inputs, None, None]
        bounds = [_scalar(inputs[1], _LOWEST), _scalar(inputs[2], _HIGHEST)]
        reasons = [b for b in bounds if isinstance(b, str)]
        if reasons:
            return reasons[0]
        params = [float(b) for b in bounds]
    if any(np.isnan(p) for p in params):
        return f"{op} has a NaN parameter"
    return op, params


def _check(graph: ir.Graph, node: ir.Node) -> tuple[ir.Node, str, list[float]] | str:
    """The activation node to fold into `node` with its kind and params, or why none."""
    if "activation" in node.attributes:
        return "already fused"
    out = node.outputs[0]
    if out.is_graph_output():
        return "its output is a graph output"
    uses = list(out.uses())
    if len(uses) != 1:
        return f"its output has {len(uses)} readers"
    reader = uses[0].node
    if reader.graph is not graph or uses[0].idx != 0:
        return "its output is not the first input of a node of the same graph"
    found = activation_of(reader)
    return found if isinstance(found, str) else (reader, *found)


class FuseActivationPass(CompilerPass):
    """Fold the activation that alone reads a compressed compute op's output into that op."""

    name = "fuse-activation"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        fused: dict[str, str] = {}
        left: dict[str, str] = {}
        for node in list(graph):
            if node.domain != DOMAIN or node.op_type not in _COMPUTE_OPS:
                continue
            layer = node.attributes.get_string("layer", node.name or "?")
            checked = _check(graph, node)
            if isinstance(checked, str):
                left[layer] = checked
                logger.info("%s: no activation fused: %s", layer, checked)
                continue
            act, kind, params = checked
            node.attributes["activation"] = ir.AttrString("activation", kind)
            node.attributes["activation_params"] = ir.AttrFloat32s("activation_params", params)
            out, act_out = node.outputs[0], act.outputs[0]
            act_out.replace_all_uses_with(out, replace_graph_outputs=True)
            bounds = [v for v in act.inputs[1:] if v is not None]
            graph.remove(act, safe=True)
            for value in bounds:  # Clip's bounds, now in the attribute
                unused = not value.uses() and not value.is_graph_input()
                if unused and value.name is not None and value.name in graph.initializers:
                    graph.initializers.pop(value.name)
            name, act_out.name = act_out.name, None
            out.name = name  # readers and graph outputs keep the name they had
            out.type, out.shape = act_out.type or out.type, act_out.shape or out.shape
            fused[layer] = kind
            logger.info("%s: %s fused", layer, kind)
        self.stats = {"fused": fused, "left": left}
        return ir.passes.PassResult(model, bool(fused))
