"""prune: magnitude pruning, one threshold per weight (Han et al. 2015).

The threshold is either `quality * std(W)` or the magnitude that zeroes a target fraction
of the weight. Per-layer targets are given by globs on node or weight names; the first
matching glob wins, then the global sparsity, then the quality.

Storage-form weights (LSTM, embedding tables, elementwise constants, ...) feed ops whose
sensitivity to zeros is unknown, so they are pruned only when a per-layer glob names them
or the allocate pass chose a sparsity for them (it measured the cost). Integer weights
(already quantized) are not pruned here: the requantize pass sets them to their zero
point, which is what 0 means for them.

With error compensation (dc_onnx.compensate, H from dc_onnx.budget.activations), the
surviving weights of a layer are corrected for the output error of the pruned ones; the
zeros are the same.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from dc_onnx import scratch
from dc_onnx.budget.activations import LayerInputs
from dc_onnx.layers import (
    DEFAULT_MIN_ELEMENTS,
    StoredWeight,
    WeightGroup,
    find_stored_weights,
    find_weight_groups,
    first_match,
    refuse_unmatched,
    row_axis_of,
)
from dc_onnx.options import check_non_negative, check_sparsity, check_sparsity_map
from dc_onnx.pipeline import CompilerPass
from dc_onnx.quantize import compensate_pruning, prune_array

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PrunePolicy:
    sparsity: float | None = None  # fraction of weights set to zero, every layer
    per_layer: dict[str, float] = dataclasses.field(default_factory=dict)  # glob -> sparsity
    quality: float | None = None  # threshold = quality * std, where no sparsity applies
    min_weight_elements: int = DEFAULT_MIN_ELEMENTS  # storage weights from this size
    fraction: float = 1.0  # share of the way to an allocated target (iterative pruning)

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
            # Tables: a pruned row changes every token that reads it; only when asked, or
            # when the allocate pass measured what it costs.
            if group.kind == "integer":
                return None
            if s is None and (allocated := group.annotation("sparsity")) is not None:
                s = _partway(allocated, self.fraction)
            return None if s is None else ("sparsity", s)
        if s is None:
            s = self.sparsity
        if s is not None:
            return ("sparsity", s)
        allocated = group.annotation("sparsity")  # the allocate pass's choice
        if allocated is not None:
            return ("sparsity", _partway(allocated, self.fraction))
        return None if self.quality is None else ("quality", self.quality)

    def round(self, r: int, rounds: int) -> PrunePolicy:
        """Round r (1-based) of iterative pruning: each round removes the same share of the
        surviving weights, so the last round lands on the target (quality grows linearly)."""
        f = r / rounds
        return PrunePolicy(
            None if self.sparsity is None else _partway(self.sparsity, f),
            {k: _partway(v, f) for k, v in self.per_layer.items()},
            None if self.quality is None else self.quality * f,
            self.min_weight_elements,
            f,
        )

    def weights(self, model: ir.Model) -> list[WeightGroup | StoredWeight]:
        """Layer weights, then storage-form weights."""
        stored = find_stored_weights(model.graph, self.min_weight_elements)
        return [*find_weight_groups(model.graph), *stored]


# Weights of more than CHUNK elements are pruned chunk by chunk, so pruning one needs
# memory for the weight (mapped from its file) plus a few chunks, not several copies.
# Smaller weights keep `prune_array`, whose results the docs' figures measure.
CHUNK = 1 << 22


def _chunks(flat: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, flat.size, CHUNK):
        yield flat[start : start + CHUNK]


def _std(flat: np.ndarray) -> float:
    """Standard deviation of the finite weights in float64, two passes over the chunks."""
    n = sum(int(np.count_nonzero(np.isfinite(c))) for c in _chunks(flat))
    if n == 0:
        return 0.0
    total = sum(float(np.sum(c[np.isfinite(c)], dtype=np.float64)) for c in _chunks(flat))
    mean = total / n
    squares = sum(
        float(np.sum(np.square(c[np.isfinite(c)].astype(np.float64) - mean))) for c in _chunks(flat)
    )
    return math.sqrt(squares / n)


def _magnitude_bits(chunk: np.ndarray) -> np.ndarray:
    # For floats >= 0 the order of the IEEE bit patterns is the order of the values, and
    # NaN comes after +Inf: non-finite weights are the largest, never pruned first.
    return np.abs(chunk).view(np.uint32)


def _kth_magnitude(flat: np.ndarray, rank: int) -> tuple[np.float32, int]:
    """The magnitude of 0-based `rank` in sorted order, and how many magnitudes are below it.

    A radix select on the float32 bit patterns: a histogram of their high 16 bits finds
    the bucket, a second one of the low 16 bits inside it finds the value.
    """
    high = np.zeros(1 << 16, np.int64)
    for c in _chunks(flat):
        high += np.bincount(_magnitude_bits(c) >> 16, minlength=1 << 16)
    cumulative = np.cumsum(high)
    top = int(np.searchsorted(cumulative, rank, side="right"))
    below = int(cumulative[top - 1]) if top else 0
    low = np.zeros(1 << 16, np.int64)
    for c in _chunks(flat):
        bits = _magnitude_bits(c)
        low += np.bincount(bits[(bits >> 16) == top] & 0xFFFF, minlength=1 << 16)
    cumulative = np.cumsum(low)
    bottom = int(np.searchsorted(cumulative, rank - below, side="right"))
    below += int(cumulative[bottom - 1]) if bottom else 0
    return np.array([(top << 16) | bottom], np.uint32).view(np.float32)[0], below


def prune_chunks(flat: np.ndarray, rule: str, amount: float) -> Iterator[np.ndarray]:
    """The chunks of `flat` with the same weights zeroed as `prune_array` (ties by index)."""
    ties = 0
    if rule == "sparsity":
        n_zero = round(amount * flat.size)
        threshold, below = _kth_magnitude(flat, n_zero - 1) if n_zero else (np.float32(0), 0)
        ties = n_zero - below  # weights equal to the threshold that are zeroed too
    else:
        threshold = np.float32(amount * _std(flat))
    for c in _chunks(flat):
        magnitude = _magnitude_bits(c)  # NaN compares as the largest, like prune_array
        bound = np.array([threshold], np.float32).view(np.uint32)[0]
        zero = magnitude < bound
        if ties > 0:
            equal = np.flatnonzero(magnitude == bound)[:ties]
            zero[equal] = True
            ties -= equal.size
        yield np.where(zero, np.float32(0), c)


def _count_nonzero(w: np.ndarray) -> int:
    return sum(int(np.count_nonzero(c)) for c in _chunks(w.reshape(-1)))


def _partway(sparsity: float, fraction: float) -> float:
    """The sparsity after `fraction` of the rounds that reach `sparsity`."""
    return 1.0 - (1.0 - sparsity) ** fraction


class PrunePass(CompilerPass):
    name = "prune"

    def __init__(self, policy: PrunePolicy, layer_inputs: LayerInputs | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.layer_inputs = layer_inputs  # error compensation's H (None: zeros only)

    def requires(self, model: ir.Model) -> None:
        refuse_unmatched("--sparsity-per-layer", self.policy.per_layer, self.policy.weights(model))

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        layers = {}
        weights = self.policy.weights(model)
        if self.layer_inputs is not None:
            self.layer_inputs.collect(model, weights)  # once per compile, before any change
        for group in weights:
            target = self.policy.target(group)
            w = group.array()
            size, before = int(w.size), _count_nonzero(w)
            large = isinstance(group, WeightGroup) and w.size > CHUNK and w.dtype == np.float32
            if target is not None and large:
                assert isinstance(group, WeightGroup)
                flat = w.reshape(-1)
                del w  # the weight's map is released once the pruned copy is written
                pruned = prune_chunks(flat, *target)
                shape = group.array().shape
                group.set_tensor(
                    scratch.from_chunks(pruned, shape, np.dtype(np.float32), group.weight.name)
                )
                del flat
            elif target is not None:
                pruned_array = prune_array(w, *target)
                if self.layer_inputs is not None:  # layers, and recurrent storage weights
                    hessian = self.layer_inputs.get(str(group.weight.name))
                    axis = row_axis_of(group)
                    pruned_array = compensate_pruning(w, pruned_array, axis, hessian)
                if not np.array_equal(pruned_array, w, equal_nan=True):
                    group.set_array(pruned_array)
                del w, pruned_array
            after = _count_nonzero(group.array())
            scratch.release(group.weight.const_value)
            modified = modified or after != before
            layers[group.name] = {
                "weights": size,
                "density": after / max(size, 1),
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
                size, wanted, nonzero = w.size, round(target[1] * w.size), _count_nonzero(w)
                del w
                scratch.release(group.weight.const_value)
                if size - nonzero < wanted:
                    raise AssertionError(f"{group.name}: fewer zeros than the target sparsity")
