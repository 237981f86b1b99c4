"""Sequential error compensation: each layer rounded against the inputs it gets once the
layers before it are rounded, with the original model's outputs as the target.

Error compensation (dc_onnx.compensate) with the H of the original model's layer inputs
fits each layer as if its inputs were exact. In the compiled model they are not: every
layer upstream was rounded too. Here the layers go wave by wave (a layer's wave is one
more than the latest wave of a layer upstream of it, as in bias correction), and for each
layer two moments are summed over the calibration inputs, with x its input vectors in the
original model and x_q the same ones in the model as rounded so far:

    H_q = sum x_q x_q^T,    C = sum x x_q^T.

The weight that best maps x_q to the original outputs W x (least squares) is

    W* = W C H_q^-1 = W + W (C - H_q) H_q^-1,

and for any Q, sum |W x - Q x_q|^2 = sum |(W* - Q) x_q|^2 + a constant. So compensating
W* through H_q minimises the error against the original outputs, upstream rounding
included (the asymmetric calibration of GPTAQ, Li et al. 2025; the order is GPTQ's own).
H_q is dampened as compensation dampens it, and where x_q = x the shift is zero: a layer
with nothing rounded upstream is compensated as before. The cluster pass rounds W both
ways, W through H as before and W* through H_q, and keeps the one with the lower error
above: the shift is a least-squares fit to the calibration inputs, and the k-means
codebook of W* or its pruned entries can cost more than it gains. Pruned weights stay
zero: W* is rounded with W's mask, so compensation spreads the shift they lose over the
others.

Opt-in (`--compensate sequential`), manual mode only: the budget's simulation rounds
each layer against the original's inputs, and the compiled model must be what it
simulated. At 8 bits, no pruning, 64 calibration inputs, checked on 12 held-out ones
(docs/budget.md, "Sequential compensation"): ppocr-v4-det 1.41% -> 0.92%,
ppocr-v4-rec 0.80% -> 0.81% (its fixed line 6.1% -> 14.4%), after bias correction in both.

Taken: layer weights of the main graph read by one Gemm / MatMul / Conv that error
compensation has an H for. The rest (shared weights, subgraphs, recurrent and storage
weights) keep the H of the original inputs.

Bias correction, which runs after the cluster pass, leaves out the layers that kept W*
(`shifted`): their least-squares fit already aims at the original outputs, and moving
their means again made both models above worse on held-out inputs (leaving them out:
ppocr-v4-det 0.95% -> 0.92%, ppocr-v4-rec 0.89% -> 0.81%).

"The original" is the model as the cluster pass gets it: after prune. Without pruning
that is the original model; with it, the shift aims at the pruned model's outputs, and
what pruning upstream moved is left to the pruning's own compensation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from dc_onnx.budget.activations import LayerInputs, activation_of, input_rows
from dc_onnx.budget.calibration import Calibration
from dc_onnx.budget.simulate import (
    initializers_as_inputs,
    plain_session,
    self_contained,
    with_outputs,
)
from dc_onnx.compensate import DAMP
from dc_onnx.errors import InputError
from dc_onnx.layers import WeightGroup, stored_matrix_of
from dc_onnx.progress import track

logger = logging.getLogger(__name__)

# Rounds a group given its shifted stored matrix W* ([rows, cols]) and H_q ([groups, cols,
# cols]); sets its array and says whether it kept the rounding of W*.
Round = Callable[[WeightGroup, np.ndarray, np.ndarray], bool]


def waves(graph: ir.Graph, outputs: Sequence[str]) -> list[set[str]]:
    """The named node outputs by wave: 1 + the latest wave of one of them upstream. The
    graph's nodes must be in topological order."""
    wanted = set(outputs)
    level: dict[str, int] = {}  # value -> latest wave upstream of it (0: none)
    found: dict[str, int] = {}
    for node in graph:
        upstream = max((level.get(str(v.name), 0) for v in node.inputs if v is not None), default=0)
        for v in node.outputs:
            name = str(v.name)
            if name in wanted:
                found[name] = upstream + 1
                level[name] = upstream + 1
            else:
                level[name] = upstream
    count = max(found.values(), default=0)
    return [{o for o, w in found.items() if w == i} for i in range(1, count + 1)]


def shifted(matrix: np.ndarray, h_q: np.ndarray, drift: np.ndarray) -> np.ndarray:
    """W* = W + W (C - H_q)(H_q + damp)^-1 of a [rows, cols] stored matrix, given H_q and
    `drift` = C - H_q ([groups, cols, cols] both: one band of rows per group). float32, or
    `matrix` itself where the solve fails or leaves non-finite values. W* may be non-zero
    where W is pruned: compensation rounds those to zero and spreads what that costs."""
    groups = h_q.shape[0]
    per = matrix.shape[0] // groups
    w = matrix.astype(np.float64)
    out = w.copy()
    for g in range(groups):
        h = h_q[g]
        damp = DAMP * float(np.mean(np.diagonal(h))) or DAMP
        try:
            # (C - H_q)(H_q + damp)^-1 = ((H_q + damp)^-1 (C - H_q)^T)^T, H_q symmetric
            step = np.linalg.solve(h + damp * np.eye(h.shape[0]), drift[g].T).T
        except np.linalg.LinAlgError:
            return matrix
        rows = slice(g * per, (g + 1) * per)
        out[rows] += w[rows] @ step
    out = out.astype(np.float32)
    return out if np.isfinite(out).all() else matrix


