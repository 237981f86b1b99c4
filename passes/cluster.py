"""cluster: per-weight 1-D k-means weight sharing (Han et al. 2016, section 3).

The surviving (non-zero) weights of each layer share `2**bits - 1` values; code 0 is the
exact zero, so pruned weights stay pruned. Bits come per kind (conv / fc) unless a
per-weight mapping names the weight. The math lives in `dc_onnx.quantize`; this pass walks
the weights, picks their bits and records what it did.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from dc_onnx.errors import CompileError
from dc_onnx.layers import WeightGroup, find_weight_groups
from dc_onnx.pipeline import CompilerPass
from dc_onnx.quantize import INITS, Init, kmeans_1d, share_values

__all__ = ["ClusterOptions", "ClusterPass", "Init", "kmeans_1d"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    bits_conv: int = 8
    bits_fc: int = 5
    init: Init = "mse"
    max_iterations: int | None = None  # None: the init's own limit
    seed: int = 0
    # weight name (or a glob on weight or node names) -> bits; exact names win, then the
    # first matching glob, then the kind's default
    per_weight: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for bits in (self.bits_conv, self.bits_fc, *self.per_weight.values()):
            if not 1 <= bits <= 8:
                raise ValueError(f"weight bits must be in 1..8, got {bits}")
        if self.init not in INITS:
            raise ValueError(f"unknown init '{self.init}' (known: {', '.join(INITS)})")

    def bits(self, group: WeightGroup) -> int:
        name = str(group.weight.name)
        if name in self.per_weight:
            return self.per_weight[name]
        for pattern, bits in self.per_weight.items():
            if group.matches(pattern):
                return bits
        return self.bits_conv if group.kind == "conv" else self.bits_fc

    def unmatched(self, groups: list[WeightGroup]) -> list[str]:
        """Per-weight entries that name no weight of the model."""
        names = [str(g.weight.name) for g in groups]
        return [
            p for p in self.per_weight if p not in names and not any(g.matches(p) for g in groups)
        ]


def _relative_error(before: np.ndarray, after: np.ndarray) -> float:
    finite = np.isfinite(before)
    b = before[finite].astype(np.float64)
    norm = float(np.linalg.norm(b))
    return float(np.linalg.norm(after[finite].astype(np.float64) - b)) / norm if norm else 0.0


class ClusterPass(CompilerPass):
    name = "cluster"

    def __init__(self, options: ClusterOptions) -> None:
        super().__init__()
        self.options = options

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        layers = {}
        groups = find_weight_groups(model.graph)
        for pattern in self.options.unmatched(groups):
            logger.warning("per-weight bits '%s' match no compressible weight", pattern)
        for i, group in enumerate(groups, 1):
            w = group.array()
            bits = self.options.bits(group)
            mask = w != 0  # NaN too: a non-finite weight is kept, never pruned
            shared = w.copy()
            iterations = 0
            if np.any(mask):
                try:
                    shared[mask], iterations = share_values(
                        w[mask],
                        (1 << bits) - 1,
                        self.options.init,
                        max_iterations=self.options.max_iterations,
                        seed=self.options.seed,
                    )
                except ValueError as e:
                    raise CompileError(f"layer '{group.name}': {e}") from None
            if not np.array_equal(shared, w, equal_nan=True):
                group.set_array(shared)
                modified = True
            layers[group.name] = {
                "bits": bits,
                "clusters": int(np.unique(shared[mask]).size),
                "iterations": iterations,
                "nonfinite": int(np.count_nonzero(~np.isfinite(w))),
                "relative_error": _relative_error(w, shared),
            }
            logger.info(
                "cluster %d/%d %s: %d weights -> %d values at %d bits (%d iterations, "
                "relative error %.2e)",
                i, len(groups), group.name, int(mask.sum()), layers[group.name]["clusters"],
                bits, iterations, layers[group.name]["relative_error"],
            )  # fmt: skip
        self.stats = {"layers": layers}
        return ir.passes.PassResult(model, modified)

    def ensures(self, model: ir.Model) -> None:
        for group in find_weight_groups(model.graph):
            distinct = np.unique(group.array()).size
            if distinct > 1 << self.options.bits(group):
                raise AssertionError(f"{group.name}: {distinct} distinct values after clustering")
