"""Candidate settings of one weight and their encoded sizes.

A setting is a sparsity (magnitude pruning) plus k-means bits, float16 storage (a float32
weight with bits = FLOAT16: no pruning, no codebook), or "left as it is". Its
error is measured by running the model with the array `dc_onnx.quantize.quantize` makes of
it, the same math as the prune and cluster passes (dc_onnx.budget.simulate);
its size is computed here without encoding: the Huffman code lengths follow from symbol
histograms alone (cluster occupancy for the codes, run lengths for the gaps), so the bytes
are those the lower pass would write, give or take the padding of each stream.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dc_onnx.codecs import huffman
from dc_onnx.codecs.container import ENTRY_SIZE
from dc_onnx.layers import AnalysedWeight
from dc_onnx.quantize import Init, kmeans_1d, prune_array

BITS = (8, 7, 6, 5, 4, 3, 2)
# The bits knob of float16 storage: a float32 weight stored as float16 and Cast back to
# float32 at load (passes/half.py), for a weight that 8-bit codes would change too much.
# Half the bytes, and an error near float16's rounding (2^-11 of each weight).
FLOAT16 = 16
# Bytes a float16 weight costs beyond its values: the Cast node and its output's name.
CAST_OVERHEAD = 48


def float16_values(array: np.ndarray) -> np.ndarray:
    """What a weight stored as float16 reads after its Cast: `array` rounded to float16,
    in its own dtype again."""
    return array.astype(np.float16).astype(array.dtype)


SPARSITIES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
INDEX_BITS = (2, 3, 4, 5, 6, 7, 8)
# Bytes a compressed layer costs beyond its streams (codes, gaps, codebook and code
# lengths): four TOC entries, and the node's attributes and header input in the .onnx, less
# the weight's own initializer record. Measured with models/layer_overhead.py on the
# --max-error 0.05 compiles of ppocr-cls, nudenet-320n and ppocr-v4-det (format version 3:
# 270-325 bytes a layer; version 2's stream initializers made it 820-1000).
LAYER_OVERHEAD = 4 * ENTRY_SIZE + 160
# Above this many survivors the cluster occupancy is estimated from a uniform sample.
_SAMPLE = 1 << 14
# Lloyd iterations of the occupancy estimate: the k-means start is already close, and the
# allocation asks for every (sparsity, bits) pair of every weight, so this is its main cost.
_ITERATIONS = 3
# Sparsities at which the code stream is sized by k-means; in between, its bits per stored
# weight are interpolated (they change slowly with the sparsity). The gap stream is exact.
SIZED_SPARSITIES = (0.0, 0.3, 0.5, 0.7, 0.9, 0.95)


@dataclasses.dataclass(frozen=True)
class Setting:
    """How one weight is stored: `bits is None` means left as it is (dense)."""

    sparsity: float = 0.0
    bits: int | None = None
    index_bits: int = 8

    @property
    def keep(self) -> bool:
        return self.bits is None

    @property
    def float16(self) -> bool:
        return self.bits == FLOAT16

    def label(self) -> str:
        if self.keep:
            return "dense"
        if self.float16:
            return "float16"
        return f"s={self.sparsity:g} b={self.bits} i={self.index_bits}"

    def to_json(self) -> dict[str, object]:
        if self.keep:
            return {"keep": True}
        if self.float16:
            return {"float16": True, "sparsity": 0.0, "bits": FLOAT16}
        return {"sparsity": self.sparsity, "bits": self.bits, "index_bits": self.index_bits}


KEEP = Setting()


def gap_counts(runs: np.ndarray, index_bits: int) -> np.ndarray:
    """Histogram of the gap symbols (dc_onnx.codecs.sparse_index) for these zero runs."""
    escape = (1 << index_bits) - 1
    escapes = runs // escape
    counts = np.bincount(runs - escapes * escape, minlength=escape + 1).astype(np.int64)
    counts[escape] += int(escapes.sum())
    return counts


class LayerSizes:
    """Encoded bytes of one weight at every candidate setting (computed on demand, cached)."""

    def __init__(self, group: AnalysedWeight, array: np.ndarray, init: Init = "mse") -> None:
        self.group = group
        self.array = array
        self.init: Init = init  # the cluster pass's k-means start
        self.dense_bytes = int(array.nbytes)
        self._masks: dict[float, tuple[np.ndarray, int, int]] = {}  # survivors, gaps, ib
        self._bytes: dict[tuple[float, int], int] = {}
        self._codes_cache: dict[tuple[float, int], tuple[int, int, int]] = {}

    def _pruned(self, sparsity: float) -> tuple[np.ndarray, int, int]:
        if sparsity not in self._masks:
            pruned = prune_array(self.array, "sparsity", sparsity)
            mask = pruned != 0
            stored = np.ascontiguousarray(self.group.stored_matrix(mask)).reshape(-1)
            positions = np.flatnonzero(stored)
            runs = np.diff(positions, prepend=-1) - 1
            gaps = {ib: huffman.coded_bytes(gap_counts(runs, ib)) + (1 << ib) for ib in INDEX_BITS}
            index_bits = min(gaps, key=lambda ib: (gaps[ib], -ib))
            self._masks[sparsity] = (self.array[mask], gaps[index_bits], index_bits)
        return self._masks[sparsity]

    def setting(self, sparsity: float, bits: int) -> Setting:
        if bits == FLOAT16:
            return Setting(0.0, FLOAT16)  # never pruned: the values are stored as they are
        return Setting(sparsity, bits, self._pruned(sparsity)[2])

    def bytes(self, setting: Setting) -> int:
        if setting.keep or setting.bits is None:
            return self.dense_bytes
        if setting.float16:
            return 2 * int(self.array.size) + CAST_OVERHEAD
        key = (setting.sparsity, setting.bits)
        if key not in self._bytes:
            gaps_bytes = self._pruned(setting.sparsity)[1]
            codes_bytes, k, dense_bytes = self._codes(setting.sparsity, setting.bits)
            # The encoder takes the dense form where it is smaller (codecs.smaller_form).
            streams = min(codes_bytes + gaps_bytes, dense_bytes + 1)
            self._bytes[key] = streams + 5 * k + LAYER_OVERHEAD
        return self._bytes[key]

    def _codes(self, sparsity: float, bits: int) -> tuple[int, int, int]:
        """Code stream bytes, codebook entries (zero included), and the dense form's code
        stream bytes (one code per position, zeros too) at this setting."""
        key = (sparsity, bits)
        if key in self._codes_cache:
            return self._codes_cache[key]
        survivors = self._pruned(sparsity)[0]
        if sparsity in SIZED_SPARSITIES or survivors.size == 0:
            counts = self._cluster_counts(survivors, bits, self.init)
            zeros = np.array([self.array.size - survivors.size], np.int64)
            dense = huffman.coded_bytes(np.concatenate([zeros, counts]))
            result = huffman.coded_bytes(counts), int(np.count_nonzero(counts)) + 1, dense
        else:  # bits per stored weight (and per position) interpolated between neighbours
            lo = max(s for s in SIZED_SPARSITIES if s < sparsity)
            hi = min(s for s in SIZED_SPARSITIES if s > sparsity)
            per_weight, per_position = [], []
            for s in (lo, hi):
                n = max(self._pruned(s)[0].size, 1)
                codes_bytes, _, dense_bytes = self._codes(s, bits)
                per_weight.append(codes_bytes / n)
                per_position.append(dense_bytes / max(self.array.size, 1))
            t = (sparsity - lo) / (hi - lo)
            rate = per_weight[0] + t * (per_weight[1] - per_weight[0])
            dense_rate = per_position[0] + t * (per_position[1] - per_position[0])
            k = min(self._codes(lo, bits)[1], survivors.size + 1)
            result = round(rate * survivors.size), k, round(dense_rate * self.array.size)
        self._codes_cache[key] = result
        return result

    @staticmethod
    def _cluster_counts(survivors: np.ndarray, bits: int, init: Init) -> np.ndarray:
        values = survivors.reshape(-1)
        scale = 1.0
        if values.size > _SAMPLE:
            rng = np.random.default_rng(0)
            scale = values.size / _SAMPLE
            values = values[rng.choice(values.size, _SAMPLE, replace=False)]
        if values.size == 0:
            return np.zeros(1, dtype=np.int64)
        _, assignment, _ = kmeans_1d(values, (1 << bits) - 1, init, max_iterations=_ITERATIONS)
        counts = np.bincount(assignment)
        return np.rint(counts * scale).astype(np.int64)
