"""prune: magnitude pruning, one threshold per weight (Han et al. 2015).

The threshold is either `quality * std(W)` or the magnitude that zeroes a target fraction
of the weight. Per-layer targets are given by globs on node or weight names; the first
matching glob wins, then the global sparsity, then the quality.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from dc_onnx.errors import InputError
from dc_onnx.layers import WeightGroup, find_weight_groups, first_match
from dc_onnx.options import check_non_negative, check_sparsity, check_sparsity_map
from dc_onnx.pipeline import CompilerPass

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PrunePolicy:
    sparsity: float | None = None  # fraction of weights set to zero, every layer
    per_layer: dict[str, float] = dataclasses.field(default_factory=dict)  # glob -> sparsity
    quality: float | None = None  # threshold = quality * std, where no sparsity applies

    def __post_init__(self) -> None:  # the rules of dc_onnx.options.PruneOptions
        if self.sparsity is not None:
            check_sparsity("sparsity", self.sparsity)
        check_sparsity_map("sparsity_per_layer", self.per_layer)
        if self.quality is not None:
            check_non_negative("quality", self.quality)

    def target(self, group: WeightGroup) -> tuple[str, float] | None:
        """('sparsity', s) or ('quality', q) for the group, or None to leave it alone."""
        s = first_match(group, self.per_layer)
        if s is None:
            s = self.sparsity
        if s is not None:
            return ("sparsity", s)
        return None if self.quality is None else ("quality", self.quality)

    def round(self, r: int, rounds: int) -> PrunePolicy:
        """Round r (1-based) of iterative pruning: each round removes the same share of the
        surviving weights, so the last round lands on the target (quality grows linearly)."""
        f = r / rounds

        def step(s: float) -> float:
            return 1.0 - (1.0 - s) ** f

        return PrunePolicy(
            None if self.sparsity is None else step(self.sparsity),
            {k: step(v) for k, v in self.per_layer.items()},
            None if self.quality is None else self.quality * f,
        )


def prune_array(w: np.ndarray, rule: str, amount: float) -> np.ndarray:
    """`w` with its smallest-magnitude weights set to exactly zero."""
    flat = w.reshape(-1).copy()
    magnitude = np.abs(flat)
    if rule == "sparsity":
        n_zero = round(amount * flat.size)
        if n_zero > 0:
            # argpartition is exact and deterministic; ties at the threshold are cut by index.
            flat[np.argpartition(magnitude, n_zero - 1, kind="introselect")[:n_zero]] = 0.0
    else:
        flat[magnitude < amount * float(np.std(w))] = 0.0
    return flat.reshape(w.shape)


class PrunePass(CompilerPass):
    name = "prune"

    def __init__(self, policy: PrunePolicy) -> None:
        super().__init__()
        self.policy = policy

    def requires(self, model: ir.Model) -> None:
        # A glob that matches nothing is most likely a typo, which would silently change
        # the result; refuse it and say which layers there are.
        groups = find_weight_groups(model.graph)
        unmatched = [p for p in self.policy.per_layer if not any(g.matches(p) for g in groups)]
        if unmatched:
            names = ", ".join(g.name for g in groups) or "none"
            raise InputError(
                f"--sparsity-per-layer: {', '.join(repr(p) for p in unmatched)} matches no layer"
                f" (layers: {names})"
            )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        layers = {}
        for group in find_weight_groups(model.graph):
            w = group.array()
            target = self.policy.target(group)
            pruned = w if target is None else prune_array(w, *target)
            if not np.array_equal(pruned, w):
                group.set_array(pruned)
                modified = True
            layers[group.name] = {
                "weights": int(w.size),
                "density": float(np.count_nonzero(pruned)) / max(w.size, 1),
                "rule": None if target is None else f"{target[0]}={target[1]:g}",
            }
            logger.debug("prune %s: density %.3f", group.name, layers[group.name]["density"])
        self.stats = {"layers": layers}
        return ir.passes.PassResult(model, modified)

    def ensures(self, model: ir.Model) -> None:
        for group in find_weight_groups(model.graph):
            target = self.policy.target(group)
            if target and target[0] == "sparsity":
                w = group.array()
                wanted = round(target[1] * w.size)
                if w.size - np.count_nonzero(w) < wanted:
                    raise AssertionError(f"{group.name}: fewer zeros than the target sparsity")
