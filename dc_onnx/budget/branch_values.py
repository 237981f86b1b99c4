"""Values computed inside If branches, made readable as outputs of the main graph.

ORT returns only main-graph outputs, so a layer inside an If branch (silero-vad computes
everything in one of two branches, by sample rate) has inputs no session can read. Here a
copy of the model carries each wanted value out, branch by branch: the branch that
computes it gains it as an output, the other branch an empty float tensor in its place,
and the If node one more output, up to the main graph. A run then returns the value when
its branch ran and an empty tensor when the other one did. Loop and Scan bodies are not
opened: a body output there is a sequence of every iteration's values, not the value.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
from onnx import helper

_BRANCHES = {"then_branch": "else_branch", "else_branch": "then_branch"}
_SUFFIX = ".dc_branch_value"

# (If node, branch attribute) from the main graph inwards
Chain = tuple[tuple[onnx.NodeProto, str], ...]


def _producers(graph: onnx.GraphProto, chain: Chain, found: dict[str, Chain | None]) -> None:
    """Where each node output of `graph` and of its subgraphs is computed; None inside a
    body that is not an If branch."""
    for node in graph.node:
        for name in node.output:
            if name:
                found.setdefault(name, chain)
        for attr in node.attribute:
            if attr.type != onnx.AttributeProto.GRAPH:
                continue
            if node.op_type == "If" and attr.name in _BRANCHES:
                _producers(attr.g, (*chain, (node, attr.name)), found)
            else:  # a Loop / Scan body: its values are not read
                inner: dict[str, Chain | None] = {}
                _producers(attr.g, chain, inner)
                for name in inner:
                    found.setdefault(name, None)


def _branch(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    (attr,) = [a for a in node.attribute if a.name == name]
    return attr.g


def expose(proto: onnx.ModelProto, names: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Carry each of `names` computed inside If branches out to a main-graph output of
    `proto` (modified in place). Returns {value: output name} for those carried out, and
    {value: why not} for values inside a Loop / Scan body. Values of the main graph are
    in neither: they can be made outputs as they are."""
    where: dict[str, Chain | None] = {}
    _producers(proto.graph, (), where)
    carried: dict[str, str] = {}
    refused: dict[str, str] = {}
    for value in names:
        chain = where.get(value, ())
        if chain is None:
            refused[value] = "inside a Loop / Scan body (its values cannot be read)"
            continue
        if not chain:
            continue
        current = value
        for depth, (node, branch) in enumerate(reversed(chain)):
            out = f"{value}{_SUFFIX}{depth}"
            empty = f"{out}.empty"
            _branch(node, branch).output.append(
                helper.make_tensor_value_info(current, onnx.TensorProto.FLOAT, None)
            )
            other = _branch(node, _BRANCHES[branch])
            tensor = helper.make_tensor(empty, onnx.TensorProto.FLOAT, [0], [])
            other.node.append(helper.make_node("Constant", [], [empty], value=tensor))
            other.output.append(helper.make_tensor_value_info(empty, onnx.TensorProto.FLOAT, None))
            node.output.append(out)
            current = out
        proto.graph.output.append(
            helper.make_tensor_value_info(current, onnx.TensorProto.FLOAT, None)
        )
        carried[value] = current
    return carried, refused
