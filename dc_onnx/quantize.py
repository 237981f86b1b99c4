"""Pruning and weight sharing as plain array math, with no graph in sight.

The prune and cluster passes call these on each weight; the error budget's sensitivity
analysis calls `quantize()` on one array per candidate setting, so everything here is
deterministic and costs one sort plus a few linear passes over the weight.

Weight sharing is 1-D k-means (Han et al. 2016, section 3). On sorted data the clusters
are contiguous ranges, so after one sort and prefix sums a Lloyd iteration costs
O(k log n) and iterating to convergence is cheap. Non-finite weights (NaN, +-Inf) never
take part in the means: each keeps a codebook entry of its own, so a layer whose original
computes NaN still does, and its finite weights are shared as if the NaN were not there.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

# mse: the least squared error we know how to reach fast (companded start, empty clusters
# split off the worst one); linear / density / random: the paper's three starts, plain Lloyd.
Init = Literal["mse", "linear", "density", "random"]
INITS: tuple[Init, ...] = ("mse", "linear", "density", "random")

_MAX_ITERATIONS = {"mse": 300}  # splitting keeps finding work after the means settle
_COMPANDER_BINS = 4096


def prune_array(w: np.ndarray, rule: str, amount: float) -> np.ndarray:
    """`w` with its smallest-magnitude weights set to exactly zero.

    `rule` is "sparsity" (zero that fraction of the weights) or "quality" (zero those below
    `amount` times the standard deviation of the finite weights). Non-finite weights are the
    largest of all, so they are never pruned.
    """
    flat = w.reshape(-1).copy()
    magnitude = np.abs(flat)
    if rule == "sparsity":
        n_zero = round(amount * flat.size)
        if n_zero > 0:
            # argpartition is exact and deterministic; ties at the threshold are cut by index.
            magnitude[np.isnan(magnitude)] = np.inf
            flat[np.argpartition(magnitude, n_zero - 1, kind="introselect")[:n_zero]] = 0.0
    else:
        finite = flat[np.isfinite(flat)]
        std = float(np.std(finite, dtype=np.float64)) if finite.size else 0.0
        flat[magnitude < amount * std] = 0.0
    return flat.reshape(w.shape)


def _initial_centroids(x: np.ndarray, k: int, init: Init, seed: int) -> np.ndarray:
    if init == "linear":
        return np.linspace(x[0], x[-1], k)
    if init == "density":
        return x[np.linspace(0, x.size - 1, k).round().astype(np.int64)]
    if init == "mse":
        return _companded(x, k)
    rng = np.random.default_rng(seed)
    return np.sort(x[rng.choice(x.size, size=k, replace=False)])


def _companded(x: np.ndarray, k: int) -> np.ndarray:
    """Centroids spread with density proportional to p(x)^(1/3), the high-resolution optimum
    for squared error (Panter & Dite). p is read off equal-count bins: a bin of width w holds
    1/m of the points, so its share of p^(1/3) dx is proportional to w^(2/3)."""
    edges = x[np.linspace(0, x.size - 1, min(x.size, _COMPANDER_BINS)).round().astype(np.int64)]
    mass = np.concatenate([[0.0], np.cumsum(np.diff(edges) ** (2.0 / 3.0))])
    if mass[-1] <= 0:
        return np.linspace(x[0], x[-1], k)
    return np.interp((np.arange(k) + 0.5) / k * mass[-1], mass, edges)


class _SortedValues:
    """Sorted values and their prefix sums: the sum and squared error of any range in O(1)."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.shift = float(x[x.size // 2])  # centring keeps the squared sums well conditioned
        centred = x - self.shift
        self.s1 = np.concatenate([[0.0], np.cumsum(centred)])
        self.s2 = np.concatenate([[0.0], np.cumsum(centred * centred)])

    def ranges(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) of the points nearest to each (sorted) centroid."""
        cut = np.searchsorted(self.x, (centroids[1:] + centroids[:-1]) / 2)
        return np.concatenate([[0], cut]), np.concatenate([cut, [self.x.size]])

    def mean(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return (self.s1[hi] - self.s1[lo]) / np.maximum(hi - lo, 1) + self.shift

    def squared_error(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        total = self.s1[hi] - self.s1[lo]
        return np.maximum(self.s2[hi] - self.s2[lo] - total * total / np.maximum(hi - lo, 1), 0.0)


def _split_worst(
    data: _SortedValues, means: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Move each empty cluster's centroid into the cluster with the largest squared error,
    which is cut in two at its median. Without this, an outlier that stretches the initial
    grid leaves most centroids stranded in the gap for good."""
    count = hi - lo
    empty = np.flatnonzero(count == 0)
    error = np.where(count >= 2, data.squared_error(lo, hi), 0.0)
    worst = np.argsort(-error, kind="stable")[: empty.size]
    worst = worst[error[worst] > 0]
    if worst.size == 0:
        return means, False
    mid = (lo[worst] + hi[worst]) // 2
    means = means.copy()
    means[empty[: worst.size]] = data.mean(mid, hi[worst])
    means[worst] = data.mean(lo[worst], mid)
    return means, True


