"""The bundled reference models through the data-free compiler (Done-when figures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import dc_onnx
from conftest import DATA, MODELS, run
from dc_onnx.io import side_file_of
from dc_onnx.tools.decompile import decode_model

PAPER_LENET_300_100 = {"ip1": 0.92, "ip2": 0.91, "ip3": 0.74}  # 8%, 9%, 26% kept


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DATA / "mnist_test_subset.npz") as data:
        x = (data["images"].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        return x, data["labels"]


def _accuracy(path: Path, mnist: tuple[np.ndarray, np.ndarray]) -> float:
    (logits,) = run(path, {"input": mnist[0]}, threads=2)
    return float(np.mean(logits.argmax(1) == mnist[1]))


def test_lenet_300_100_with_the_papers_densities_is_35x_smaller(
    tmp_path: Path, mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    out = tmp_path / "lenet-300-100.dc.onnx"
    # The paper's settings, its linear k-means start included: the least-squared-error
    # start spreads the codes more evenly, which Huffman codes ~10% larger here.
    options = dc_onnx.CompileOptions(
        prune=dc_onnx.PruneOptions(sparsity_per_layer=PAPER_LENET_300_100),
        cluster=dc_onnx.ClusterOptions(bits_fc=6, init="linear"),
    )
    report = dc_onnx.compile(MODELS / "lenet-300-100.onnx", out, options).report
    side = side_file_of(out)
    assert side is not None
    assert report.compressed_bytes == out.stat().st_size + side.stat().st_size
    assert report.ratio is not None and report.ratio >= 35.0
    densities = {layer.name: round(layer.density, 2) for layer in report.layers}
    assert densities == {"ip1": 0.08, "ip2": 0.09, "ip3": 0.26}
    # Data-free at these densities loses accuracy (retraining restores it, issue 3);
    # this guards against regressions: 77.85% on the full test set when measured.
    accuracy = _accuracy(out, mnist)
    assert accuracy > 0.7
    (expected,) = run(decode_model(out), {"input": mnist[0][:64]})
    np.testing.assert_allclose(run(out, {"input": mnist[0][:64]})[0], expected, atol=1e-4)
    print(json.dumps({"ratio": report.ratio, "subset_accuracy": accuracy}))


def test_lenet5_default_compile_keeps_accuracy(
    tmp_path: Path, mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    out = tmp_path / "lenet5.dc.onnx"
    report = dc_onnx.compile(MODELS / "lenet5.onnx", out).report
    # Budget mode: every layer is compressed, or deliberately left dense or float16 (conv1
    # is 2 KB: its codebook alone would outweigh float16).
    chosen = report.kept_dense + report.stored_float16
    names = sorted([layer.name for layer in report.layers] + chosen)
    assert names == ["conv1", "conv2", "ip1", "ip2"]
    assert report.mode == "budget" and report.within_budget
    assert report.ratio is not None and report.ratio > 4
    original, compiled = _accuracy(MODELS / "lenet5.onnx", mnist), _accuracy(out, mnist)
    assert compiled >= original - 0.005
