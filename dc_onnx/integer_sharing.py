"""Which integers the values of an integer weight share, at each bit width.

A bit width b bounds the relative error sharing may add to the weight (`ERRORS`, in
dequantized units, doubling per bit less: about what k-means costs a float weight at b
bits). Within that bound the mapping whose values the lossless coder stores in the fewest
bits wins. An int8 weight's values are already only a few quantization steps wide, so no
one method finds the best mappings: least error for a number of shared values (k-means)
ignores how often each value occurs, which is what a Huffman code pays for, and
entropy-constrained quantization reaches only the convex hull of the (bits, error) points,
which is sparse here. So each weight gets a few dozen candidate mappings from three
methods, each scored exactly on its value histogram (at most 256 values: cheap):

- k-means (`dc_onnx.quantize.kmeans_1d`, the float weights' start), 2^k - 1 shared values;
- least squared error for each of those numbers of shared values (dynamic programming over
  contiguous ranges of the sorted values: an optimal 1-D partition is contiguous);
- entropy-constrained: the ranges minimising error + mu * (entropy-coded bits), for a
  ladder of mu.

Every mapping sends each value to an integer, weighted by its channel's scale^2.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dc_onnx.codecs import huffman
from dc_onnx.quantize import kmeans_1d, nearest

ERRORS = {8: 0.0, 7: 0.008, 6: 0.016, 5: 0.032, 4: 0.064, 3: 0.128, 2: 0.256, 1: 0.512}
_LEVELS = tuple((1 << b) - 1 for b in range(1, 8))  # numbers of shared values tried
# Rate multipliers of the entropy-constrained candidates: fine steps, as the partitions
# that are optimal for some mu (the convex hull's corners) lie close together.
_MU = 2.0 ** (np.arange(-40, 121) / 4)


@dataclasses.dataclass(frozen=True)
class _Ranges:
    """Costs of giving every range [i, j) of the sorted distinct values one shared integer:
    its weighted squared error and the bits its weights then take in an entropy code."""

    centre: np.ndarray  # [n + 1, n + 1]: the integer nearest the range's weighted mean
    error: np.ndarray  # [n + 1, n + 1]: sum of weight * (x - centre)^2; inf unless i < j
    rate: np.ndarray  # [n + 1, n + 1]: m * log2(total / m), m the weights in the range


def _ranges(x: np.ndarray, weight: np.ndarray, counts: np.ndarray, total: int) -> _Ranges:
    n = x.size
    s0, s1, s2 = (np.concatenate([[0.0], np.cumsum(weight * x**p)]) for p in (0, 1, 2))
    m = np.concatenate([[0.0], np.cumsum(counts)])
    i, j = np.triu_indices(n + 1, 1)
    centre = np.zeros((n + 1, n + 1))
    centre[i, j] = c = np.rint((s1[j] - s1[i]) / (s0[j] - s0[i]))
    error = np.full((n + 1, n + 1), np.inf)
    error[i, j] = np.maximum(s2[j] - s2[i] - 2 * c * (s1[j] - s1[i]) + c**2 * (s0[j] - s0[i]), 0)
    rate = np.zeros((n + 1, n + 1))
    size = m[j] - m[i]
    rate[i, j] = size * np.log2(total / size)
    return _Ranges(centre, error, rate)


def _mapping(ranges: _Ranges, cuts: list[tuple[int, int]], n: int) -> np.ndarray:
    mapped = np.empty(n)
    for a, b in cuts:
        mapped[a:b] = ranges.centre[a, b]
    return mapped


def _backtrack(starts: list[np.ndarray], end: int) -> list[tuple[int, int]]:
    cuts = []
    for start in reversed(starts):
        if end == 0:
            break
        cuts.append((int(start[end]), end))
        end = int(start[end])
    return cuts[::-1]


def _entropy_constrained(ranges: _Ranges, mus: np.ndarray) -> list[list[tuple[int, int]]]:
    """For each mu, the ranges minimising error + mu * rate, any number of them: one
    dynamic programme over the values, run for every mu at once."""
    error = np.ascontiguousarray(ranges.error.T)  # [end, start]
    rate = np.ascontiguousarray(ranges.rate.T)
    n = error.shape[0] - 1
    best = np.zeros((mus.size, n + 1))
    start = np.zeros((mus.size, n + 1), np.int64)
    rows = np.arange(mus.size)
    for j in range(1, n + 1):
        options = best[:, :j] + error[j, :j] + mus[:, None] * rate[j, :j]
        start[:, j] = np.argmin(options, axis=1)
        best[:, j] = options[rows, start[:, j]]
    found = []
    for row in np.unique(start, axis=0):  # many mu share a partition
        cuts, end = [], n
        while end > 0:
            cuts.append((int(row[end]), end))
            end = int(row[end])
        found.append(cuts[::-1])
    return found


def _least_error(ranges: _Ranges, levels: tuple[int, ...]) -> list[list[tuple[int, int]]]:
    """For each number of ranges in `levels` (below the number of values), the ranges of
    least error: dynamic programming, one layer per range."""
    n = ranges.error.shape[0] - 1
    best = ranges.error[0].copy()  # best[j]: the values below j in one range
    starts = [np.zeros(n + 1, np.int64)]
    found = {}
    for k in range(1, max(levels) + 1):
        if k in levels:
            found[k] = _backtrack(starts, n)
        if k + 1 > max(levels) or k + 1 >= n:
            break
        options = best[:, None] + ranges.error  # the last range starts at i
        starts.append(np.argmin(options, axis=0))
        best = options[starts[-1], np.arange(n + 1)]
    return [found[k] for k in levels if k in found]


def _kmeans(x: np.ndarray, weight: np.ndarray, k: int) -> np.ndarray:
    centroids, _, _ = kmeans_1d(x, k, "mse", importance=weight)
    shared = np.unique(np.rint(centroids))
    return shared[nearest(shared, x)]


def _coded_bits(mapped: np.ndarray, counts: np.ndarray, zero_count: int) -> int:
    """Bits of a Huffman code of the shared values, the zero point's weights a symbol."""
    _, inverse = np.unique(mapped, return_inverse=True)
    symbols = np.bincount(inverse, weights=counts).astype(np.int64)
    if zero_count:
        symbols = np.append(symbols, zero_count)
    lengths = huffman.lengths_from_counts(symbols).astype(np.int64)
    return int(np.dot(symbols, lengths))


