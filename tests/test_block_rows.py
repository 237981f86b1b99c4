"""The batch-1 block form of FC layers (runtime_ops/src/block_rows.h): which weights take
it, and its documented sum, bit for bit, on the scalar and AVX-512 paths and any thread
count. The library reads DC_ONNX_BLOCK_ROWS once per process (conftest.py pins it to 0
for in-process tests), so these run the models in child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_kernel_paths import _documented_sum, matmul_from_codes

from conftest import run
from dc_onnx.tools.bench import DECODE_STATS_ENV, read_decode_stats
from dc_onnx.tools.decompile import decode_model

LANES, BLOCK, MAX_ROUNDS = 16, 32, 4
CLUSTER_COST, OVERFLOW_COST = 2.0, 4.5  # block_rows.cc


def _rounds(codes: np.ndarray) -> int:
    """R as the library chooses it for a weight (0: the grouped form)."""
    rows, cols = codes.shape
    if codes.max() >= 32:
        return 0
    groups, blocks = -(-rows // LANES), -(-cols // BLOCK)
    present = np.zeros((rows, blocks * BLOCK), bool)
    present[:, :cols] = codes != 0
    count = present.reshape(rows, blocks, BLOCK).sum(axis=2)
    best, best_cost = 0, CLUSTER_COST * float(present.sum())
    for r in range(1, MAX_ROUNDS + 1):
        cost = groups * blocks * r * LANES + OVERFLOW_COST * float(np.maximum(count - r, 0).sum())
        if cost < best_cost:
            best, best_cost = r, cost
    return best


def _block_sum(codes: np.ndarray, codebook: np.ndarray, x: np.ndarray, rounds: int) -> np.float32:
    """One row's documented sum: four chains over the blocks' first R weights, then the
    rest (the overflow) in the grouped form's order."""
    f = np.float32
    a = [f(0)] * MAX_ROUNDS
    overflow = np.zeros_like(codes)
    cols = np.flatnonzero(codes)
    for b in np.unique(cols // BLOCK):
        for r, c in enumerate(cols[cols // BLOCK == b]):
            if r < rounds:
                a[r] = f(a[r] + f(f(codebook[codes[c]]) * x[c]))
            else:
                overflow[c] = codes[c]
    return f(f(f(a[0] + a[1]) + f(a[2] + a[3])) + _documented_sum(overflow, codebook, x))


def _one_per_block(rng: np.random.Generator, rows: int, cols: int, k: int) -> np.ndarray:
    codes = np.zeros((rows, cols), np.int64)
    for b in range(0, cols, BLOCK):
        width = min(BLOCK, cols - b)
        codes[np.arange(rows), b + rng.integers(0, width, rows)] = rng.integers(1, k + 1, rows)
    return codes


def _random(rng: np.random.Generator, rows: int, cols: int, k: int, density: float) -> np.ndarray:
    return np.where(rng.random((rows, cols)) < density, rng.integers(1, k + 1, (rows, cols)), 0)


def _model_at_9(
    tmp: Path, rng: np.random.Generator, rows: int, cols: int
) -> tuple[Path, np.ndarray, np.ndarray]:
    """A compiled MatMul over a random 9% weight with 31 codes: the model, its stored
    codes and its codebook."""
    codes = _random(rng, rows, cols, 31, 0.09)
    values = rng.standard_normal(31).astype(np.float32)
    path, stored, codebook, _ = matmul_from_codes(tmp / "w.dc.onnx", codes, values)
    return path, stored, codebook


def _outputs(
    model: Path, xs: list[np.ndarray], env: dict[str, str], threads: int, tmp: Path
) -> tuple[list[np.ndarray], str]:
    """The model's outputs in a child process with `env` over the current one (keys with
    value "" removed), and the kernel path the library reported."""
    np.savez(tmp / "xs.npz", *xs)
    out, stats = tmp / "ys.npz", tmp / "stats.jsonl"
    stats.unlink(missing_ok=True)
    script = (
        "import sys, numpy as np, onnxruntime as ort, dc_onnx;"
        "o = ort.SessionOptions(); o.intra_op_num_threads = int(sys.argv[4]);"
        "s = dc_onnx.InferenceSession(sys.argv[1], o); xs = np.load(sys.argv[2]);"
        "np.savez(sys.argv[3], *[s.run(None, {'x': xs[k]})[0] for k in xs.files])"
    )
    child = {**os.environ, **env, DECODE_STATS_ENV: str(stats)}
    child = {k: v for k, v in child.items() if v != ""}
    args = [sys.executable, "-c", script, str(model), str(tmp / "xs.npz"), str(out), str(threads)]
    subprocess.run(args, env=child, check=True, cwd=tmp)  # not the source tree
    ys = np.load(out)
    (record,) = read_decode_stats(stats)
    return [ys[k] for k in ys.files], record["isa"]


def _weights(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, int, bool]]:
    return {  # codes, codebook size, row scales
        "one per block": (_one_per_block(rng, 37, 300, 31), 31, False),
        "9% random": (_random(rng, 70, 600, 31, 0.09), 31, False),
        "9% random, row scales": (_random(rng, 70, 600, 31, 0.09), 31, True),
        "3 codes, 10%": (_random(rng, 48, 1000, 3, 0.1), 3, False),
        "25%: grouped": (_random(rng, 40, 600, 31, 0.25), 31, False),
        "64 codes: grouped": (_random(rng, 40, 600, 63, 0.09), 63, False),
    }


@pytest.mark.parametrize("name", list(_weights(np.random.default_rng(0))))
def test_block_rows_follow_the_documented_sum(name: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    codes, k, scaled = _weights(rng)[name]
    values = np.unique(rng.standard_normal(k * 2).astype(np.float32))[:k]
    scales = np.exp(rng.standard_normal(codes.shape[0])).astype(np.float32) if scaled else None
    path, stored, codebook, decoded_scales = matmul_from_codes(
        tmp_path / "w.dc.onnx", codes, values, scales
    )  # fmt: skip
    rounds = _rounds(stored)
    assert (rounds > 0) == ("grouped" not in name), rounds
    xs = [rng.standard_normal((1, codes.shape[1])).astype(np.float32) for _ in range(2)]
    xs.append(rng.standard_normal((3, codes.shape[1])).astype(np.float32))  # grouped form
    expected = []
    for x in xs:
        y = np.empty((x.shape[0], stored.shape[0]), np.float32)
        for m in range(x.shape[0]):
            for n in range(stored.shape[0]):
                if x.shape[0] == 1 and rounds > 0:
                    y[m, n] = _block_sum(stored[n], codebook, x[m], rounds)
                else:
                    y[m, n] = _documented_sum(stored[n], codebook, x[m])
                if decoded_scales is not None:
                    y[m, n] = np.float32(y[m, n] * decoded_scales[n])
        expected.append(y)
    if rounds > 0 and decoded_scales is None:  # the sums must tell the forms apart
        grouped = [_documented_sum(stored[n], codebook, xs[0][0]) for n in range(len(stored))]
        assert expected[0][0].tobytes() != np.array(grouped, np.float32).tobytes()
    for isa in ("scalar", "avx512"):  # capped to the CPU's widest (simd.h)
        for threads in (1, 2):
            env = {"DC_ONNX_BLOCK_ROWS": "1", "DC_ONNX_ISA": isa}
            ys, _ = _outputs(path, xs, env, threads, tmp_path)
            for x, y, want in zip(xs, ys, expected, strict=True):
                assert y.tobytes() == want.tobytes(), (isa, threads, x.shape)


def test_the_block_form_is_the_default_on_avx512_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path, stored, codebook = _model_at_9(tmp_path, rng, 70, 600)
    x = rng.standard_normal((1, 600)).astype(np.float32)
    (y,), isa = _outputs(path, [x], {"DC_ONNX_BLOCK_ROWS": "", "DC_ONNX_ISA": ""}, 1, tmp_path)
    rounds = _rounds(stored) if isa == "avx512" else 0
    sums = _block_sum if rounds else lambda c, b, v, _: _documented_sum(c, b, v)
    want = np.array([[sums(stored[n], codebook, x[0], rounds) for n in range(70)]], np.float32)
    assert y.tobytes() == want.tobytes(), isa
    (off,), _ = _outputs(path, [x], {"DC_ONNX_BLOCK_ROWS": "0", "DC_ONNX_ISA": ""}, 1, tmp_path)
    grouped = [_documented_sum(stored[n], codebook, x[0]) for n in range(70)]
    assert off.tobytes() == np.array([grouped], np.float32).tobytes()


def test_block_rows_pass_non_finite_inputs_as_ieee(tmp_path: Path) -> None:
    # An Inf meeting a stored weight gives +-Inf (NaN where signs meet), an absent one
    # NaN; empty lanes are masked, so they never multiply an input.
    rng = np.random.default_rng(2)
    path, _, _ = _model_at_9(tmp_path, rng, 40, 320)
    x = rng.standard_normal((1, 320)).astype(np.float32)
    x[0, 5], x[0, 40], x[0, 300] = np.inf, -np.inf, np.nan
    (expected,) = run(decode_model(path), {"x": x})
    for isa in ("scalar", "avx512"):
        (y,), _ = _outputs(path, [x], {"DC_ONNX_BLOCK_ROWS": "1", "DC_ONNX_ISA": isa}, 1, tmp_path)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
        np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-5, atol=1e-4)


def test_block_rows_split_into_tasks_keep_their_bits(tmp_path: Path) -> None:
    # 500 rows (32 groups, the last of 4 lanes) x 2048 columns at 9%: several tasks per
    # Run (parallel.h task_count), so thread counts split the groups differently.
    rng = np.random.default_rng(3)
    path, stored, _ = _model_at_9(tmp_path, rng, 500, 2048)
    assert _rounds(stored) > 0
    xs = [rng.standard_normal((1, 2048)).astype(np.float32) for _ in range(3)]
    (expected,) = run(decode_model(path), {"x": np.concatenate(xs)})
    outputs = {}
    for isa in ("scalar", "avx512"):
        for threads in (1, 2, 4):
            env = {"DC_ONNX_BLOCK_ROWS": "1", "DC_ONNX_ISA": isa}
            ys, _ = _outputs(path, xs, env, threads, tmp_path)
            outputs[isa, threads] = b"".join(y.tobytes() for y in ys)
            np.testing.assert_allclose(np.concatenate(ys), expected, rtol=1e-4, atol=1e-4)
    assert len(set(outputs.values())) == 1, outputs.keys()
