"""Integer (already-quantized) weights as candidates of the error budget.

An int8 / uint8 weight keeps its graph (dc_onnx.requantize): its candidates are a sparsity
(weights set to the zero point) and a bit width (fewer integers, dc_onnx.integer_sharing),
and "left as it is" is its lossless coding, not its raw bytes. `IntegerSizes` gives the
encoded bytes of every candidate with the interface of `LayerSizes`, computed from value
histograms (a weight has at most 256 values): the code stream is exact, the gap stream is
that of the zeros after pruning. Where the zero point is unknown (dc_onnx.qparams), the
weight is only shared, never pruned.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dc_onnx.budget.candidates import (
    BITS,
    INDEX_BITS,
    LAYER_OVERHEAD,
    SPARSITIES,
    LayerSizes,
    Setting,
    gap_counts,
)
from dc_onnx.codecs import huffman
from dc_onnx.layers import AnalysedWeight, StoredWeight
from dc_onnx.qparams import QuantParams, read_params
from dc_onnx.requantize import (
    Histogram,
    energy_of,
    histogram,
    magnitudes,
    prunable,
    prune_integer,
    requantize,
    shared_ladder,
    value_range,
    zero_mask,
)

Knobs = dict[int | float, float]


def is_integer(weight: AnalysedWeight) -> bool:
    return isinstance(weight, StoredWeight) and weight.kind == "integer"


@dataclasses.dataclass(frozen=True)
class _Pruned:
    """One sparsity's weights: those kept (not at the zero point) by value, the histogram of
    all the values at their zero point, and the gap stream bytes per index bits."""

    kept: Histogram
    at_zero: np.ndarray  # counts per value (index: value - dtype min) of the zero-point weights
    gaps: dict[int, int]  # index bits -> gap stream bytes plus its code lengths


class IntegerSizes(LayerSizes):
    """Encoded bytes of an integer weight at every candidate (see the module docstring).
    `dense_bytes` is what "left as it is" costs: its lossless coding, or its raw bytes
    where those are fewer."""

    def __init__(self, group: StoredWeight, array: np.ndarray, params: QuantParams) -> None:
        super().__init__(group, array, "mse")
        self.params = params
        self.energy = energy_of(array, params)  # what the sharing's error bound scales
        self.raw_bytes = int(array.nbytes)
        self._lo = value_range(array.dtype)[0]
        self._states: dict[float, _Pruned] = {}
        self._ladders: dict[float, dict[int, np.ndarray]] = {}
        self._sizes: dict[tuple[float, int | None], tuple[int, int]] = {}  # bytes, index bits
        # The lower pass leaves a weight whose streams would not be smaller as it is.
        self.dense_bytes = min(self._encoded(0.0, None)[0], self.raw_bytes)

    @property
    def prunable(self) -> bool:
        return prunable(self.array, self.params)

    def array_at(self, bits: int | None, sparsity: float) -> np.ndarray:
        """The weight at this candidate (bits None: pruning alone), in its own dtype."""
        return requantize(self.array, self.params, bits, sparsity)

    def setting(self, sparsity: float, bits: int) -> Setting:
        return Setting(sparsity, bits, self._encoded(sparsity, bits)[1])

    def bytes(self, setting: Setting) -> int:
        if setting.keep or setting.bits is None:
            return self.dense_bytes
        return self._encoded(setting.sparsity, setting.bits)[0]

    def state(self, sparsity: float) -> _Pruned:
        """This sparsity's histograms and gap bytes (cached)."""
        if sparsity not in self._states:
            pruned = prune_integer(self.array, self.params, sparsity)
            index = pruned.reshape(-1).astype(np.int64) - self._lo
            if self.params.zero_point is None:
                keep = np.ones(pruned.size, bool)
            else:
                keep = ~zero_mask(pruned, self.params)
            at_zero = np.bincount(index[~keep], minlength=256)
            positions = np.flatnonzero(pruned.reshape(-1))
            runs = np.diff(positions, prepend=-1) - 1
            gaps = {ib: huffman.coded_bytes(gap_counts(runs, ib)) + (1 << ib) for ib in INDEX_BITS}
            state = _Pruned(histogram(pruned, self.params, keep), at_zero, gaps)
            self._states[sparsity] = state
        return self._states[sparsity]

    def ladder(self, sparsity: float) -> dict[int, np.ndarray]:
        """This sparsity's kept values as each bit width maps them (cached)."""
        if sparsity not in self._ladders:
            state = self.state(sparsity)
            zeros = int(state.at_zero.sum())
            dtype = self.array.dtype
            self._ladders[sparsity] = shared_ladder(state.kept, dtype, zeros, self.energy)
        return self._ladders[sparsity]

    def _encoded(self, sparsity: float, bits: int | None) -> tuple[int, int]:
        """(bytes, index bits) of the cheaper of the dense form (index bits 0) and the
        sparse one at this candidate."""
        key = (sparsity, bits)
        if key not in self._sizes:
            state = self.state(sparsity)
            kept = state.kept
            mapped = kept.values if bits is None else self.ladder(sparsity)[bits]
            counts = state.at_zero.copy()
            np.add.at(counts, mapped - self._lo, kept.counts)
            zero = -self._lo  # the code of the value 0
            entries = int(np.count_nonzero(counts)) + (0 if counts[zero] else 1)
            tables = 2 * entries + LAYER_OVERHEAD  # codebook (one byte each), code lengths
            dense = huffman.coded_bytes(counts) + tables + 1
            nonzero = counts.copy()
            nonzero[zero] = 0
            ib = min(state.gaps, key=lambda b: (state.gaps[b], -b))
            sparse = huffman.coded_bytes(nonzero) + state.gaps[ib] + tables
            self._sizes[key] = (dense, 0) if dense <= sparse else (sparse, ib)
        return self._sizes[key]


def sizes_and_perturbations(
    group: StoredWeight, array: np.ndarray
) -> tuple[IntegerSizes, Knobs, Knobs]:
    """The weight's sizes, and the relative weight-space error ||dW|| / ||W|| (in dequantized
    units) of each bit width and, where it can be pruned, each sparsity; without a known
    zero point the only sparsity is 0."""
    sizes = IntegerSizes(group, array, read_params(group.weight))
    params = sizes.params
    if params.zero_point is None:  # the energy about 0; only ratios of it matter
        params = dataclasses.replace(params, zero_point=np.zeros(1, np.int64))
    squares = np.sort(np.square(magnitudes(array, params)))
    energy = float(squares.sum())
    if energy == 0:
        return sizes, {b: 0.0 for b in BITS}, {0.0: 0.0}
    kept = sizes.state(0.0).kept
    bits: Knobs = {}
    for b in BITS:
        step = sizes.ladder(0.0)[b] - kept.values
        bits[b] = math.sqrt(float(np.dot(kept.importance, np.square(step))) / energy)
    if not sizes.prunable:
        return sizes, bits, {0.0: 0.0}
    cumulative = np.concatenate([[0.0], np.cumsum(squares)])
    sparsity: Knobs = {s: math.sqrt(cumulative[round(s * array.size)] / energy) for s in SPARSITIES}
    return sizes, bits, sparsity