def ladder(
    x: np.ndarray, counts: np.ndarray, weight: np.ndarray, zero_count: int, energy: float
) -> dict[int, np.ndarray]:
    """For each bit width 1..8, the integer each of the sorted distinct values `x` (held by
    `counts` weights of summed scale^2 `weight`) becomes: the candidate coded in the fewest
    bits whose weighted squared error is at most ERRORS[bits]^2 * `energy` (the weight's
    sum of scale^2 * (W_q - zero_point)^2). `zero_count` weights sit at the zero point."""
    n = x.size
    keep = {b: x.astype(np.float64) for b in ERRORS}
    if n <= 1 or energy <= 0:
        return keep
    unit = counts.sum() / weight.sum()  # the errors in units of one weight on average
    w = weight * unit
    ranges = _ranges(x, w, counts, int(counts.sum()) + zero_count)
    candidates = [_kmeans(x, w, k) for k in _LEVELS if k < n]
    cuts = _least_error(ranges, tuple(k for k in _LEVELS if k < n))
    cuts += _entropy_constrained(ranges, _MU)
    candidates += [_mapping(ranges, c, n) for c in cuts]
    scored = [(_coded_bits(m, counts, zero_count), float(np.dot(w, (m - x) ** 2)), m)
              for m in candidates]  # fmt: skip
    chosen = {8: x.astype(np.float64)}
    best = (_coded_bits(x, counts, zero_count), 0.0, x.astype(np.float64))
    for b in range(7, 0, -1):  # each width may use what the milder ones could
        bound = ERRORS[b] ** 2 * energy * unit
        for bits, error, mapped in scored:
            if error <= bound and (bits, error) < best[:2]:
                best = (bits, error, mapped)
        chosen[b] = best[2]
    return chosen
