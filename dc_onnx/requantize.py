"""Lossy requantization of already-quantized (int8 / uint8) weights, as plain array math.

An integer weight W_q stands for (W_q - zero_point) * scale (dc_onnx.qparams). Its graph
stays as it is: same ops, same scales and zero points, the same dtype decoded. What
changes is how many distinct integers it holds, which is what its lossless Huffman coding
(docs/format.md, `CompressedConstant`) pays for:

- **pruning** sets the weights of least magnitude |W_q - zero_point| * scale to the zero
  point, which is what 0 means for a quantized weight;
- **sharing** merges the other weights' values into fewer integers of the dtype: at a
  lower bit width the weight may change by a larger relative error, and within it the
  mapping whose values the lossless coder stores in the fewest bits is chosen
  (dc_onnx/integer_sharing.py), each error weighted by scale^2 (the error of a step in its
  channel).

The 8-bit setting keeps every value: it is the lossless one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dc_onnx.integer_sharing import ladder
from dc_onnx.qparams import QuantParams


def value_range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def entropy_bits(array: np.ndarray) -> float:
    """Bits an ideal entropy code of the array's values takes (the lossless coder's floor)."""
    _, counts = np.unique(array, return_counts=True)
    return float(np.sum(counts * np.log2(array.size / counts)))


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


def shared_ladder(
    hist: Histogram, dtype: np.dtype, zero_count: int, energy: float
) -> dict[int, np.ndarray]:
    """For each bit width 1..8, the integer each value of `hist` becomes
    (dc_onnx.integer_sharing.ladder: at most ERRORS[bits] relative error, the fewest coded
    bits); `zero_count` weights sit at the zero point, `energy` is the weight's sum of
    scale^2 * (W_q - zero_point)^2. 8 bits keeps every value."""
    counts = hist.counts.astype(np.float64)
    weight = np.where(hist.importance > 0, hist.importance, counts)
    chosen = ladder(hist.values.astype(np.float64), counts, weight, zero_count, energy)
    lo, hi = value_range(dtype)
    return {b: np.clip(m, lo, hi).astype(np.int64) for b, m in chosen.items()}


def energy_of(array: np.ndarray, params: QuantParams) -> float:
    """sum of scale^2 * (W_q - zero_point)^2, the zero point taken as 0 where unknown: what
    a relative error is relative to."""
    if params.zero_point is None:
        params = dataclasses.replace(params, zero_point=np.zeros(1, np.int64))
    return float(np.sum(np.square(magnitudes(array, params))))


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
    if not 1 <= bits <= 8:
        raise ValueError(f"weight bits must be in 1..8, got {bits}")
    hist = histogram(pruned, params, keep)
    zeros = int(array.size - hist.counts.sum())
    mapped = shared_ladder(hist, array.dtype, zeros, energy_of(array, params))[bits]
    if np.array_equal(mapped, hist.values):
        return pruned
    return remap(pruned, hist, mapped, keep)
