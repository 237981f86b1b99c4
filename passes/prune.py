"""prune: magnitude pruning, one threshold per weight (Han et al. 2015).

The threshold is either `quality * std(W)` or the magnitude that zeroes a target fraction
of the weight. Per-layer targets are given by globs on node or weight names; the first
matching glob wins, then the global sparsity, then the quality.

Storage-form weights (LSTM, embedding tables, elementwise constants, ...) feed ops whose
sensitivity to zeros nobody measured, so they are pruned only when a per-layer glob names
them. Integer weights (already quantized) are never pruned.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from dc_onnx.layers import (
    DEFAULT_MIN_ELEMENTS,
    StoredWeight,
    WeightGroup,
    find_stored_weights,
    find_weight_groups,
    first_match,
    refuse_unmatched,
)
from dc_onnx.options import check_non_negative, check_sparsity, check_sparsity_map
from dc_onnx.pipeline import CompilerPass
from dc_onnx.quantize import prune_array

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PrunePolicy:
    sparsity: float | None = None  # fraction of weights set to zero, every layer
    per_layer: dict[str, float] = dataclasses.field(default_factory=dict)  # glob -> sparsity
    quality: float | None = None  # threshold = quality * std, where no sparsity applies
    min_weight_elements: int = DEFAULT_MIN_ELEMENTS  # storage weights from this size

    def __post_init__(self) -> None:  # the rules of dc_onnx.options.PruneOptions
        if self.sparsity is not None:
            check_sparsity("sparsity", self.sparsity)
        check_sparsity_map("sparsity_per_layer", self.per_layer)
        if self.quality is not None:
            check_non_negative("quality", self.quality)

    def target(self, group: WeightGroup | StoredWeight) -> tuple[str, float] | None:
        """('sparsity', s) or ('quality', q) for the group, or None to leave it alone."""
        s = first_match(group, self.per_layer)
        if isinstance(group, StoredWeight) or group.kind == "embedding":
            # Tables: a pruned row changes every token that reads it; only when asked.
            return None if s is None or group.kind == "integer" else ("sparsity", s)
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
            self.min_weight_elements,
        )

    def weights(self, model: ir.Model) -> list[WeightGroup | StoredWeight]:
        """Layer weights, then storage-form weights."""
        stored = find_stored_weights(model.graph, self.min_weight_elements)
        return [*find_weight_groups(model.graph), *stored]


class PrunePass(CompilerPass):
    name = "prune"

    def __init__(self, policy: PrunePolicy) -> None:
        super().__init__()
        self.policy = policy

    def requires(self, model: ir.Model) -> None:
        refuse_unmatched("--sparsity-per-layer", self.policy.per_layer, self.policy.weights(model))

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        layers = {}
        for group in self.policy.weights(model):
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
        for group in self.policy.weights(model):
            target = self.policy.target(group)
            if target and target[0] == "sparsity":
                w = group.array()
                wanted = round(target[1] * w.size)
                if w.size - np.count_nonzero(w) < wanted:
                    raise AssertionError(f"{group.name}: fewer zeros than the target sparsity")
