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

import dataclasses
import logging
from typing import Literal

import numpy as np

from dc_onnx import blocks
from dc_onnx.compensate import ColumnRounder, compensate_groups, segments_of

logger = logging.getLogger(__name__)

# mse: the least squared error we know how to reach fast (companded start, empty clusters
# split off the worst one); linear / density / random: the paper's three starts, plain Lloyd.
Init = Literal["mse", "linear", "density", "random"]
INITS: tuple[Init, ...] = ("mse", "linear", "density", "random")

_MAX_ITERATIONS = {"mse": 300}  # splitting keeps finding work after the means settle
_COMPANDER_BINS = 4096
_LOOKUP_BITS = 20  # table size of the fast nearest-centroid search for float32
_LOOKUP_MIN_SIZE = 1 << 18  # below this, a plain binary search is cheaper than the table


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
        std = float(np.std(finite)) if finite.size else 0.0
        flat[magnitude < amount * std] = 0.0
    return flat.reshape(w.shape)


def _initial_centroids(data: _SortedValues, k: int, init: Init, seed: int) -> np.ndarray:
    x = data.x
    if init == "linear":
        return np.linspace(x[0], x[-1], k)
    if init == "density":
        return x[np.linspace(0, x.size - 1, k).round().astype(np.int64)]
    if init == "mse":
        return _companded(data, k)
    rng = np.random.default_rng(seed)
    return np.sort(x[rng.choice(x.size, size=k, replace=False)])


def _companded(data: _SortedValues, k: int) -> np.ndarray:
    """Centroids spread with density proportional to p(x)^(1/3), the high-resolution optimum
    for squared error (Panter & Dite); p is the importance-weighted density. It is read off
    bins of equal weight: a bin of width w holds 1/m of it, so its share of p^(1/3) dx is
    proportional to w^(2/3)."""
    x = data.x
    bins = min(x.size, _COMPANDER_BINS)
    edges = x[data.quantile_index(np.linspace(0.0, 1.0, bins))]
    mass = np.concatenate([[0.0], np.cumsum(np.diff(edges) ** (2.0 / 3.0))])
    if mass[-1] <= 0:
        return np.linspace(x[0], x[-1], k)
    return np.interp((np.arange(k) + 0.5) / k * mass[-1], mass, edges)


def _prefix_sum(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.size + 1, np.float64)
    out[0] = 0.0
    np.cumsum(a, out=out[1:])
    return out


