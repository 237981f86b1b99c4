"""Cluster and encode a weight larger than a block, one block at a time (`dc_onnx.blocks`).

The in-memory paths (`passes/cluster.py`, `passes/lower.py`) make several copies of a
weight, some in float64 or int64; for a weight of 1 GB that is many GB. Here clustering
holds only the sorted surviving weights (float32) and encoding holds a block, so a model
past 2 GiB compiles within about 1.5x its largest weight. The encoder gives the same bytes
as the in-memory one; k-means gives the same clusters up to float64 rounding (range sums
from block-wise prefix sums instead of one prefix-sum array).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from dc_onnx import blocks, scratch
from dc_onnx.blocks import flat_blocks, stored_row_blocks, weight_size
from dc_onnx.codecs import EncodedWeight
from dc_onnx.codecs.blocks import encode_blocks
from dc_onnx.errors import CompileError
from dc_onnx.layers import WeightGroup
from dc_onnx.quantize import Init, kmeans_sorted_values

_SPAN = 4096  # elements per prefix-sum step


def is_large(group: WeightGroup) -> bool:
    """A float32 weight over one block (other dtypes are small tables: in memory)."""
    tensor = group.weight.const_value
    is_float32 = tensor is not None and tensor.dtype == ir.DataType.FLOAT
    return is_float32 and weight_size(group) * 4 > blocks.BLOCK_BYTES


def _shared(block: np.ndarray) -> np.ndarray:
    # Non-finite weights keep values of their own (as in dc_onnx.quantize): not shared.
    return (block != 0) & np.isfinite(block)


def sorted_survivors(group: WeightGroup) -> np.ndarray:
    """The finite non-zero weights, sorted (float32: one copy of them, no more)."""
    n = sum(int(np.count_nonzero(_shared(b))) for b in flat_blocks(group))
    x = np.empty(n, np.float32)
    filled = 0
    for block in flat_blocks(group):
        kept = block[_shared(block)]
        x[filled : filled + kept.size] = kept
        filled += kept.size
    x.sort()
    return x


class _RangeSums:
    """Sums of x[lo:hi] in float64 from prefix sums taken every _SPAN elements."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        spans = [
            np.sum(x[s : s + _SPAN], dtype=np.float64) for s in range(0, x.size - _SPAN + 1, _SPAN)
        ]
        self.prefix = np.concatenate([[0.0], np.cumsum(spans)])

    def __call__(self, lo: int, hi: int) -> float:
        a = -(-lo // _SPAN)  # first whole span inside [lo, hi)
        b = hi // _SPAN
        if b <= a:
            return float(np.sum(self.x[lo:hi], dtype=np.float64))
        head = np.sum(self.x[lo : a * _SPAN], dtype=np.float64)
        tail = np.sum(self.x[b * _SPAN : hi], dtype=np.float64)
        return float(head + (self.prefix[b] - self.prefix[a]) + tail)


def kmeans_sorted(
    x: np.ndarray, initial: np.ndarray, max_iterations: int
) -> tuple[np.ndarray, int]:
    """Lloyd's 1-D k-means on sorted `x` from `initial` centroids: (centroids, iterations)."""
    sums = _RangeSums(x)
    centroids = np.asarray(initial, dtype=np.float64)
    tolerance = 1e-9 * max(abs(float(x[0])), abs(float(x[-1])))
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported below
        cut = np.searchsorted(x, (centroids[1:] + centroids[:-1]) / 2)
        lo = np.concatenate([[0], cut])
        hi = np.concatenate([cut, [x.size]])
        count = hi - lo
        means = np.array([sums(int(a), int(b)) for a, b in zip(lo, hi, strict=True)])
        means /= np.maximum(count, 1)
        updated = np.sort(np.where(count > 0, means, centroids))  # empty clusters stay put
        shift = float(np.max(np.abs(updated - centroids)))
        centroids = updated
        if shift <= tolerance:
            break
    return centroids, iterations


# Up to this many survivors a large weight gets the mse start in memory (three float64
# copies: 384 MiB at the limit); above it, the blocked Lloyd from the linear start.
MSE_MAX_VALUES = 1 << 24


def initial_centroids(x: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    """The paper's starts on sorted `x`. "mse" (companded, needs the in-memory prefix sums)
    starts linear here: Lloyd then runs from the paper's best start."""
    if init == "density":
        return x[np.linspace(0, x.size - 1, k).round().astype(np.int64)].astype(np.float64)
    if init == "random":
        rng = np.random.default_rng(seed)
        return np.sort(x[rng.choice(x.size, size=k, replace=False)]).astype(np.float64)
    return np.linspace(float(x[0]), float(x[-1]), k)


def cluster_large(
    group: WeightGroup, k: int, init: Init, max_iterations: int | None, seed: int
) -> dict[str, float]:
    """ClusterPass on one large weight: k shared values for its finite non-zero weights
    (`max_iterations` None: the start's default)."""
    nonfinite = sum(int(np.count_nonzero(~np.isfinite(b))) for b in flat_blocks(group))
    x = sorted_survivors(group)
    if x.size == 0:
        return {"clusters": 0, "iterations": 0, "nonfinite": nonfinite, "relative_error": 0.0}
    first = np.concatenate([[True], x[1:] != x[:-1]])
    if int(np.count_nonzero(first)) <= k:  # nothing to share: each value is its own centroid
        centroids, iterations = x[first].astype(np.float64), 0
    elif init == "mse" and x.size <= MSE_MAX_VALUES:
        # The least-squares start, as in-memory weights get it: the linear one lets a few
        # outliers strand most centroids (ddddocr-ctc's 8.4 M-weight Gemm: 3.6% output
        # error at 8 bits with it, against 1.4% with the mse start).
        centroids, iterations = kmeans_sorted_values(x, k, "mse", max_iterations, seed)
    else:
        limit = 100 if max_iterations is None else max_iterations
        centroids, iterations = kmeans_sorted(x, initial_centroids(x, k, init, seed), limit)
    del first
    # Clusters that keep members (a weight on a bound goes to the lower one, as below).
    ends = np.searchsorted(x, (centroids[1:] + centroids[:-1]) / 2, side="right")
    members = np.diff(np.concatenate([[0], ends, [x.size]]))
    clusters = int(np.unique(centroids.astype(np.float32)[members > 0]).size)
    # Squared error of the sharing, from the sorted values and their nearest centroids.
    bounds = (centroids[1:] + centroids[:-1]) / 2
    error = norm = 0.0
    for start in range(0, x.size, 1 << 22):
        part = x[start : start + (1 << 22)].astype(np.float64)
        error += float(np.sum((part - centroids[np.searchsorted(bounds, part)]) ** 2))
        norm += float(np.sum(part**2))
    del x
    write_shared(group, centroids)
    relative = float(np.sqrt(error / norm)) if norm else 0.0
    return {
        "clusters": clusters,
        "iterations": iterations,
        "nonfinite": nonfinite,
        "relative_error": relative,
    }


def shared_blocks(group: WeightGroup, centroids: np.ndarray) -> Iterator[np.ndarray]:
    """The weight's blocks with every non-zero weight replaced by its nearest centroid."""
    bounds = (centroids[1:] + centroids[:-1]) / 2
    values = centroids.astype(np.float32)
    for block in flat_blocks(group):
        shared = _shared(block)
        block[shared] = values[np.searchsorted(bounds, block[shared].astype(np.float64))]
        yield block


def write_shared(group: WeightGroup, centroids: np.ndarray) -> None:
    tensor = group.weight.const_value
    assert tensor is not None
    shape = tuple(int(d) for d in tensor.shape.numpy())
    shared = shared_blocks(group, centroids)
    group.set_tensor(scratch.from_chunks(shared, shape, np.dtype(np.float32), group.weight.name))


def distinct_values(group: WeightGroup, limit: int) -> int:
    """How many distinct values the weight holds, counting up to just past `limit`."""
    seen = np.zeros(0, np.float32)
    for block in flat_blocks(group):
        seen = np.union1d(seen, block)
        if seen.size > limit:
            break
    return int(seen.size)


def encode_large(group: WeightGroup, index_bits: int) -> EncodedWeight:
    """`lower.encode_group` a block at a time: codebook = 0, then the distinct non-zeros."""
    values = np.zeros(0, np.float32)
    for block in flat_blocks(group):
        values = np.union1d(values, block[block != 0])
        if values.size > 255:
            raise CompileError(
                f"layer '{group.name}' has more than 255 distinct non-zero weights; at most"
                " 255 fit a codebook (run the cluster pass first)"
            )

    def codes() -> Iterator[np.ndarray]:
        for block in stored_row_blocks(group):
            out = np.zeros(block.shape, np.uint8)
            nonzero = block != 0
            out[nonzero] = np.searchsorted(values, block[nonzero]) + 1
            yield out

    codebook = np.concatenate([[0.0], values]).astype(np.float32)
    return encode_blocks(codes, codebook, index_bits, dense_if_smaller=True)
