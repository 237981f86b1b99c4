"""Lossy requantization of already-quantized (int8 / uint8) weights, as plain array math.

An integer weight W_q stands for (W_q - zero_point) * scale (dc_onnx.qparams). Its graph
stays as it is: same ops, same scales and zero points, the same dtype decoded. What
changes is how many distinct integers it holds, which is what its lossless Huffman coding
(docs/format.md, `CompressedConstant`) pays for:

- **pruning** sets the weights of least magnitude |W_q - zero_point| * scale to the zero
  point, which is what 0 means for a quantized weight;
- **sharing** gives the other weights at most 2^bits - 1 distinct integers of the dtype,
  those of least squared error weighted by scale^2 (the error of a step in its channel).
  A weight has at most 256 distinct values, so the optimum is found exactly, on its
  histogram (`optimal_integers`), not on its elements.

At 8 bits a weight never has more than 255 values besides its zero point, so it comes back
unchanged: the 8-bit setting is the lossless one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dc_onnx.qparams import QuantParams
from dc_onnx.quantize import nearest


def value_range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def prunable(array: np.ndarray, params: QuantParams) -> bool:
    """Whether the zero point is known and a value of the weight's dtype."""
    if params.zero_point is None:
        return False
    lo, hi = value_range(array.dtype)
    return bool(np.all((params.zero_point >= lo) & (params.zero_point <= hi)))


