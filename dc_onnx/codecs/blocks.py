"""`encode_weight` over a code matrix read in row-major blocks, for weights too large to copy.

Two passes over the blocks: the first counts the gap and code symbols (Huffman needs the
counts of the whole stream), the second encodes them. The relative-index state (zeros
since the last stored weight) and the bits short of a byte carry from one block to the
next, so the streams are byte for byte those `encode_weight` makes from the whole matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import numpy as np

from dc_onnx.codecs import EncodedWeight, huffman, smaller_form
from dc_onnx.codecs.sparse_index import escape_symbol


@dataclasses.dataclass
class _Entries:
    """Relative-index entries block by block: `add` returns the block's gaps and codes."""

    index_bits: int
    zeros: int = 0  # zeros since the last stored weight, carried into the next block

    def add(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = block.reshape(-1)
        positions = np.flatnonzero(flat)
        if positions.size == 0:
            self.zeros += flat.size
            return np.zeros(0, np.uint8), np.zeros(0, np.uint8)
        escape = escape_symbol(self.index_bits)
        runs = np.diff(positions, prepend=-1) - 1
        runs[0] += self.zeros
        self.zeros = flat.size - 1 - int(positions[-1])
        escapes = runs // escape
        real = np.cumsum(escapes + 1) - 1
        gaps = np.full(int(real[-1]) + 1, escape, dtype=np.uint8)
        gaps[real] = runs - escapes * escape
        return gaps, flat[positions].astype(np.uint8)


class _BitStream:
    """Huffman-coded symbols appended block by block; bits short of a byte wait for the next."""

    def __init__(self, lengths: np.ndarray) -> None:
        self.lengths = lengths
        self.parts: list[bytes] = []
        self.pending = np.zeros(0, np.uint8)

    def add(self, symbols: np.ndarray) -> None:
        if symbols.size == 0:
            return
        bits = np.concatenate([self.pending, huffman.encode_bits(symbols, self.lengths)])
        whole = bits.size - bits.size % 8
        self.parts.append(np.packbits(bits[:whole]).tobytes())
        self.pending = bits[whole:]

    def finish(self) -> bytes:
        return b"".join(self.parts) + np.packbits(self.pending).tobytes()


def encode_blocks(
    blocks: Callable[[], Iterable[np.ndarray]],
    codebook: np.ndarray,
    index_bits: int,
    dense_if_smaller: bool = False,
) -> EncodedWeight:
    """`encode_weight` of the matrix whose row-major blocks of codes `blocks()` yields."""
    codebook = np.asarray(codebook, dtype=np.float32)
    if not 1 <= codebook.size <= 256 or codebook[0] != 0.0:
        raise ValueError("codebook must have 1..256 entries and start with 0.0")
    if index_bits < 1:
        raise ValueError("encode_blocks chooses the dense form itself (dense_if_smaller)")
    code_counts = np.zeros(codebook.size, np.int64)
    gap_counts = np.zeros(1 << index_bits, np.int64)
    zeros = 0
    entries = _Entries(index_bits)
    for block in blocks():
        if block.size and int(block.max()) >= codebook.size:
            raise ValueError("a code is outside the codebook")
        gaps, codes = entries.add(block)
        code_counts += np.bincount(codes, minlength=codebook.size)
        gap_counts += np.bincount(gaps, minlength=1 << index_bits)
        zeros += int(block.size) - int(codes.size)
    if dense_if_smaller:
        with_zeros = code_counts.copy()
        with_zeros[0] += zeros
        if smaller_form(with_zeros, gap_counts, index_bits) == 0:
            index_bits, code_counts, gap_counts = 0, with_zeros, np.zeros(1, np.int64)
    codes_len = huffman.lengths_from_counts(code_counts)
    gaps_len = huffman.lengths_from_counts(gap_counts)
    codes_out, gaps_out = _BitStream(codes_len), _BitStream(gaps_len)
    entries = _Entries(index_bits)
    for block in blocks():
        if index_bits == 0:  # dense: every position's code, zeros too
            codes_out.add(np.ascontiguousarray(block, dtype=np.uint8).reshape(-1))
            continue
        gaps, codes = entries.add(block)
        codes_out.add(codes)
        gaps_out.add(gaps)
    return EncodedWeight(
        codebook=codebook,
        codes=codes_out.finish(),
        gaps=gaps_out.finish(),
        code_lengths=np.concatenate([codes_len, gaps_len]),
        num_entries=int(gap_counts.sum()),
        num_codes=int(code_counts.sum()),
        index_bits=index_bits,
    )
