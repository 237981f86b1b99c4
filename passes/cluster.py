"""cluster: per-weight 1-D k-means weight sharing (Han et al. 2016, section 3).

The surviving (non-zero) weights of each layer share `2**bits - 1` values; code 0 is the
exact zero, so pruned weights stay pruned. Bits come per kind (conv / fc) unless a
per-weight mapping names the weight. The math lives in `dc_onnx.quantize`; this pass walks
the weights, picks their bits and records what it did.

Storage-form float weights are clustered with the allocate pass's bits, else `bits_other`;
fp16/bf16 centroids are rounded to the weight's dtype, so the codebook holds values that
dtype represents exactly.
Integer weights (already quantized) are never clustered: they are stored losslessly.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from dc_onnx import scratch
from dc_onnx.errors import CompileError
from dc_onnx.large_weights import cluster_large, distinct_values, is_large
from dc_onnx.layers import (
    DEFAULT_MIN_ELEMENTS,
    StoredWeight,
    WeightGroup,
    find_stored_weights,
    find_weight_groups,
    refuse_unmatched,
)
from dc_onnx.options import ClusterOptions
from dc_onnx.pipeline import CompilerPass
from dc_onnx.progress import track
from dc_onnx.quantize import Init, kmeans_1d, share_values

__all__ = ["ClusterOptions", "ClusterPass", "Init", "kmeans_1d"]

logger = logging.getLogger(__name__)


def bits_of(options: ClusterOptions, group: WeightGroup | StoredWeight) -> int:
    """The group's bits: its weight's name in `bits_per_layer`, else the first glob there
    that matches a weight or node name, else the allocate pass's choice, else the kind's
    default."""
    per_layer = options.bits_per_layer
    name = str(group.weight.name)
    if name in per_layer:
        return per_layer[name]
    for pattern, bits in per_layer.items():
        if group.matches(pattern):
            return bits
    allocated = group.annotation("bits")
    return options.bits(group.kind) if allocated is None else int(allocated)


def _relative_error(before: np.ndarray, after: np.ndarray) -> float:
    finite = np.isfinite(before)
    b = before[finite].astype(np.float64)
    norm = float(np.linalg.norm(b))
    return float(np.linalg.norm(after[finite].astype(np.float64) - b)) / norm if norm else 0.0


class ClusterPass(CompilerPass):
    name = "cluster"

    def __init__(
        self,
        options: ClusterOptions,
        min_weight_elements: int = DEFAULT_MIN_ELEMENTS,
        default_init: Init = "mse",
    ) -> None:
        super().__init__()
        self.options = options
        self.min_weight_elements = min_weight_elements
        self.init: Init = options.init or default_init

    def weights(self, model: ir.Model) -> list[WeightGroup | StoredWeight]:
        """Layer weights, then storage-form float weights (integer ones are left alone)."""
        stored = find_stored_weights(model.graph, self.min_weight_elements)
        return [*find_weight_groups(model.graph), *(s for s in stored if s.kind == "storage")]

    def requires(self, model: ir.Model) -> None:
        refuse_unmatched("--bits-per-layer", self.options.bits_per_layer, self.weights(model))

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        layers = {}
        groups = self.weights(model)
        for i, group in enumerate(track(groups, "cluster"), 1):
            bits = bits_of(self.options, group)
            if isinstance(group, WeightGroup) and is_large(group):  # never copied whole
                o = self.options
                iterations = o.max_iterations if o.max_iterations is not None else 100
                stats = cluster_large(group, (1 << bits) - 1, self.init, iterations, o.seed)
                layers[group.name] = {"bits": bits, **stats}
                modified = True
                continue
            w = group.array()
            mask = w != 0  # NaN too: a non-finite weight is kept, never pruned
            shared = w.copy()
            iterations = 0
            if np.any(mask):
                try:
                    shared[mask], iterations = share_values(
                        w[mask],
                        (1 << bits) - 1,
                        self.init,
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
            del w, shared
            scratch.release(group.weight.const_value)  # one weight at a time in memory
            logger.info(
                "cluster %d/%d %s: %d weights -> %d values at %d bits (%d iterations, "
                "relative error %.2e)",
                i, len(groups), group.name, int(mask.sum()), layers[group.name]["clusters"],
                bits, iterations, layers[group.name]["relative_error"],
            )  # fmt: skip
        self.stats = {"layers": layers}
        return ir.passes.PassResult(model, modified)

    def ensures(self, model: ir.Model) -> None:
        for group in self.weights(model):
            limit = 1 << bits_of(self.options, group)
            if isinstance(group, WeightGroup) and is_large(group):
                distinct = distinct_values(group, limit)
            else:
                distinct = np.unique(group.array()).size
                scratch.release(group.weight.const_value)
            if distinct > limit:
                raise AssertionError(f"{group.name}: {distinct} distinct values after clustering")
