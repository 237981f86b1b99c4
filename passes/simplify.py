"""simplify: optional onnx-simplifier run (constant folding, shape cleanup) before compiling."""

from __future__ import annotations

import onnx
import onnx_ir as ir

from dc_onnx.errors import InputError


class SimplifyPass(ir.passes.FunctionalPass):
    name = "simplify"

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, int] = {}

    def __str__(self) -> str:
        return self.name

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        try:
            import onnxsim
        except ImportError:
            raise InputError(
                "--simplify needs onnx-simplifier: pip install 'dc-onnx[simplify]'"
            ) from None
        original = ir.to_proto(model)
        simplified, ok = onnxsim.simplify(original)
        if not ok:
            raise InputError("onnx-simplifier could not validate the simplified model")
        result = ir.from_proto(simplified)
        self.stats = {"nodes_before": len(model.graph), "nodes_after": len(result.graph)}
        return ir.passes.PassResult(result, _structure(simplified) != _structure(original))


def _structure(model: onnx.ModelProto) -> tuple[object, ...]:
    """Nodes and initializer names: what simplification changes (it also adds metadata)."""
    graph = model.graph
    nodes = [(n.op_type, tuple(n.input), tuple(n.output)) for n in graph.node]
    return (nodes, sorted(t.name for t in graph.initializer))
