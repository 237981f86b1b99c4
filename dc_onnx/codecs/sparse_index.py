"""Relative-index sparse form (Han et al. 2016, section 2; docs/format.md).

A flat array of codebook indices (0 = zero weight) becomes a gap per stored weight, the
number of zeros skipped before it, in `index_bits` bits. The largest gap symbol,
`2**bits - 1`, is an escape: it skips that many zeros and stores no weight, so runs
longer than a gap can hold cost no code (the paper's "filler zero", with its code left
out since it is known to be zero).
"""

from __future__ import annotations

import numpy as np


class SparseIndexError(ValueError):
    """Entries that do not describe a valid sparse array."""


def escape_symbol(index_bits: int) -> int:
    return (1 << index_bits) - 1


def to_entries(codes: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, codes) as uint8 arrays: one gap per entry (escapes included), one code per
    stored weight, for a flat array of codes."""
    if not 1 <= index_bits <= 8:
        raise ValueError(f"index bits must be in 1..8, got {index_bits}")
    flat = np.asarray(codes).reshape(-1)
    positions = np.flatnonzero(flat)
    escape = escape_symbol(index_bits)
    runs = np.diff(positions, prepend=-1) - 1  # zeros before each stored weight
    escapes = runs // escape
    real = np.cumsum(escapes + 1) - 1  # entry index of each stored weight
    m = int(real[-1]) + 1 if positions.size else 0
    gaps = np.full(m, escape, dtype=np.uint8)
    gaps[real] = runs - escapes * escape
    return gaps, flat[positions].astype(np.uint8)


def from_entries(gaps: np.ndarray, codes: np.ndarray, size: int, index_bits: int) -> np.ndarray:
    """Flat array of `size` codes (uint8) rebuilt from the entries."""
    escape = escape_symbol(index_bits)
    real = gaps != escape
    if int(np.count_nonzero(real)) != codes.size:
        raise SparseIndexError(f"{codes.size} codes for {np.count_nonzero(real)} stored weights")
    out = np.zeros(size, dtype=np.uint8)
    if gaps.size == 0:
        return out
    ends = np.cumsum(np.where(real, gaps.astype(np.int64) + 1, escape))
    if int(ends[-1]) > size:
        raise SparseIndexError(f"entries run to position {int(ends[-1]) - 1}, beyond {size}")
    out[ends[real] - 1] = codes
    return out