def _activation_name(group: WeightGroup) -> str:
    value = activation_of(group.layers[0])
    assert value is not None  # SequentialCompensation.takes checked it
    return str(value.name)


def _accumulate(
    group: WeightGroup, x: np.ndarray, x_q: np.ndarray, h_q: np.ndarray, drift: np.ndarray
) -> None:
    """Adds this batch's x_q x_q^T to H_q and (x - x_q) x_q^T to C - H_q. The difference
    is summed itself: C and H_q are close, and float32 sums of each would bury it."""
    layer = group.layers[0]
    for part, part_q in zip(input_rows(layer, x), input_rows(layer, x_q), strict=True):
        h_q += (np.transpose(part_q, (0, 2, 1)) @ part_q).astype(np.float64)
        if x is not x_q:
            drift += (np.transpose(part - part_q, (0, 2, 1)) @ part_q).astype(np.float64)


def layer_error(target: np.ndarray, h_q: np.ndarray, values: np.ndarray) -> float:
    """sum |W x - Q x_q|^2 over the calibration inputs, less a constant that does not
    depend on Q: tr((W* - Q) H_q (W* - Q)^T), summed over the groups' bands of rows."""
    groups = h_q.shape[0]
    per = target.shape[0] // groups
    total = 0.0
    for g in range(groups):
        d = (target[g * per : (g + 1) * per] - values[g * per : (g + 1) * per]).astype(np.float64)
        total += float(np.einsum("ij,jk,ik->", d, h_q[g], d))
    return total


class SequentialCompensation:
    """Rounds the layers it takes in waves (module docstring), for the cluster pass."""

    def __init__(self, calibration: Calibration) -> None:
        self.calibration = calibration
        # Nodes whose layer kept W* (filled by `run`): bias correction leaves them as they
        # are, their outputs being fitted to the original's already.
        self.shifted: set[str] = set()

    def takes(self, group: WeightGroup, graph: ir.Graph, layer_inputs: LayerInputs) -> bool:
        if len(group.layers) != 1 or layer_inputs.get(str(group.weight.name)) is None:
            return False
        layer = group.layers[0]
        value = activation_of(layer)
        return (
            layer.node.graph is graph
            and value is not None
            and value.const_value is None
            and group.weight.is_initializer()
        )

    def run(
        self,
        model: ir.Model,
        groups: Sequence[WeightGroup],
        layer_inputs: LayerInputs,
        round_group: Round,
    ) -> dict[str, object]:
        """Rounds every group in `groups` through `round_group`, in waves."""
        start = time.perf_counter()
        if not groups:
            return {"layers": 0, "waves": 0, "seconds": 0.0}
        graph = model.graph
        graph.sort()
        by_output = {str(g.layers[0].node.outputs[0].name): g for g in groups}
        order = waves(graph, list(by_output))
        activations = {g.name: _activation_name(g) for g in groups}
        weights = {str(g.weight.name): g for g in groups}
        original = with_outputs(self_contained(model), sorted(set(activations.values())))
        current = onnx.ModelProto()
        current.CopyFrom(original)
        initializers_as_inputs(current, set(weights))
        reference = plain_session(original.SerializeToString(), rewrites=False)
        rounded = plain_session(current.SerializeToString(), rewrites=False)
        del original, current
        fed = {i.name for i in reference.get_inputs()}
        arrays = {name: g.array() for name, g in weights.items()}  # fed to `rounded`
        for number, wave in enumerate(track(order, "sequential compensation", "wave"), 1):
            in_wave = [by_output[o] for o in sorted(wave)]
            moments = {g.name: self._moments(g, layer_inputs) for g in in_wave}
            names = sorted({activations[g.name] for g in in_wave} - fed)
            for batch in self.calibration.batches:
                feeds = {k: v for k, v in batch.items() if k in fed}
                x = self._values(reference, names, feeds)
                x_q = x if number == 1 else self._values(rounded, names, {**feeds, **arrays})
                for g in in_wave:
                    name = activations[g.name]
                    _accumulate(g, x[name], x_q[name], *moments[g.name])
            for g in in_wave:
                h_q, drift = moments.pop(g.name)
                matrix = np.ascontiguousarray(stored_matrix_of(g, g.array()))
                target = shifted(matrix, h_q, drift)
                if round_group(g, target, h_q):
                    self.shifted.update(str(layer.node.name) for layer in g.layers)
                arrays[str(g.weight.name)] = g.array()
            logger.debug(
                "sequential compensation: wave %d/%d, %d layers, %.1f s",
                number, len(order), len(in_wave), time.perf_counter() - start,
            )  # fmt: skip
        return {
            "layers": len(groups),
            "waves": len(order),
            "seconds": round(time.perf_counter() - start, 3),
        }

    @staticmethod
    def _values(
        session: Any, names: list[str], feeds: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The named values of one run, and the model inputs among the feeds."""
        if not names:  # ORT would return every output
            return dict(feeds)
        try:
            found = dict(zip(names, session.run(names, feeds), strict=True))
        except Exception as e:
            raise InputError(f"sequential compensation: the model did not run: {e}") from None
        return {**feeds, **found}

    @staticmethod
    def _moments(group: WeightGroup, layer_inputs: LayerInputs) -> tuple[np.ndarray, np.ndarray]:
        h = layer_inputs.get(str(group.weight.name))
        assert h is not None
        shape = (1, *h.shape) if h.ndim == 2 else h.shape
        return np.zeros(shape), np.zeros(shape)
