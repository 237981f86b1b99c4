"""The trainable form of a pruned or clustered model, and writing the trained values back.

Two forms, one per phase of Deep Compression's retraining:

- `weights` (after pruning): each compressible weight W becomes `W.dense * W.mask`. The mask
  is a constant, so pruned positions get no gradient and are zero in the forward pass.
- `centroids` (after clustering): W becomes `Gather(W.codebook, W.codes) * W.mask`. Only
  the codebook is trained; ORT's GatherGrad sums the gradients of the weights that share a
  centroid, which is the paper's centroid update. Code 0 is the pruned zero, and the mask
  keeps it exactly zero whatever happens to codebook[0].

Biases of the layers train in both phases. Every other initializer stays frozen. Writing
back multiplies by the mask again, so the model keeps its exact zeros and (for centroids)
at most as many distinct values as it had: the contract `lower` relies on.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from dc_onnx.codecs.schema import CodebookOverflowError, split_codebook
from dc_onnx.errors import InputError
from dc_onnx.layers import WeightGroup, find_weight_groups

Phase = Literal["weights", "centroids"]


@dataclasses.dataclass
class _Weight:
    group: WeightGroup
    mask: np.ndarray  # bool, True where the weight survived pruning
    codes: np.ndarray | None  # centroids phase: index into the codebook, 0 where pruned


@dataclasses.dataclass
class TrainableModel:
    """An ONNX model ready for `generate_artifacts`, and how to map its parameters back."""

    proto: onnx.ModelProto
    params: list[str]  # initializers that require gradients
    output: str  # the model output the loss reads
    phase: Phase
    _weights: list[_Weight]
    _biases: dict[str, ir.Value]

    def write_back(self, trained: dict[str, np.ndarray]) -> None:
        """Store trained parameters into the ir.Model the trainable form was built from."""
        for w in self._weights:
            name = str(w.group.weight.name)
            if self.phase == "weights":
                dense = trained[f"{name}.dense"].reshape(w.mask.shape)
                values = np.where(w.mask, dense, np.float32(0))
            else:
                assert w.codes is not None
                codebook = trained[f"{name}.codebook"].reshape(-1)
                values = np.where(w.mask, codebook[w.codes], np.float32(0))
            w.group.set_array(values.astype(np.float32))
        for name, value in self._biases.items():
            value.const_value = ir.Tensor(trained[name].astype(np.float32), name=name)


def _bias_values(groups: list[WeightGroup]) -> dict[str, ir.Value]:
    biases: dict[str, ir.Value] = {}
    for group in groups:
        for layer in group.layers:
            inputs = list(layer.node.inputs)
            if layer.node.op_type in ("Gemm", "Conv") and len(inputs) > 2:
                b = inputs[2]
                if (
                    b is not None
                    and b.is_initializer()
                    and not b.is_graph_input()
                    and b.const_value is not None
                    and b.const_value.dtype == ir.DataType.FLOAT
                ):
                    biases[str(b.name)] = b
    return biases


def _split_codebook(w: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(codebook with 0 first, int64 codes for Gather) of a clustered weight."""
    try:
        codebook, codes = split_codebook(w)
    except CodebookOverflowError as e:
        raise InputError(f"{name}: {e}; training centroids needs a clustered model") from None
    return codebook, codes.astype(np.int64)


def build_trainable(model: ir.Model, phase: Phase) -> TrainableModel:
    """The trainable ONNX form of `model` (left unchanged) for the given phase."""
    groups = find_weight_groups(model.graph)
    if not groups:
        raise InputError("nothing to retrain: no Gemm, MatMul, Conv or Gather reads a float weight")
    if not model.graph.outputs:
        raise InputError("the model has no outputs")
    proto = ir.to_proto(model)
    replaced = {str(g.weight.name) for g in groups}
    kept = [t for t in proto.graph.initializer if t.name not in replaced]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    # Drop any graph-input entries of the replaced weights (IR < 4 models list them there).
    inputs = [i for i in proto.graph.input if i.name not in replaced]
    del proto.graph.input[:]
    proto.graph.input.extend(inputs)

    weights: list[_Weight] = []
    front: list[onnx.NodeProto] = []
    params: list[str] = []
    for group in groups:
        name = str(group.weight.name)
        w = group.array()
        mask = w != 0
        mask_name = f"{name}.mask"
        proto.graph.initializer.append(numpy_helper.from_array(mask.astype(np.float32), mask_name))
        codes = None
        if phase == "weights":
            source = f"{name}.dense"
            proto.graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), source))
            params.append(source)
        else:
            codebook, codes = _split_codebook(w, name)
            params.append(f"{name}.codebook")
            source = f"{name}.shared"
            proto.graph.initializer.extend([
                numpy_helper.from_array(codebook, f"{name}.codebook"),
                numpy_helper.from_array(codes, f"{name}.codes"),
            ])  # fmt: skip
            front.append(
                helper.make_node(
                    "Gather", [f"{name}.codebook", f"{name}.codes"], [source], name=f"{name}.gather"
                )
            )
        # Trained in float32; readers see the weight's own dtype (float16 tables: a Cast).
        masked = name if w.dtype == np.float32 else f"{name}.masked_float32"
        front.append(helper.make_node("Mul", [source, mask_name], [masked], name=f"{name}.masked"))
        if masked != name:
            to = helper.np_dtype_to_tensor_dtype(w.dtype)
            front.append(helper.make_node("Cast", [masked], [name], name=f"{name}.cast", to=to))
        weights.append(_Weight(group, mask, codes))
    nodes = front + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    # The loss reads one output; others would become extra loss inputs.
    output = proto.graph.output[0].name
    del proto.graph.output[1:]
    biases = _bias_values(groups)
    params.extend(biases)
    return TrainableModel(proto, params, output, phase, weights, biases)
