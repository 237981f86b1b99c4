"""Data-free compile results on the bundled LeNets, as a Markdown table.

    python models/data_free_results.py [--data ../shared/data/mnist.npz] [--out-dir build/results]

For each model: the default recipe and the paper's per-layer densities and bits (Han et
al. 2016, Table 1), with real file sizes and top-1 accuracy on the MNIST test set (the
full 10k when --data points at it, else the committed 1000-image subset).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import dc_onnx

REPO = Path(__file__).resolve().parent.parent
Options = dc_onnx.CompileOptions
Prune = dc_onnx.PruneOptions
Cluster = dc_onnx.ClusterOptions
LINEAR = "default pruning and bits, the paper's linear k-means start"
# The paper's rows use its linear start, as the paper did.
RUNS = [
    ("lenet-300-100", "default", Options()),
    ("lenet-300-100", LINEAR, Options(cluster=Cluster(init="linear"))),
    (
        "lenet-300-100",
        "paper densities 8/9/26%, fc 6-bit weights, 5-bit indices, linear start",
        Options(
            prune=Prune(sparsity_per_layer={"ip1": 0.92, "ip2": 0.91, "ip3": 0.74}),
            cluster=Cluster(bits_fc=6, init="linear"),
        ),
    ),
    ("lenet5", "default", Options()),
    ("lenet5", LINEAR, Options(cluster=Cluster(init="linear"))),
    (
        "lenet5",
        "paper densities 66/12/8/19%, conv 8/8 bits, fc 5/5 bits, linear start",
        Options(
            prune=Prune(
                sparsity_per_layer={"conv1": 0.34, "conv2": 0.88, "ip1": 0.92, "ip2": 0.81}
            ),
            cluster=Cluster(init="linear"),
        ),
    ),
]


def _mnist(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    with np.load(path) as data:
        if "x_test" in data:
            images, labels, name = data["x_test"], data["y_test"], "MNIST test (10k)"
        else:
            images, labels, name = data["images"], data["labels"], "MNIST test subset (1k)"
    return (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28), labels, name


def _top1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    (logits,) = dc_onnx.InferenceSession(path).run(None, {"input": x})
    return float(np.mean(logits.argmax(1) == y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "tests/data/mnist_test_subset.npz")
    parser.add_argument("--out-dir", type=Path, default=REPO / "build/results")
    args = parser.parse_args()
    x, y, data_name = _mnist(args.data)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"Top-1 accuracy on {data_name}.\n")
    print(
        "| model | recipe | original bytes | compiled bytes | ratio | top-1 before | top-1 after |"
    )
    print("|---|---|---|---|---|---|---|")
    tables = []
    for model, recipe, options in RUNS:
        source = REPO / "models" / f"{model}.onnx"
        out = args.out_dir / f"{model}.dc.onnx"
        report = dc_onnx.compile(source, out, options).report
        before, after = _top1(source, x, y), _top1(out, x, y)
        print(
            f"| {model} | {recipe} | {report.original_bytes:,} | {report.compressed_bytes:,} |"
            f" {report.ratio:.1f}x | {before:.2%} | {after:.2%} |"
        )
        tables.append(f"{model}, {recipe}:\n\n```\n{report.format_table()}\n```")
    print("\n" + "\n\n".join(tables))


if __name__ == "__main__":
    main()
