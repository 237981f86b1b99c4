"""Distillation loss for onnxruntime-training: cross-entropy against the teacher's softened
class probabilities (Hinton et al. 2015).

    loss = -T^2 * mean over samples of sum_c p_c * log softmax(z / T)_c

with z the student's logits and p = softmax(teacher logits / T), computed outside the graph
and fed as the target. The T^2 factor keeps the gradient scale independent of T.
onnxblock ships no such loss, so this builds the nodes itself; the class is made when the
training API is loaded, because onnxblock cannot be imported before that.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper, numpy_helper


def softened(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) along the last axis, as float32."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def soft_target_loss(onnxblock: Any, temperature: float) -> Any:
    """An onnxblock.Block computing the distillation loss at the given temperature."""
    blocks = onnxblock.blocks
    from onnxruntime.training.onnxblock import _graph_utils

    class SoftTargetCrossEntropy(blocks.Block):  # type: ignore[name-defined]
        def build(self, logits: str, target: str = "target") -> str:
            if not _graph_utils.node_arg_exists(self.base, target):
                target = blocks.InputLike(logits)(target)
            graph = self.base.graph

            def name(what: str) -> str:
                return str(_graph_utils.generate_graph_name(f"distill_{what}"))

            inv_t, t2, axes = name("inv_t"), name("t2"), name("axes")
            graph.initializer.extend([
                numpy_helper.from_array(np.array(1.0 / temperature, np.float32), inv_t),
                numpy_helper.from_array(np.array(-temperature**2, np.float32), t2),
                numpy_helper.from_array(np.array([-1], np.int64), axes),
            ])  # fmt: skip
            scaled, logp, prod, per_sample, mean, out = (
                name(n) for n in ("scaled", "logp", "prod", "per_sample", "mean", "loss")
            )
            graph.node.extend([
                helper.make_node("Mul", [logits, inv_t], [scaled], name=name("scale")),
                helper.make_node("LogSoftmax", [scaled], [logp], name=name("logsm"), axis=-1),
                helper.make_node("Mul", [target, logp], [prod], name=name("weigh")),
                helper.make_node(
                    "ReduceSum", [prod, axes], [per_sample], name=name("sum"), keepdims=0
                ),
                helper.make_node("ReduceMean", [per_sample], [mean], name=name("mean"), keepdims=0),
                helper.make_node("Mul", [mean, t2], [out], name=name("negate")),
            ])  # fmt: skip
            return out

    return SoftTargetCrossEntropy()
