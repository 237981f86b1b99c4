"""Codecs on their own: Huffman, relative indices, container (Python side only)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dc_onnx.codecs import decode_weight, encode_weight, huffman, sparse_index
from dc_onnx.codecs.container import (
    ContainerError,
    Stream,
    StreamKind,
    layout,
    parse_header,
    read_stream,
)


def test_huffman_lengths_are_optimal_for_dyadic_frequencies() -> None:
    symbols = np.repeat(np.arange(4), [8, 4, 2, 2])
    assert huffman.code_lengths(symbols, 4).tolist() == [1, 2, 3, 3]


def test_huffman_single_symbol_gets_one_bit() -> None:
    lengths = huffman.code_lengths(np.full(10, 7), 16)
    assert lengths[7] == 1 and lengths.sum() == 1
    data = huffman.encode(np.full(10, 7), lengths)
    assert data == b"\x00\x00"
    assert huffman.decode(data, lengths, 10).tolist() == [7] * 10


def test_huffman_limits_code_length_and_keeps_kraft() -> None:
    # Fibonacci-like counts would give a 39-bit code without the limit.
    counts = [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584]
    symbols = np.repeat(np.arange(len(counts)), counts)
    lengths = huffman.code_lengths(symbols, 32)
    assert int(lengths.max()) == huffman.MAX_CODE_LEN
    assert sum(2.0 ** -int(n) for n in lengths if n) <= 1.0
    assert np.array_equal(
        huffman.decode(huffman.encode(symbols, lengths), lengths, symbols.size), symbols
    )


def test_canonical_codes_follow_deflate_order() -> None:
    lengths = np.array([3, 3, 3, 3, 3, 2, 4, 4], dtype=np.uint8)  # RFC 1951, 3.2.2
    assert huffman.canonical_codes(lengths).tolist() == [2, 3, 4, 5, 6, 0, 14, 15]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"\x00", "trailing"),
        (lambda d: d[:-1] + bytes([d[-1] | 1]), "padding|invalid|trailing"),
    ],
)
def test_huffman_decode_rejects_malformed_streams(mutate, message) -> None:  # type: ignore[no-untyped-def]
    symbols = np.array([0, 1, 2, 0, 0, 1, 0])
    lengths = huffman.code_lengths(symbols, 4)
    data = huffman.encode(symbols, lengths)
    with pytest.raises(huffman.HuffmanError, match=message):
        huffman.decode(mutate(data), lengths, symbols.size)


def test_huffman_rejects_invalid_lengths() -> None:
    with pytest.raises(huffman.HuffmanError, match="Kraft"):
        huffman.check_lengths(np.array([1, 1, 1], dtype=np.uint8))
    with pytest.raises(huffman.HuffmanError, match="exceeds"):
        huffman.check_lengths(np.array([13, 1], dtype=np.uint8))


def test_relative_index_escapes_long_gaps() -> None:
    codes = np.zeros(40, dtype=np.uint8)
    codes[[0, 3, 35]] = [5, 6, 7]
    gaps, stored = sparse_index.to_entries(codes, index_bits=3)  # escape symbol 7
    # 31 zeros between positions 3 and 35: four escapes of 7 zeros, then a gap of 3.
    assert gaps.tolist() == [0, 2, 7, 7, 7, 7, 3]
    assert stored.tolist() == [5, 6, 7]
    assert np.array_equal(sparse_index.from_entries(gaps, stored, 40, 3), codes)


def test_relative_index_rejects_positions_past_the_end() -> None:
    gaps = np.array([3, 3], dtype=np.uint8)
    with pytest.raises(sparse_index.SparseIndexError, match="beyond"):
        sparse_index.from_entries(gaps, np.array([1, 1], dtype=np.uint8), 7, 3)
    with pytest.raises(sparse_index.SparseIndexError, match="beyond"):
        sparse_index.from_entries(np.array([7, 7], np.uint8), np.zeros(0, np.uint8), 13, 3)
    with pytest.raises(sparse_index.SparseIndexError, match="codes for"):
        sparse_index.from_entries(gaps, np.array([1], dtype=np.uint8), 70, 3)


@settings(max_examples=60, deadline=None)
@given(
    codes=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40)),
    k=st.integers(1, 256),
    index_bits=st.integers(1, 8),
    density=st.floats(0.0, 1.0),
)
def test_encode_decode_round_trip(codes, k, index_bits, density) -> None:  # type: ignore[no-untyped-def]
    keep = np.random.default_rng(int(codes.sum())).random(codes.shape) < density
    codes = np.where(keep, codes.astype(np.int64) % k, 0).astype(np.uint8)
    codebook = np.concatenate([[0.0], np.linspace(-1, 1, k - 1)]).astype(np.float32)
    for dense_if_smaller in (False, True):
        encoded = encode_weight(codes, codebook, index_bits, dense_if_smaller=dense_if_smaller)
        assert np.array_equal(decode_weight(encoded, codes.shape), codebook[codes])


@pytest.mark.parametrize("index_bits", [1, 2, 4, 8])
def test_the_smaller_form_is_chosen(index_bits: int) -> None:
    """Mostly non-zero: the dense form (no gaps, which cost a bit per weight or more);
    mostly zero: relative indices. Either way the smaller of the two encodings."""
    rng = np.random.default_rng(index_bits)
    codebook = np.concatenate([[0.0], np.linspace(-1, 1, 31)]).astype(np.float32)
    forms = []
    for density in (1.0, 0.95, 0.8, 0.1, 0.02):
        codes = rng.integers(1, 32, size=(64, 300)).astype(np.uint8)
        codes[rng.random(codes.shape) >= density] = 0
        both = [encode_weight(codes, codebook, ib) for ib in (0, index_bits)]
        sizes = [len(e.codes) + len(e.gaps) + e.code_lengths.size for e in both]
        chosen = encode_weight(codes, codebook, index_bits, dense_if_smaller=True)
        assert chosen.index_bits == (0 if sizes[0] < sizes[1] else index_bits), density
        assert len(chosen.codes) + len(chosen.gaps) + chosen.code_lengths.size == min(sizes)
        forms.append(chosen.index_bits)
    assert forms[:3] == [0, 0, 0]  # 80% non-zero and more: dense, at any index width
    if index_bits >= 4:  # 2% non-zero: gaps of up to 15 zeros beat coding every zero
        assert forms[4] == index_bits


def _streams() -> list[Stream]:
    return [
        Stream(StreamKind.CODEBOOK, np.arange(4, dtype=np.float32).tobytes(), 4),
        Stream(StreamKind.CODES, b"\x01\x02\x03", 7),
    ]


def test_container_layout_round_trip() -> None:
    header, toc = layout(_streams())
    assert parse_header(header) == toc
    assert toc[0].offset == len(header) and toc[1].offset == len(header) + 16
    side = header + b"".join(s.data for s in _streams())
    assert read_stream(side, toc[1], 1) == b"\x01\x02\x03"
    assert toc[1].crc32 == zlib.crc32(b"\x01\x02\x03")


@pytest.mark.parametrize(
    ("offset", "message"), [(0, "magic"), (8, "version"), (30, "table of contents")]
)
def test_container_rejects_corrupted_header(offset: int, message: str) -> None:
    header = bytearray(layout(_streams())[0])
    header[offset] ^= 0x40
    with pytest.raises(ContainerError, match=message):
        parse_header(bytes(header))


def test_container_detects_corrupted_stream() -> None:
    header, toc = layout(_streams())
    side = bytearray(header + b"".join(s.data for s in _streams()))
    side[-1] ^= 1
    with pytest.raises(ContainerError, match="CRC-32"):
        read_stream(bytes(side), toc[1], 1)
    with pytest.raises(ContainerError, match="beyond"):
        read_stream(bytes(side[:-2]), toc[1], 1)
