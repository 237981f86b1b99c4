"""Codecs for one compressed weight: relative-index entries, then Huffman on both streams."""

from __future__ import annotations

import dataclasses

import numpy as np

from dc_onnx.codecs import huffman, sparse_index


@dataclasses.dataclass(frozen=True)
class EncodedWeight:
    """Everything the runtime needs to rebuild one stored weight matrix."""

    codebook: np.ndarray  # [k], codebook[0] == 0; float32, or the stored weight's dtype
    codes: bytes  # Huffman-coded codebook indices
    gaps: bytes  # Huffman-coded relative indices
    code_lengths: np.ndarray  # uint8 [k + 2**index_bits]
    num_entries: int  # gap symbols, escapes included
    num_codes: int  # code symbols: one per stored weight
    index_bits: int
    # Format version 2: one float32 > 0 per row; the weight is float32(row_scales[r] * codebook).
    row_scales: np.ndarray | None = None

    @property
    def codes_lengths(self) -> np.ndarray:
        return self.code_lengths[: self.codebook.size]

    @property
    def gaps_lengths(self) -> np.ndarray:
        return self.code_lengths[self.codebook.size :]


def smaller_form(code_counts: np.ndarray, gap_counts: np.ndarray, index_bits: int) -> int:
    """`index_bits`, or 0 where the dense form (one code per position, zeros included)
    takes fewer bytes than the relative-index form: its gaps cost at least one bit per
    stored weight, which outweighs coding the zeros once few weights are zero.

    `code_counts[c]` counts the positions with code c (code 0: the zeros), `gap_counts`
    the relative-index form's gap symbols."""
    stored = np.asarray(code_counts, dtype=np.int64).copy()
    dense = huffman.coded_bytes(stored)
    stored[0] = 0
    sparse = huffman.coded_bytes(stored) + huffman.coded_bytes(gap_counts)
    # The code lengths table: 2^index_bits entries for the gaps, one for the dense form.
    return 0 if dense + 1 < sparse + (1 << index_bits) else index_bits


def encode_weight(
    code_matrix: np.ndarray,
    codebook: np.ndarray,
    index_bits: int,
    row_scales: np.ndarray | None = None,
    dense_if_smaller: bool = False,
) -> EncodedWeight:
    """Encode a matrix of codebook indices (0 = zero weight) in row-major order, with a
    float32 scale per row of the matrix when `row_scales` is given. With
    `dense_if_smaller`, the dense form replaces the relative indices where it is smaller."""
    codebook = np.asarray(codebook)
    if codebook.dtype == np.float64:
        codebook = codebook.astype(np.float32)
    if not 1 <= codebook.size <= 256 or codebook[0] != 0:
        raise ValueError("codebook must have 1..256 entries and start with 0.0")
    if code_matrix.size and int(code_matrix.max()) >= codebook.size:
        raise ValueError("a code is outside the codebook")
    if index_bits > 0:
        gaps, codes = sparse_index.to_entries(code_matrix, index_bits)
        if dense_if_smaller:
            counts = np.bincount(code_matrix.reshape(-1), minlength=codebook.size)
            gap_counts = np.bincount(gaps, minlength=1 << index_bits)
            index_bits = smaller_form(counts, gap_counts, index_bits)
    if index_bits == 0:  # dense: no relative indices, one code per position (zeros too)
        codes = np.ascontiguousarray(code_matrix, dtype=np.uint8).reshape(-1)
        gaps = np.zeros(0, dtype=np.uint8)
    codes_len = huffman.code_lengths(codes, codebook.size)
    gaps_len = huffman.code_lengths(gaps, 1 << index_bits)
    return EncodedWeight(
        codebook=codebook,
        codes=huffman.encode(codes, codes_len),
        gaps=huffman.encode(gaps, gaps_len),
        code_lengths=np.concatenate([codes_len, gaps_len]),
        num_entries=int(gaps.size),
        num_codes=int(codes.size),
        index_bits=index_bits,
        row_scales=None if row_scales is None else np.asarray(row_scales, np.float32),
    )


def decode_codes(encoded: EncodedWeight, size: int) -> np.ndarray:
    """Flat codebook indices (uint8, `size` of them) of the stored matrix."""
    expected = encoded.codebook.size + (1 << encoded.index_bits)
    if encoded.code_lengths.size != expected:
        raise huffman.HuffmanError(f"{encoded.code_lengths.size} code lengths, expected {expected}")
    if encoded.index_bits == 0:  # dense: one code per position
        if encoded.num_entries or encoded.gaps or encoded.num_codes != size:
            raise sparse_index.SparseIndexError("a dense weight has no gaps, one code each")
        codes = huffman.decode(encoded.codes, encoded.codes_lengths, size)
        if codes.size and int(codes.max()) >= encoded.codebook.size:
            raise sparse_index.SparseIndexError("a code is outside the codebook")
        return codes
    gaps = huffman.decode(encoded.gaps, encoded.gaps_lengths, encoded.num_entries)
    escape = sparse_index.escape_symbol(encoded.index_bits)
    num_codes = int(np.count_nonzero(gaps != escape))
    if num_codes != encoded.num_codes:
        raise sparse_index.SparseIndexError(
            f"gaps imply {num_codes} codes, the stream header says {encoded.num_codes}"
        )
    codes = huffman.decode(encoded.codes, encoded.codes_lengths, num_codes)
    if codes.size and int(codes.max()) >= encoded.codebook.size:
        raise sparse_index.SparseIndexError("a code is outside the codebook")
    return sparse_index.from_entries(gaps, codes, size, encoded.index_bits)


def decode_weight(encoded: EncodedWeight, shape: tuple[int, ...]) -> np.ndarray:
    """Reference decoder: the dense stored matrix (in the codebook's dtype), bit-identical
    to the C++ one."""
    size = int(np.prod(shape))
    weight = encoded.codebook[decode_codes(encoded, size)].reshape(shape)
    if encoded.row_scales is None:
        return weight
    scales = encoded.row_scales
    rows = shape[0] if len(shape) >= 2 else 1
    if encoded.codebook.dtype != np.float32:
        raise sparse_index.SparseIndexError("row scales need a float32 codebook")
    if scales.shape != (rows,) or not (np.isfinite(scales).all() and (scales > 0).all()):
        raise sparse_index.SparseIndexError("row_scales must be one finite, positive value a row")
    # One float32 rounding of the product, as the C++ decoder.
    return (weight.reshape(rows, -1) * scales[:, None]).astype(np.float32).reshape(shape)
