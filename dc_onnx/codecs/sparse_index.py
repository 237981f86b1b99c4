"""Relative-index sparse form (Han et al. 2016, section 2; docs/format.md).

A flat array of codebook indices (0 = zero weight) becomes entries (gap, code): `gap`
counts the zeros skipped before the entry and fits in `index_bits` bits; longer runs of
zeros are bridged with filler entries (gap = 2**bits - 1, code 0).
"""

from __future__ import annotations

import numpy as np


class SparseIndexError(ValueError):
    """Entries that do not describe a valid sparse array."""


def to_entries(codes: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, codes) as uint8 arrays, fillers included, for a flat array of codes."""
    if not 1 <= index_bits <= 8:
        raise ValueError(f"index bits must be in 1..8, got {index_bits}")
    flat = np.asarray(codes).reshape(-1)
    positions = np.flatnonzero(flat)
    span = 1 << index_bits  # positions advanced by one maximal-gap filler
    runs = np.diff(positions, prepend=-1) - 1  # zeros before each non-zero
    fillers = runs // span
    group_end = np.cumsum(fillers + 1) - 1  # index of each real entry
    m = int(group_end[-1]) + 1 if positions.size else 0
    gaps = np.full(m, span - 1, dtype=np.uint8)
    entry_codes = np.zeros(m, dtype=np.uint8)
    gaps[group_end] = runs - fillers * span
    entry_codes[group_end] = flat[positions]
    return gaps, entry_codes


def from_entries(gaps: np.ndarray, codes: np.ndarray, size: int) -> np.ndarray:
    """Flat array of `size` codes (uint8) rebuilt from the entries."""
    if gaps.shape != codes.shape:
        raise SparseIndexError("gap and code streams differ in length")
    out = np.zeros(size, dtype=np.uint8)
    if gaps.size == 0:
        return out
    positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
    if int(positions[-1]) >= size:
        raise SparseIndexError(f"entry position {int(positions[-1])} beyond {size} weights")
    out[positions] = codes
    return out