def kmeans_1d(
    values: np.ndarray,
    k: int,
    init: Init = "linear",
    max_iterations: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(centroids, index of each value's centroid, iterations) for 1-D k-means on finite
    values. With k or fewer distinct values each one is its own centroid."""
    # Sorting in the values' own dtype is the cheap part (SIMD sorts for float32).
    x = np.sort(values.reshape(-1)).astype(np.float64)
    if x.size == 0:
        return np.zeros(0), np.zeros(values.shape, np.int64), 0
    starts = np.concatenate([[True], x[1:] != x[:-1]])
    if np.count_nonzero(starts) <= k:  # nothing to share
        centroids = x[starts]
        return centroids, np.searchsorted(centroids, values.astype(np.float64)), 0
    centroids, iterations = _lloyd(_SortedValues(x), k, init, max_iterations, seed)
    return centroids, nearest(centroids, values), iterations


def _lloyd(
    data: _SortedValues, k: int, init: Init, max_iterations: int | None, seed: int
) -> tuple[np.ndarray, int]:
    x = data.x
    centroids = _initial_centroids(x, k, init, seed).astype(np.float64)
    limit = max_iterations if max_iterations is not None else _MAX_ITERATIONS.get(init, 100)
    tolerance = 1e-9 * max(abs(x[0]), abs(x[-1]))
    iterations = 0
    for iterations in range(1, limit + 1):  # noqa: B007 - reported below
        lo, hi = data.ranges(centroids)
        means = np.where(hi > lo, data.mean(lo, hi), centroids)  # the paper's empties stay put
        split = False
        if init == "mse":
            means, split = _split_worst(data, means, lo, hi)
        updated = np.sort(means)
        shift = float(np.max(np.abs(updated - centroids)))
        centroids = updated
        if shift <= tolerance and not split:
            break
    return centroids, iterations


def nearest(centroids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted `centroids` for each value."""
    bounds = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(bounds, values.astype(np.float64).reshape(-1)).reshape(values.shape)


def representable(centroids: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Sorted distinct centroids rounded to values the weight's dtype holds exactly (fp16,
    bf16, ...), so sharing never adds a second rounding when the weight is stored back."""
    return np.unique(np.asarray(centroids).astype(dtype).astype(np.float64))


def share_values(
    values: np.ndarray,
    k: int,
    init: Init = "mse",
    dtype: np.dtype | None = None,
    max_iterations: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """`values` (no zeros among them, any shape) with at most `k` distinct values, and the
    k-means iterations taken. Each distinct non-finite value keeps its own entry; the finite
    ones share the rest, rounded to `dtype` (default: the values' dtype)."""
    dtype = np.dtype(dtype if dtype is not None else values.dtype)
    flat = values.reshape(-1)
    finite = np.isfinite(flat)
    special = np.unique(flat[~finite])  # NaN, -Inf, +Inf: at most three entries
    room = k - special.size
    out = flat.astype(dtype, copy=True)
    finite_values = flat[finite]
    if finite_values.size == 0:
        return out.reshape(values.shape), 0
    if room < 1:
        raise ValueError(
            f"{special.size} distinct non-finite weights leave no shared value for the finite ones"
            f" (k = {k})"
        )
    centroids, assignment, iterations = kmeans_1d(finite_values, room, init, max_iterations, seed)
    rounded = representable(centroids, dtype)
    if rounded.size < centroids.size or dtype.itemsize < 4:
        # Rounding merged centroids or moved them by more than float32's last bit: the
        # nearest rounded value is what minimises the error now.
        assignment = nearest(rounded, finite_values)
    out[finite] = rounded.astype(dtype)[assignment]
    return out.reshape(values.shape), iterations


def quantize(
    array: np.ndarray,
    bits: int,
    sparsity: float = 0.0,
    init: Init = "mse",
    seed: int = 0,
) -> np.ndarray:
    """The dense result of compressing `array`: the smallest `sparsity` fraction set to zero,
    then the survivors sharing `2**bits - 1` values (zero is the extra code). The same math as
    the prune and cluster passes, in the array's dtype."""
    if not 1 <= bits <= 8:
        raise ValueError(f"weight bits must be in 1..8, got {bits}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    pruned = prune_array(array, "sparsity", sparsity) if sparsity > 0 else array
    mask = pruned != 0
    out = pruned.copy()
    out[mask] = share_values(pruned[mask], (1 << bits) - 1, init, array.dtype, seed=seed)[0]
    return out
