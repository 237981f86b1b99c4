"""The entropy measurements of models/stream_entropy.py on streams with known answers."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from conftest import MODELS, compile_model, make_model
from dc_onnx.codecs import huffman

sys.path.insert(0, str(MODELS))
import stream_entropy as se


def _binary_entropy(p: float) -> float:
    return float(-p * np.log2(p) - (1 - p) * np.log2(1 - p))


@pytest.mark.parametrize("p", [0.06, 0.3])
def test_geometric_gaps_match_the_analytic_entropy(p: float) -> None:
    # Positions kept independently with probability p: the gaps are geometric, whose
    # entropy per stored weight is h(p) / p. With 8-bit gaps escapes are vanishingly rare.
    rng = np.random.default_rng(1)
    codes = (rng.random((400, 500)) < p).astype(np.uint8)
    s = se.scan(codes, 8, "row", compact=False)
    measured = se.entropy_bits(s.gaps) / s.codes.size
    assert measured == pytest.approx(_binary_entropy(p) / p, rel=0.01)
    # The coders cannot beat the entropy, and stay close to it on a stream this long.
    assert (
        measured * s.codes.size
        <= se.rans_bits(s.gaps, 256)
        <= 1.01 * (measured * s.codes.size) + 256 + 12 * 256 + 32
    )
    assert se.huffman_bits(s.gaps, 256) >= measured * s.codes.size


def test_context_that_determines_the_symbol_leaves_no_entropy() -> None:
    rng = np.random.default_rng(2)
    contexts = rng.integers(0, 4, 10_000)
    symbols = (3 * contexts + 1) % 7
    assert se.entropy_bits(symbols) > 1.5
    assert se.entropy_bits(symbols, contexts) == pytest.approx(0.0, abs=1e-9)
    # One symbol per context: one bit each for Huffman (a 1-bit code), ~0 for rANS.
    assert se.huffman_bits(symbols, 7, contexts) == 10_000 + 4 * 8 * 7
    assert se.rans_bits(symbols, 7, contexts) == pytest.approx(32 + 4 * (7 + 12), abs=1e-6)


@pytest.mark.parametrize("order", ["row", "col"])
@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("bits", [2, 5])
def test_every_scan_reconstructs_the_same_positions(order: str, compact: bool, bits: int) -> None:
    rng = np.random.default_rng(3)
    codes = np.where(rng.random((37, 53)) < 0.1, rng.integers(1, 16, (37, 53)), 0).astype(np.uint8)
    codes[5] = 0  # an empty row and an empty column: compaction removes them
    codes[:, 11] = 0
    s = se.scan(codes, bits, order, compact)
    np.testing.assert_array_equal(se.unscan(s, codes.shape), codes)
    if compact:
        assert s.side_bits == 37 + 53
        assert 5 not in s.kept_rows and 11 not in s.kept_cols
    # The scan's cursor is the decoder's: where each gap starts counting.
    escape = (1 << bits) - 1
    real = s.gaps != escape
    stored = s.cursor[real] + s.gaps[real]
    lines = s.kept_cols.size if order == "col" else s.kept_rows.size
    flat = np.zeros(lines * s.line, dtype=np.uint8)
    flat[stored] = s.codes
    matrix = flat.reshape(lines, s.line)
    np.testing.assert_array_equal(matrix.T if order == "col" else matrix,
                                  codes[np.ix_(s.kept_rows, s.kept_cols)])  # fmt: skip


def test_empty_column_context_sees_the_empty_columns() -> None:
    codes = np.zeros((4, 6), dtype=np.uint8)
    codes[:, [0, 3]] = 1
    s = se.scan(codes, 3, "row", compact=False)
    np.testing.assert_array_equal(s.empty_cross, [False, True, True, False, True, True])
    contexts = se.gap_contexts(s)
    # Only the first gap starts on a column with weights; every later one starts right
    # after a stored weight, on column 1 or 4, both empty.
    empty = contexts["empty"]
    assert empty is not None and empty.tolist() == [0] + [1] * 7


def test_rans_frequencies_sum_to_the_scale_and_keep_every_symbol() -> None:
    counts = np.array([1, 0, 100_000, 3, 7, 0, 50], dtype=np.float64)
    freq = se.rans_frequencies(counts)
    assert int(freq.sum()) == 1 << se.RANS_SCALE_BITS
    assert (freq[counts > 0] >= 1).all() and (freq[counts == 0] == 0).all()


def test_huffman_cost_matches_the_encoder() -> None:
    rng = np.random.default_rng(4)
    symbols = rng.geometric(0.2, 5000).clip(max=31) - 1
    lengths = huffman.code_lengths(symbols, 32)
    encoded = huffman.encode(symbols, lengths)
    bits = se.huffman_bits(symbols, 32) - 8 * 32
    assert len(encoded) == int(np.ceil(bits / 8))


def test_adaptive_coder_pays_for_learning_and_converges() -> None:
    rng = np.random.default_rng(5)
    symbols = rng.choice(4, 20_000, p=[0.5, 0.25, 0.125, 0.125])
    plug_in = se.entropy_bits(symbols)
    adaptive = se.adaptive_bits(symbols, 4)
    # Learning 4 probabilities costs about (3/2) log2(n) bits over the plug-in entropy.
    assert plug_in < adaptive < plug_in + 3 * np.log2(symbols.size)
    # 1000 contexts of 20 symbols each that say nothing: the plug-in entropy drops (its
    # bias), the adaptive coder pays more, as a real coder with those contexts would.
    contexts = np.arange(symbols.size) % 1000
    assert se.entropy_bits(symbols, contexts) < 0.95 * plug_in
    assert se.adaptive_bits(symbols, 4, contexts) > 1.1 * adaptive


def test_a_compiled_layer_is_measured_as_stored(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    w = rng.standard_normal((64, 40)).astype(np.float32)
    model = make_model(
        [helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=1)],
        {"x": ["N", 40]}, {"y": ["N", 64]}, {"W": w},
    )  # fmt: skip
    path = compile_model(model, tmp_path, sparsity=0.9, bits_fc=4, index_bits_fc=4)
    (layer,) = se.measure_model(path)
    assert layer.shape == (64, 40) and layer.index_bits == 4
    assert layer.nonzeros == pytest.approx(0.1 * w.size, abs=2)
    # Today's Huffman bytes are what the Huffman cost model predicts (tables aside).
    assert 8 * layer.gaps_bytes == pytest.approx(
        layer.gap_costs[("row", "none", "huffman")] - 8 * 16, abs=7
    )
    assert layer.gap_costs[("row", "none", "H")] <= layer.gap_costs[("row", "none", "huffman")]