class _SortedValues:
    """Sorted values, optionally with an importance per value, and prefix sums: the weighted
    mean and squared error of any range in O(1)."""

    def __init__(self, x: np.ndarray, importance: np.ndarray | None = None) -> None:
        self.x = x
        self.importance = importance
        self.s0 = None if importance is None else _prefix_sum(importance)
        self.s1 = _prefix_sum(x if importance is None else importance * x)
        self.shift = float(x[x.size // 2])
        self._s2: np.ndarray | None = None

    @property
    def s2(self) -> np.ndarray:
        """Prefix sums of squares about a central value (so the errors keep their precision);
        built on first use, as only the splitting needs them."""
        if self._s2 is None:
            centred = self.x - self.shift
            np.multiply(centred, centred, out=centred)
            if self.importance is not None:
                centred *= self.importance
            self._s2 = _prefix_sum(centred)
        return self._s2

    def weight(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return (hi - lo).astype(np.float64) if self.s0 is None else self.s0[hi] - self.s0[lo]

    def quantile_index(self, q: np.ndarray) -> np.ndarray:
        """Index of the values below which a fraction q of the weight lies."""
        if self.s0 is None:
            return (q * (self.x.size - 1)).round().astype(np.int64)
        index = np.searchsorted(self.s0, q * self.s0[-1], side="right") - 1
        return np.clip(index, 0, self.x.size - 1)

    def ranges(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) of the points nearest to each (sorted) centroid."""
        cut = np.searchsorted(self.x, (centroids[1:] + centroids[:-1]) / 2)
        return np.concatenate([[0], cut]), np.concatenate([cut, [self.x.size]])

    def mean(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        w = self.weight(lo, hi)
        return (self.s1[hi] - self.s1[lo]) / np.where(w > 0, w, 1.0)

    def squared_error(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        w = self.weight(lo, hi)
        total = self.s1[hi] - self.s1[lo] - self.shift * w  # sum of the centred values
        return np.maximum(self.s2[hi] - self.s2[lo] - total * total / np.where(w > 0, w, 1), 0.0)

    def median(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """A cut inside each range that splits its weight in two (lo < cut < hi)."""
        if self.s0 is None:
            mid = (lo + hi) // 2
        else:
            mid = np.searchsorted(self.s0, (self.s0[lo] + self.s0[hi]) / 2)
        return np.clip(mid, lo + 1, hi - 1)


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
    mid = data.median(lo[worst], hi[worst])
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
    importance: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(centroids, index of each value's centroid, iterations) for 1-D k-means on finite
    values, minimising the squared error weighted by `importance` (one positive number per
    value; default 1). With k or fewer distinct values each one is its own centroid."""
    flat = values.reshape(-1)
    if importance is None:
        # Sorting in the values' own dtype is the cheap part (SIMD sorts for float32).
        x = np.sort(flat).astype(np.float64)
        v = None
    else:
        order = np.argsort(flat, kind="stable")
        x = flat[order].astype(np.float64)
        v = np.asarray(importance, np.float64).reshape(-1)[order]
    if x.size == 0:
        return np.zeros(0), np.zeros(values.shape, np.int64), 0
    if np.count_nonzero(x[1:] != x[:-1]) < k:  # k or fewer distinct values: nothing to share
        centroids = np.unique(x)
        return centroids, np.searchsorted(centroids, values.astype(np.float64)), 0
    centroids, iterations = _lloyd(_SortedValues(x, v), k, init, max_iterations, seed)
    return centroids, nearest(centroids, values), iterations


def _lloyd(
    data: _SortedValues, k: int, init: Init, max_iterations: int | None, seed: int
) -> tuple[np.ndarray, int]:
    x = data.x
    centroids = _initial_centroids(data, k, init, seed).astype(np.float64)
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


def kmeans_sorted_values(
    x: np.ndarray, k: int, init: Init, max_iterations: int | None = None, seed: int = 0
) -> tuple[np.ndarray, int]:
    """(centroids, iterations) of kmeans_1d on already sorted finite values with more than
    k distinct ones: the same start and iterations, for callers that hold the sorted
    values (large weights, dc_onnx.large_weights). Needs three float64 copies of x."""
    return _lloyd(_SortedValues(np.asarray(x, np.float64)), k, init, max_iterations, seed)


def nearest(centroids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted `centroids` for each value."""
    bounds = (centroids[1:] + centroids[:-1]) / 2
    if values.dtype == np.float32 and values.size >= _LOOKUP_MIN_SIZE and bounds.size:
        return _nearest_float32(bounds, values)
    return np.searchsorted(bounds, values.astype(np.float64).reshape(-1)).reshape(values.shape)


def _nearest_float32(bounds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`searchsorted(bounds, values)` for float32 values through a table over the top 20 bits
    of their bit patterns: every float in a table bucket lies between the bucket's two end
    values, so when both ends fall between the same bounds the answer holds for the whole
    bucket. Only values in buckets that straddle a bound (a few percent) are searched."""
    ends = np.arange(1 << _LOOKUP_BITS, dtype=np.uint32) << (32 - _LOOKUP_BITS)
    with np.errstate(invalid="ignore"):  # NaN patterns: no finite value lands in their buckets
        low = ends.view(np.float32).astype(np.float64)
        high = (ends | ((1 << (32 - _LOOKUP_BITS)) - 1)).view(np.float32).astype(np.float64)
        first = np.searchsorted(bounds, np.minimum(low, high)).astype(np.int16)
        last = np.searchsorted(bounds, np.maximum(low, high)).astype(np.int16)
    flat = values.reshape(-1)
    bucket = flat.view(np.uint32) >> np.uint32(32 - _LOOKUP_BITS)
    out = first[bucket].astype(np.int64)
    unsure = np.flatnonzero(out != last[bucket])
    out[unsure] = np.searchsorted(bounds, flat[unsure].astype(np.float64))
    return out.reshape(values.shape)


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
    importance: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """`values` (no zeros among them, any shape) with at most `k` distinct values, and the
    k-means iterations taken. Each distinct non-finite value keeps its own entry; the finite
    ones share the rest, rounded to `dtype` (default: the values' dtype). `importance`
    (same shape as `values`) weighs each value's squared error."""
    dtype = np.dtype(dtype if dtype is not None else values.dtype)
    flat = values.reshape(-1)
    finite = np.isfinite(flat)
    all_finite = bool(finite.all())  # the usual case skips every masked copy below
    finite_values = flat if all_finite else flat[finite]
    special = np.unique(flat[~finite]) if not all_finite else flat[:0]  # NaN, -Inf, +Inf
    room = k - special.size
    if finite_values.size and room < 1:
        raise ValueError(
            f"{special.size} distinct non-finite weights leave no shared value for the finite ones"
            f" (k = {k})"
        )
    iterations = 0
    shared = finite_values.astype(dtype)
    if finite_values.size:
        weights = None if importance is None else np.asarray(importance).reshape(-1)[finite]
        centroids, assignment, iterations = kmeans_1d(
            finite_values, room, init, max_iterations, seed, weights
        )
        rounded = representable(centroids, dtype)
        if rounded.size < centroids.size or dtype.itemsize < 4:
            # Rounding merged centroids or moved them by more than float32's last bit: the
            # nearest rounded value is what minimises the error now.
            assignment = nearest(rounded, finite_values)
        shared = rounded.astype(dtype)[assignment]
    if all_finite:
        return shared.reshape(values.shape), iterations
    out = flat.astype(dtype, copy=True)
    out[finite] = shared
    return out.reshape(values.shape), iterations


# A float32 scale per row costs 32 bits; an extra bit per weight halves the RMS error.
# So row scales pay when they cut the squared error by 4^(32 * rows / non-zeros) or more.
_SCALE_BITS = 32
_MAX_SAVED_RATIO = 2.0**48  # error power ratio of 24 bits a weight: float32's precision


@dataclasses.dataclass(frozen=True)
class RowScaled:
    """A weight shared per row: W[r, c] = float32(scales[r] * codebook[code]), where the
    codebook (<= k non-zero values) is shared by every row of the stored [rows, cols] matrix
    and each row's scale is its largest |w| (docs/format.md, "Row scales")."""

    values: np.ndarray  # [rows, cols] float32: the products, what the runtime computes with
    scales: np.ndarray  # [rows] float32, > 0
    codebook: np.ndarray  # sorted distinct non-zero normalised values, float32
    iterations: int = 0


def share_rows(
    matrix: np.ndarray,
    k: int,
    init: Init = "mse",
    seed: int = 0,
    importance: np.ndarray | None = None,
    max_iterations: int | None = None,
) -> RowScaled | None:
    """The [rows, cols] float32 `matrix`'s non-zeros as row scales times one shared k-entry
    codebook of normalised values, or None where that form does not apply (not float32, a
    single row, non-finite weights)."""
    if matrix.dtype != np.float32 or matrix.ndim != 2 or matrix.shape[0] < 2:
        return None
    if not np.isfinite(matrix).all():
        return None
    scales = np.abs(matrix).max(axis=1)
    scales[scales == 0] = 1.0  # an empty row: any positive scale decodes it
    normalised = matrix / scales[:, None]
    mask = matrix != 0
    if not mask.any():
        return None
    weights = None
    if importance is not None:  # the error in the weight's own units: scale^2 per row
        weights = np.asarray(importance, np.float64) * np.square(scales, dtype=np.float64)[:, None]
        weights = weights[mask]
    shared = np.zeros_like(normalised)
    shared[mask], iterations = share_values(
        normalised[mask], k, init, np.dtype(np.float32), max_iterations, seed, weights
    )
    values = (shared * scales[:, None]).astype(np.float32)  # one float32 rounding, as decoded
    codebook = np.unique(shared[shared != 0])
    return RowScaled(values, scales.astype(np.float32), codebook.astype(np.float32), iterations)


def _row_relative_error(
    a: np.ndarray, b: np.ndarray, importance: np.ndarray | None, hessian: np.ndarray | None = None
) -> float:
    """Sum over rows of each row's squared error relative to its own power: every output
    channel counts alike, whatever its magnitude. (The plain squared error is all in the
    largest rows: one codebook for a weight whose rows differ by 100x leaves the small
    rows with errors as large as the rows themselves, and the layers after a small
    channel, a BatchNorm folded into it, see only that channel's own scale.)
    With `hessian`, errors and powers are those of each row's output through H."""
    if hessian is not None:
        a64 = a.astype(np.float64)
        error = _output_energy(a64 - b.astype(np.float64), hessian)
        power = _output_energy(a64, hessian)
        return float(np.sum(error / np.where(power > 0, power, 1.0)))
    d = np.square(a.astype(np.float64) - b.astype(np.float64))
    if importance is not None:
        d *= importance
    power = np.mean(np.square(a, dtype=np.float64), axis=1)
    return float(np.sum(d.sum(axis=1) / np.where(power > 0, power, 1.0)))


def _output_energy(rows: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    """r^T H r for each row r of [rows, cols] (H per group of consecutive rows when 3-D;
    summed over the row's segments when H is smaller than a row)."""
    segments = segments_of(rows.shape[1], hessian)
    if segments > 1:
        view = rows.reshape(rows.shape[0] * segments, -1)
        return _output_energy(view, hessian).reshape(rows.shape[0], segments).sum(axis=1)
    if hessian.ndim == 2:
        return np.einsum("rc,rc->r", rows @ hessian, rows)
    per = rows.shape[0] // hessian.shape[0]
    grouped = rows.reshape(hessian.shape[0], per, -1)
    return np.einsum("grc,grc->gr", grouped @ hessian, grouped).reshape(-1)


def rows_pay(
    matrix: np.ndarray,
    per_tensor: np.ndarray,
    rows: RowScaled,
    importance: np.ndarray | None,
    hessian: np.ndarray | None = None,
) -> bool:
    """Whether the row-scaled form's lower error (relative to each row's power; through H,
    when given, the output's) is worth its scales (_SCALE_BITS)."""
    before = _row_relative_error(matrix, per_tensor, importance, hessian)
    after = _row_relative_error(matrix, rows.values, importance, hessian)
    if after >= before:
        return False
    # Exact rows save at most float32's 24 significant bits per weight: rows of one weight
    # ([N, 1] scales) come out exact but cost a 32-bit scale each, more than they save.
    ratio = before / after if after > 0 else _MAX_SAVED_RATIO
    nonzeros = max(1, int(np.count_nonzero(matrix)))
    saved_bits = 0.5 * np.log2(min(ratio, _MAX_SAVED_RATIO)) * nonzeros  # 6 dB per bit
    return bool(saved_bits > _SCALE_BITS * matrix.shape[0])


def quantize(
    array: np.ndarray,
    bits: int,
    sparsity: float = 0.0,
    init: Init = "mse",
    seed: int = 0,
    importance: np.ndarray | None = None,
    row_axis: int | None = None,
    hessian: np.ndarray | None = None,
) -> np.ndarray:
    """The dense result of compressing `array`: the smallest `sparsity` fraction set to zero,
    then the survivors sharing `2**bits - 1` values (zero is the extra code). The same math as
    the prune and cluster passes, in the array's dtype. `importance` (the array's shape)
    weighs each weight's squared error, e.g. by the mean square of the input it multiplies.

    `row_axis` is the axis of `array` that indexes the rows of its stored matrix (the
    output channels: `WeightGroup.row_axis`); with it, and the `mse` start, the rows get
    scales of their own where that pays (`share_layer`), as the compiler does.

    `hessian` (H = sum x x^T of the inputs the stored matrix's columns multiply, from
    dc_onnx.budget.activations; needs `row_axis`) makes the pruning and the sharing
    error-compensating (dc_onnx.compensate): the same zeros and codebook, with the values
    chosen for the least output error on those inputs."""
    if not 1 <= bits <= 8:
        raise ValueError(f"weight bits must be in 1..8, got {bits}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    pruned = prune_array(array, "sparsity", sparsity) if sparsity > 0 else array
    k = (1 << bits) - 1
    # A weight above one block is clustered block by block, with one codebook
    # (dc_onnx.large_weights): no row scales there either.
    if row_axis is not None and array.ndim >= 2 and array.nbytes <= blocks.BLOCK_BYTES:
        if sparsity > 0:
            pruned = compensate_pruning(array, pruned, row_axis, hessian)
        matrix = np.moveaxis(pruned, row_axis, 0)
        moved_shape = matrix.shape
        weights = None
        if importance is not None:
            weights = np.moveaxis(np.asarray(importance), row_axis, 0).reshape(moved_shape[0], -1)
        shared = share_layer(
            matrix.reshape(moved_shape[0], -1), k, init, seed, weights, hessian=hessian
        )
        return np.moveaxis(shared.values.reshape(moved_shape), 0, row_axis)
    return _share_tensor(pruned, k, init, array.dtype, seed, importance)


def compensable(matrix: np.ndarray, hessian: np.ndarray | None) -> bool:
    """Whether error compensation applies to this [rows, cols] stored matrix with this H:
    float32 (the layers H is collected for), finite, within one block, and H matching its
    columns or equal segments of them."""
    if hessian is None or matrix.dtype != np.float32 or matrix.ndim != 2:
        return False
    if matrix.nbytes > blocks.BLOCK_BYTES:  # the passes take such weights block by block
        return False
    segments = segments_of(matrix.shape[1], hessian)
    if hessian.shape[-2] != hessian.shape[-1] or not segments:
        return False
    groups = hessian.shape[0] if hessian.ndim == 3 else 1
    return (matrix.shape[0] * segments) % groups == 0 and bool(np.isfinite(matrix).all())


def compensate_pruning(
    original: np.ndarray, pruned: np.ndarray, row_axis: int, hessian: np.ndarray | None
) -> np.ndarray:
    """`pruned` (the magnitude pruning of `original`, same zeros) with the surviving weights
    corrected for the pruned ones' output error through H (SparseGPT with a fixed mask).
    Without a usable H, `pruned` itself."""
    matrix = np.moveaxis(original, row_axis, 0)
    moved_shape = matrix.shape
    matrix = matrix.reshape(moved_shape[0], -1)
    if not compensable(matrix, hessian):
        return pruned
    assert hessian is not None
    mask = np.moveaxis(pruned, row_axis, 0).reshape(matrix.shape) != 0
    values = compensate_groups(matrix, hessian, ColumnRounder(mask))
    return np.moveaxis(values.astype(original.dtype).reshape(moved_shape), 0, row_axis)


def _share_tensor(
    pruned: np.ndarray,
    k: int,
    init: Init,
    dtype: np.dtype,
    seed: int,
    importance: np.ndarray | None,
) -> np.ndarray:
    """One k-entry codebook for the whole weight; zeros stay zeros."""
    mask = pruned != 0
    if mask.all():
        return share_values(pruned, k, init, dtype, seed=seed, importance=importance)[0]
    weights = None if importance is None else np.asarray(importance)[mask]
    out = pruned.copy()
    out[mask] = share_values(pruned[mask], k, init, dtype, seed=seed, importance=weights)[0]
    return out


@dataclasses.dataclass(frozen=True)
class SharedLayer:
    """A stored matrix after sharing: its values, and the row-scaled form when chosen."""

    values: np.ndarray
    rows: RowScaled | None = None
    iterations: int = 0  # of the k-means that made the chosen form


def share_layer(
    matrix: np.ndarray,
    k: int,
    init: Init = "mse",
    seed: int = 0,
    importance: np.ndarray | None = None,
    max_iterations: int | None = None,
    row_scales: bool = True,
    hessian: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> SharedLayer:
    """A [rows, cols] stored matrix (zeros are pruned weights) sharing k non-zero values:
    one codebook for the whole weight, or, with the `mse` start, row scales and a shared
    codebook of normalised values when `rows_pay` says so (and `row_scales` allows). The
    paper's starts (`linear`, `density`, `random`) keep the one-codebook form, bit for bit
    as before.

    With `hessian` (see `quantize`) the codebooks stay the k-means ones and each weight
    takes the codebook value that error compensation picks (dc_onnx.compensate), and the
    choice between the two forms compares output errors through H.

    `mask` (False where pruned) lets `matrix` hold values where it is False: compensation
    then spreads their removal over the later columns too (sequential compensation's
    shifted weights, dc_onnx.budget.sequential). By default the zeros are the pruned."""
    target = matrix
    if mask is None:
        mask = matrix != 0
    else:
        matrix = np.where(mask, matrix, 0).astype(matrix.dtype)
    per_tensor = matrix.copy()
    iterations = 0
    if mask.any():
        weights = None if importance is None else np.asarray(importance)[mask]
        per_tensor[mask], iterations = share_values(
            matrix[mask], k, init, matrix.dtype, max_iterations, seed, weights
        )
    if not compensable(matrix, hessian):
        hessian = None
    if hessian is not None and mask.any():
        grid = np.unique(per_tensor[mask])
        per_tensor = compensate_groups(target, hessian, ColumnRounder(mask, grid))
        per_tensor = per_tensor.astype(matrix.dtype)
    if init != "mse" or not row_scales:
        return SharedLayer(per_tensor, None, iterations)
    rows = share_rows(matrix, k, init, seed, importance, max_iterations)
    if rows is not None and hessian is not None:
        rounder = ColumnRounder(mask, rows.codebook, rows.scales)
        values = compensate_groups(target, hessian, rounder).astype(np.float32)
        rows = dataclasses.replace(rows, values=values)
    if rows is None or not rows_pay(matrix, per_tensor, rows, importance, hessian):
        return SharedLayer(per_tensor, None, iterations)
    return SharedLayer(rows.values, rows, rows.iterations)
