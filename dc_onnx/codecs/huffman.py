"""Canonical, length-limited Huffman coding over byte alphabets (docs/format.md).

Codes are limited to MAX_CODE_LEN bits so that the C++ decoder resolves every symbol with
one look-up in a 2**MAX_CODE_LEN table that stays in L1 cache.
"""

from __future__ import annotations

import heapq

import numpy as np

MAX_CODE_LEN = 12


class HuffmanError(ValueError):
    """A Huffman table or bit stream is invalid."""


def code_lengths(symbols: np.ndarray, alphabet_size: int) -> np.ndarray:
    """Optimal code lengths (uint8 per symbol, 0 = unused) limited to MAX_CODE_LEN bits."""
    counts = np.bincount(np.asarray(symbols, dtype=np.int64), minlength=alphabet_size)
    if counts.size > alphabet_size:
        raise HuffmanError(f"symbol {counts.size - 1} outside an alphabet of {alphabet_size}")
    return lengths_from_counts(counts)


def lengths_from_counts(counts: np.ndarray) -> np.ndarray:
    """`code_lengths` from each symbol's count (the alphabet is `counts.size`)."""
    lengths = np.zeros(counts.size, dtype=np.uint8)
    used = np.flatnonzero(counts)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used[0]] = 1
        return lengths
    depth = _huffman_depths({int(s): int(counts[s]) for s in used})
    for sym, d in depth.items():
        lengths[sym] = d
    if lengths.max() > MAX_CODE_LEN:
        _limit_lengths(lengths, counts)
    return lengths


def coded_bytes(counts: np.ndarray) -> int:
    """Bytes of the stream that codes symbols with these counts (`lengths_from_counts`)."""
    counts = np.asarray(counts, dtype=np.int64)
    return (int(np.dot(counts, lengths_from_counts(counts).astype(np.int64))) + 7) // 8


def _huffman_depths(counts: dict[int, int]) -> dict[int, int]:
    # Heap items: (weight, tie-breaker, symbols in the subtree). Ties broken by creation
    # order keep the result deterministic.
    heap: list[tuple[int, int, list[int]]] = [(c, s, [s]) for s, c in sorted(counts.items())]
    heapq.heapify(heap)
    depth = dict.fromkeys(counts, 0)
    order = len(counts)
    while len(heap) > 1:
        w1, _, s1 = heapq.heappop(heap)
        w2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            depth[s] += 1
        heapq.heappush(heap, (w1 + w2, order, s1 + s2))
        order += 1
    return depth


def _limit_lengths(lengths: np.ndarray, counts: np.ndarray) -> None:
    """Clamp lengths to MAX_CODE_LEN, then restore Kraft's inequality at the least cost."""
    used = np.flatnonzero(lengths)
    lengths[used] = np.minimum(lengths[used], MAX_CODE_LEN)
    budget = 1 << MAX_CODE_LEN
    kraft = int(sum(1 << (MAX_CODE_LEN - int(lengths[s])) for s in used))
    # Lengthening the rarest symbol among the longest codes below the limit costs least.
    while kraft > budget:
        candidates = [s for s in used if lengths[s] < MAX_CODE_LEN]
        s = max(candidates, key=lambda c: (int(lengths[c]), -int(counts[c])))
        kraft -= 1 << (MAX_CODE_LEN - int(lengths[s]) - 1)
        lengths[s] += 1
    # Give back slack: shorten the most frequent codes while the code stays valid.
    for s in sorted(used, key=lambda c: -int(counts[c])):
        while lengths[s] > 1 and kraft + (1 << (MAX_CODE_LEN - int(lengths[s]))) <= budget:
            kraft += 1 << (MAX_CODE_LEN - int(lengths[s]))
            lengths[s] -= 1


def check_lengths(lengths: np.ndarray) -> None:
    """Raise HuffmanError unless the lengths describe a valid (possibly incomplete) code."""
    if lengths.size and int(lengths.max()) > MAX_CODE_LEN:
        raise HuffmanError(f"code length {int(lengths.max())} exceeds {MAX_CODE_LEN}")
    kraft = sum(1 << (MAX_CODE_LEN - int(n)) for n in lengths if n)
    if kraft > 1 << MAX_CODE_LEN:
        raise HuffmanError("code lengths violate Kraft's inequality")


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code value of every symbol (DEFLATE order: by length, then by symbol)."""
    check_lengths(lengths)
    codes = np.zeros(lengths.size, dtype=np.uint32)
    code = 0
    for length in range(1, MAX_CODE_LEN + 1):
        for sym in np.flatnonzero(lengths == length):
            codes[sym] = code
            code += 1
        code <<= 1
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    """Pack the symbols' canonical codes MSB-first into bytes, zero-padded."""
    if np.asarray(symbols).size == 0:
        return b""
    return np.packbits(encode_bits(symbols, lengths)).tobytes()


def encode_bits(symbols: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The symbols' canonical codes as one uint8 per bit (0 or 1), MSB-first."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if int(symbols.max()) >= lengths.size or not lengths[symbols].all():
        raise HuffmanError("a symbol has no code")
    codes = canonical_codes(lengths)[symbols]
    lens = lengths[symbols].astype(np.int64)
    starts = np.cumsum(lens) - lens
    bits = np.zeros(int(starts[-1] + lens[-1]), dtype=np.uint8)
    # One pass per bit position keeps memory at one byte per output bit.
    for j in range(int(lens.max())):
        has = lens > j
        shift = (lens[has] - 1 - j).astype(np.uint32)
        bits[starts[has] + j] = (codes[has] >> shift) & 1
    return bits


def decode_table(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(symbol, length) for every MAX_CODE_LEN-bit window; length 0 marks an invalid code."""
    codes = canonical_codes(lengths)
    table_sym = np.zeros(1 << MAX_CODE_LEN, dtype=np.int64)
    table_len = np.zeros(1 << MAX_CODE_LEN, dtype=np.int64)
    for sym in np.flatnonzero(lengths):
        shift = MAX_CODE_LEN - int(lengths[sym])
        start = int(codes[sym]) << shift
        table_sym[start : start + (1 << shift)] = sym
        table_len[start : start + (1 << shift)] = lengths[sym]
    return table_sym, table_len


def decode(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """Reference decoder: exactly `count` symbols, rejecting anything malformed."""
    if count == 0:
        if data:
            raise HuffmanError("stream has bytes but no symbols")
        return np.zeros(0, dtype=np.uint8)
    table_sym, table_len = decode_table(lengths)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    padded = np.concatenate([bits, np.zeros(MAX_CODE_LEN, dtype=np.uint8)]).astype(np.int64)
    weights = 1 << np.arange(MAX_CODE_LEN - 1, -1, -1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, MAX_CODE_LEN)[: bits.size] @ weights
    out = np.empty(count, dtype=np.uint8)
    pos = 0
    for i in range(count):
        if pos >= bits.size:
            raise HuffmanError(f"stream truncated after {i} of {count} symbols")
        w = int(windows[pos])
        n = int(table_len[w])
        if n == 0:
            raise HuffmanError(f"invalid code at bit {pos}")
        out[i] = table_sym[w]
        pos += n
    if pos > bits.size:
        raise HuffmanError(f"stream truncated in the last of {count} symbols")
    if (pos + 7) // 8 != len(data) or bits[pos:].any():
        raise HuffmanError("trailing bytes or non-zero padding after the last symbol")
    return out