def _flat(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A parameter broadcast to the weight, flattened (a view where it is one value)."""
    return np.broadcast_to(param, shape).reshape(-1)


def zero_mask(array: np.ndarray, params: QuantParams) -> np.ndarray:
    """Flat mask of the weights at their zero point (the pruned ones, and the exact zeros)."""
    assert params.zero_point is not None
    zero = params.per_tensor_zero
    flat = array.reshape(-1)
    if zero is not None:
        return flat == zero
    return flat.astype(np.int64) == _flat(params.zero_point, array.shape)


def magnitudes(array: np.ndarray, params: QuantParams) -> np.ndarray:
    """|W_q - zero_point| * scale, flat, float64: what each weight stands for, in size."""
    assert params.zero_point is not None
    flat = array.reshape(-1).astype(np.int64)
    steps = np.abs(flat - _flat(params.zero_point, array.shape)).astype(np.float64)
    if params.scale.size == 1:
        return steps * float(params.scale.reshape(-1)[0])
    return steps * _flat(params.scale, array.shape)


def prune_integer(array: np.ndarray, params: QuantParams, sparsity: float) -> np.ndarray:
    """`array` with the `sparsity` fraction of least magnitude set to the zero point (ties
    by index, as `dc_onnx.quantize.prune_array`)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    n_zero = round(sparsity * array.size)
    if n_zero == 0:
        return array
    if not prunable(array, params):
        raise ValueError("the weight's zero point is unknown: it cannot be pruned")
    assert params.zero_point is not None
    order = np.argpartition(magnitudes(array, params), n_zero - 1, kind="introselect")[:n_zero]
    out = array.reshape(-1).copy()
    out[order] = _flat(params.zero_point, array.shape)[order].astype(array.dtype)
    return out.reshape(array.shape)


@dataclasses.dataclass(frozen=True)
class Histogram:
    """The weights not at their zero point, by value: counts and summed scale^2."""

    values: np.ndarray  # sorted distinct integers (int64)
    counts: np.ndarray  # int64, how many weights hold each
    importance: np.ndarray  # float64, the sum of scale^2 over those weights


def histogram(array: np.ndarray, params: QuantParams, keep: np.ndarray | None = None) -> Histogram:
    """The histogram of the flat `array`'s weights where `keep` (flat bool) holds, else of
    the weights not at their zero point (every weight when it is unknown)."""
    lo, _ = value_range(array.dtype)
    flat = array.reshape(-1)
    if keep is None and params.zero_point is not None:
        keep = ~zero_mask(array, params)
    index = flat.astype(np.int64) - lo
    chosen = index if keep is None else index[keep]
    counts = np.bincount(chosen, minlength=256)
    importance: np.ndarray
    if params.scale.size == 1:
        importance = counts * float(params.scale.reshape(-1)[0]) ** 2
    else:
        weights = np.square(_flat(params.scale, array.shape))
        weights = weights if keep is None else weights[keep]
        importance = np.bincount(chosen, weights=weights, minlength=256)
    used = np.flatnonzero(counts)
    return Histogram(used + lo, counts[used].astype(np.int64), importance[used])


def optimal_integers(x: np.ndarray, weight: np.ndarray, k: int) -> np.ndarray:
    """The at most `k` integers that minimise sum(weight * (x - nearest)^2) over the sorted
    distinct values `x`: dynamic programming over contiguous ranges (an optimal 1-D
    partition is one), each range's integer being the one nearest its weighted mean,
    O(k n^2) for n <= 256 values. Lloyd's k-means stalls on such data: with a few heavy
    values (a channel of large scale) its local optima can cost several times more."""
    n = x.size
    s0, s1, s2 = (np.concatenate([[0.0], np.cumsum(weight * x**p)]) for p in (0, 1, 2))
    i, j = np.triu_indices(n + 1, 1)  # every range [i, j) of the sorted values
    total = s0[j] - s0[i]
    centre = np.rint((s1[j] - s1[i]) / total)
    cost = np.full((n + 1, n + 1), np.inf)
    cost[i, j] = np.maximum(s2[j] - s2[i] - 2 * centre * (s1[j] - s1[i]) + centre**2 * total, 0)
    best = cost[0].copy()  # best[j]: the values below j in one range
    cuts = [np.zeros(n + 1, np.int64)]
    for _ in range(1, min(k, n)):
        candidates = best[:, None] + cost  # the last range starts at i
        cuts.append(np.argmin(candidates, axis=0))
        best = candidates[cuts[-1], np.arange(n + 1)]
    bounds, end = [], n
    for cut in reversed(cuts):
        bounds.append((int(cut[end]), end))
        end = int(cut[end])
    ranges = [(a, b) for a, b in reversed(bounds) if b > a]
    return np.unique([np.rint((s1[b] - s1[a]) / (s0[b] - s0[a])) for a, b in ranges])


def shared_values(hist: Histogram, bits: int, dtype: np.dtype) -> np.ndarray:
    """For each value of `hist`, the integer it becomes when the values share at most
    2^bits - 1 integers of the dtype, chosen for the least error weighted by scale^2."""
    if not 1 <= bits <= 8:
        raise ValueError(f"weight bits must be in 1..8, got {bits}")
    k = (1 << bits) - 1
    if hist.values.size <= k:
        return hist.values.copy()
    x = hist.values.astype(np.float64)
    weight = np.where(hist.importance > 0, hist.importance, hist.counts.astype(np.float64))
    lo, hi = value_range(dtype)
    shared = np.clip(optimal_integers(x, weight / weight.max(), k), lo, hi)
    return shared[nearest(shared, x)].astype(np.int64)


def remap(array: np.ndarray, hist: Histogram, mapped: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`array` with each weight where `keep` (flat bool) holds moved from its value in
    `hist` to the matching entry of `mapped`."""
    lo, _ = value_range(array.dtype)
    table = np.arange(256, dtype=np.int64) + lo
    table[hist.values - lo] = mapped
    flat = array.reshape(-1)
    moved = table[flat.astype(np.int64) - lo].astype(array.dtype)
    return np.where(keep, moved, flat).reshape(array.shape)


def requantize(
    array: np.ndarray, params: QuantParams, bits: int | None, sparsity: float = 0.0
) -> np.ndarray:
    """The integer weight pruned to `sparsity` (to its zero point), then its other values
    shared at `bits` (None: no sharing), in its own dtype. The same math for the budget's
    simulation and for the requantize pass, so the compiled weight is what was simulated."""
    if array.dtype not in (np.int8, np.uint8):
        raise ValueError(f"not an int8 / uint8 weight: {array.dtype}")
    pruned = prune_integer(array, params, sparsity)
    if bits is None:
        return pruned
    keep = np.ones(array.size, bool) if params.zero_point is None else ~zero_mask(pruned, params)
    hist = histogram(pruned, params, keep)
    mapped = shared_values(hist, bits, array.dtype)
    if np.array_equal(mapped, hist.values):
        return pruned
    return remap(pruned, hist, mapped, keep)
