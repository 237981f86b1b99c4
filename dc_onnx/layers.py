"""Finding the compressible layers of a model and moving weights to the stored layout.

A layer is a Gemm, MatMul or Conv node whose weight is a float32 initializer. Compression
works per weight, not per node: a weight shared by several nodes is compressed once, and
only when every node that reads it is a layer that stores it the same way.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from collections.abc import Iterable
from typing import Literal

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)

LayerKind = Literal["conv", "fc"]

# Per-weight settings the allocate pass leaves on a weight for the prune, cluster and
# lower passes: "sparsity", "bits", "index_bits", or "keep" (left dense, not a layer).
ANNOTATION_PREFIX = "dc_onnx."
ANNOTATIONS = ("sparsity", "bits", "index_bits", "keep")


@dataclasses.dataclass(frozen=True)
class Layer:
    """One node that reads a compressible weight."""

    node: ir.Node
    weight: ir.Value
    kind: LayerKind
    transposed: bool  # the stored [out, in] matrix is the weight transposed
    weight_side: int  # MatMul: 1 for X @ W, 0 for W @ X; Gemm and Conv: 1

    @property
    def name(self) -> str:
        return self.node.name or str(self.weight.name)

    @property
    def layout(self) -> tuple[str, bool]:
        return (self.node.op_type, self.transposed)


@dataclasses.dataclass(frozen=True)
class WeightGroup:
    """A compressible weight and the layers that read it."""

    weight: ir.Value
    layers: tuple[Layer, ...]

    @property
    def kind(self) -> LayerKind:
        return self.layers[0].kind

    @property
    def name(self) -> str:
        return ",".join(layer.name for layer in self.layers)

    def matches(self, pattern: str) -> bool:
        names = [str(self.weight.name)] + [layer.name for layer in self.layers]
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)

    def annotation(self, key: str) -> float | None:
        """A per-weight setting written by the allocate pass (ANNOTATIONS), if any."""
        text = self.weight.metadata_props.get(ANNOTATION_PREFIX + key)
        return None if text is None else float(text)

    def array(self) -> np.ndarray:
        tensor = self.weight.const_value
        assert tensor is not None
        return tensor.numpy()

    def set_array(self, array: np.ndarray) -> None:
        self.weight.const_value = ir.Tensor(array.astype(np.float32), name=self.weight.name)

    def stored_matrix(self, array: np.ndarray | None = None) -> np.ndarray:
        """The weight as the [out, in] matrix of docs/format.md."""
        w = self.array() if array is None else array
        if self.kind == "conv":
            return w.reshape(w.shape[0], -1)
        return w.T if self.layers[0].transposed else w

    def from_stored(self, matrix: np.ndarray) -> np.ndarray:
        original = self.array()
        if self.kind == "conv":
            return matrix.reshape(original.shape)
        return matrix.T if self.layers[0].transposed else matrix


def _constant_weight(value: ir.Value | None, ndims: Iterable[int]) -> bool:
    if value is None or not value.is_initializer() or value.is_graph_input():
        return False
    tensor = value.const_value
    return tensor is not None and tensor.dtype == ir.DataType.FLOAT and len(tensor.shape) in ndims


def _as_layer(node: ir.Node) -> Layer | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    inputs = list(node.inputs)
    if node.op_type == "Gemm" and len(inputs) >= 2 and _constant_weight(inputs[1], (2,)):
        trans_b = node.attributes.get_int("transB", 0)
        assert inputs[1] is not None
        return Layer(node, inputs[1], "fc", transposed=not trans_b, weight_side=1)
    if node.op_type == "MatMul" and len(inputs) == 2:
        a, b = inputs
        if _constant_weight(b, (2,)) and not _constant_weight(a, (1, 2, 3, 4, 5, 6)):
            assert b is not None
            return Layer(node, b, "fc", transposed=True, weight_side=1)
        if _constant_weight(a, (2,)) and not _constant_weight(b, (1, 2, 3, 4, 5, 6)):
            assert a is not None
            return Layer(node, a, "fc", transposed=False, weight_side=0)
    if node.op_type == "Conv" and len(inputs) >= 2 and _constant_weight(inputs[1], (3, 4)):
        assert inputs[1] is not None
        return Layer(node, inputs[1], "conv", transposed=False, weight_side=1)
    return None


def find_weight_groups(graph: ir.Graph) -> list[WeightGroup]:
    """Compressible weights in graph order (subgraphs of If/Loop are not searched)."""
    by_weight: dict[int, list[Layer]] = {}
    weights: dict[int, ir.Value] = {}
    for node in graph:
        layer = _as_layer(node)
        if layer is not None:
            by_weight.setdefault(id(layer.weight), []).append(layer)
            weights[id(layer.weight)] = layer.weight
    groups = []
    for key, layers in by_weight.items():
        weight = weights[key]
        readers = {id(user) for user, _ in weight.uses()}
        shared_oddly = len(readers) != len(layers) or len({lay.layout for lay in layers}) != 1
        if weight.metadata_props.get(ANNOTATION_PREFIX + "keep"):
            continue  # the allocation left it dense
        if shared_oddly or weight.is_graph_output():
            logger.warning(
                "weight '%s' is also read by nodes that cannot use a compressed form; "
                "it stays dense",
                weight.name,
            )
            continue
        groups.append(WeightGroup(weight, tuple(layers)))
    return groups


def annotate(weight: ir.Value, **settings: float) -> None:
    """Record per-weight settings (see ANNOTATIONS) on a weight value."""
    for key, value in settings.items():
        assert key in ANNOTATIONS, key
        weight.metadata_props[ANNOTATION_PREFIX + key] = repr(value)


def clear_annotations(graph: ir.Graph) -> None:
    for value in graph.initializers.values():
        for key in ANNOTATIONS:
            value.metadata_props.pop(ANNOTATION_PREFIX + key, None)


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register `array` as a new initializer named `name` (suffixed until unique)."""
    base, n = name, 0
    while name in graph.initializers:
        n += 1
        name = f"{base}_{n}"
    value = ir.Value(name=name, const_value=ir.Tensor(array, name=name))
    value.type = ir.TensorType(ir.DataType.from_numpy(array.dtype))
    value.shape = ir.Shape(array.shape)
    graph.register_initializer(value)
    return value


def first_match(group: WeightGroup, patterns: dict[str, float]) -> float | None:
    """The value of the first glob that matches the weight's or a node's name."""
    for pattern, value in patterns.items():
        if group.matches(pattern):
            return value
    return None
