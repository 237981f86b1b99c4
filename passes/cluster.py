"""cluster: per-weight 1-D k-means weight sharing (Han et al. 2016, section 3).

The surviving (non-zero) weights of each layer share `2**bits - 1` centroids; code 0 is the
exact zero, so pruned weights stay pruned. 1-D k-means on sorted data: clusters are
contiguous ranges, so one sort and a prefix sum make each Lloyd iteration O(k log n).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from dc_onnx.layers import find_weight_groups
from dc_onnx.options import ClusterOptions, Init
from dc_onnx.pipeline import CompilerPass

__all__ = ["ClusterOptions", "ClusterPass", "Init", "kmeans_1d"]

logger = logging.getLogger(__name__)


def _initial_centroids(x: np.ndarray, k: int, init: Init, seed: int) -> np.ndarray:
    if init == "linear":
        return np.linspace(x[0], x[-1], k)
    if init == "density":
        return x[np.linspace(0, x.size - 1, k).round().astype(np.int64)].astype(np.float64)
    rng = np.random.default_rng(seed)
    return np.sort(x[rng.choice(x.size, size=k, replace=False)]).astype(np.float64)


def kmeans_1d(
    values: np.ndarray, k: int, init: Init = "linear", max_iterations: int = 100, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """(centroids, assignment of each value, iterations) for 1-D k-means."""
    order = np.argsort(values, kind="stable")
    x = values[order].astype(np.float64)
    unique = np.unique(x)
    if unique.size <= k:  # nothing to share: every distinct value is its own centroid
        return unique, np.searchsorted(unique, values.astype(np.float64)), 0
    prefix = np.concatenate([[0.0], np.cumsum(x)])
    centroids = _initial_centroids(x, k, init, seed)
    tolerance = 1e-9 * max(abs(x[0]), abs(x[-1]))
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported below
        cut = np.searchsorted(x, (centroids[1:] + centroids[:-1]) / 2)
        lo = np.concatenate([[0], cut])
        hi = np.concatenate([cut, [x.size]])
        count = hi - lo
        means = (prefix[hi] - prefix[lo]) / np.maximum(count, 1)
        updated = np.sort(np.where(count > 0, means, centroids))  # empty clusters stay put
        shift = float(np.max(np.abs(updated - centroids)))
        centroids = updated
        if shift <= tolerance:
            break
    bounds = (centroids[1:] + centroids[:-1]) / 2
    return centroids, np.searchsorted(bounds, values.astype(np.float64)), iterations


class ClusterPass(CompilerPass):
    name = "cluster"

    def __init__(self, options: ClusterOptions) -> None:
        super().__init__()
        self.options = options

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        layers = {}
        groups = find_weight_groups(model.graph)
        for i, group in enumerate(groups, 1):
            w = group.array()
            bits = self.options.bits(group.kind)
            mask = w != 0
            survivors = w[mask]
            if survivors.size == 0:
                layers[group.name] = {"bits": bits, "clusters": 0, "iterations": 0}
                continue
            centroids, assignment, iterations = kmeans_1d(
                survivors,
                (1 << bits) - 1,
                self.options.init,
                self.options.max_iterations,
                self.options.seed,
            )
            shared = w.copy()
            shared[mask] = centroids.astype(np.float32)[assignment]
            if not np.array_equal(shared, w):
                group.set_array(shared)
                modified = True
            layers[group.name] = {
                "bits": bits,
                "clusters": int(np.unique(shared[mask]).size),
                "iterations": iterations,
            }
            logger.info(
                "cluster %d/%d %s: %d weights -> %d centroids (%d iterations)",
                i, len(groups), group.name, survivors.size, centroids.size, iterations,
            )  # fmt: skip
        self.stats = {"layers": layers}
        return ir.passes.PassResult(model, modified)

    def ensures(self, model: ir.Model) -> None:
        for group in find_weight_groups(model.graph):
            distinct = np.unique(group.array()).size
            if distinct > 1 << self.options.bits(group.kind):
                raise AssertionError(f"{group.name}: {distinct} distinct values after clustering")
