"""Conv scratch memory (runtime_ops/src/scratch.h): taken from the session's allocator and
reused by later Runs, bounded by computing large images in bands of output rows, and one
block per concurrent Run when several threads share a session."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

import dc_onnx
from conftest import compile_model, make_model, run
from dc_onnx.tools.decompile import decode_model


@pytest.fixture(scope="module")
def banded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sparse conv + Relu over 16 x 200 x 200: two bands of output rows per image."""
    rng = np.random.default_rng(0)
    inits = {
        "W": rng.standard_normal((16, 16, 3, 3)).astype(np.float32),
        "B": rng.standard_normal(16).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    model = make_model(nodes, {"x": ["N", 16, 200, 200]}, {"y": ["N", 16, 200, 200]}, inits)
    out = tmp_path_factory.mktemp("scratch")
    return compile_model(model, out, sparsity=0.6, bits_conv=8, conv_dense_density=2.0)


def _inputs(count: int) -> list[np.ndarray]:
    return [
        np.random.default_rng(i).standard_normal((1 + i % 2, 16, 200, 200)).astype(np.float32)
        for i in range(count)
    ]


def test_runs_reuse_the_scratch_and_agree(banded: Path) -> None:
    session = dc_onnx.InferenceSession(str(banded))
    x = _inputs(1)[0]
    first = session.run(None, {"x": x})[0]
    second = session.run(None, {"x": x})[0]  # the arena's block from the first Run
    assert first.tobytes() == second.tobytes()
    (expected,) = run(decode_model(banded), {"x": x})
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("arena", [True, False], ids=["arena", "no-arena"])
def test_concurrent_runs_from_two_threads(banded: Path, arena: bool) -> None:
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.intra_op_num_threads = 1
    session = dc_onnx.InferenceSession(str(banded), options)
    xs = _inputs(6)
    expected = [session.run(None, {"x": x})[0].tobytes() for x in xs]
    got: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def worker(first: int) -> None:
        try:
            for _ in range(3):
                for i in range(first, len(xs), 2):
                    got[i] = session.run(None, {"x": xs[i]})[0].tobytes()
                    assert got[i] == expected[i]
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(got) == list(range(len(xs)))
