"""Size against error of an integer weight's requantizations: k-means, or the compiler's.

For each integer (int8 / uint8) weight named, at each bit width, prints the bits per
weight its lossless coding takes (Huffman code lengths of its values, the streams'
floor) and the relative weight error in dequantized units, for two ways of giving it
fewer values, neither pruned:

- k-means: 2^bits - 1 shared integers, Lloyd from the least-squared-error start of float
  weights (dc_onnx.quantize.kmeans_1d on the value histogram, weighted by scale^2),
  centroids rounded, each value to the nearest;
- the compiler's (dc_onnx.integer_sharing.ladder): at most ERRORS[bits] relative error,
  the fewest coded bits among k-means, least-error and entropy-constrained candidates.

    python models/integer_rate.py MODEL.onnx WEIGHT [WEIGHT ...]
"""

from __future__ import annotations

import argparse

import numpy as np

from dc_onnx.codecs import huffman
from dc_onnx.io import load_model
from dc_onnx.layers import find_stored_weights
from dc_onnx.passes.canonicalize import CanonicalizePass
from dc_onnx.qparams import read_params
from dc_onnx.quantize import kmeans_1d, nearest
from dc_onnx.requantize import histogram, magnitudes, remap, requantize, zero_mask

BITS = (7, 6, 5, 4, 3, 2)


def bits_per_weight(array: np.ndarray) -> float:
    _, counts = np.unique(array, return_counts=True)
    lengths = huffman.lengths_from_counts(counts.astype(np.int64)).astype(np.int64)
    return float(np.dot(counts, lengths)) / array.size


def kmeans(array: np.ndarray, params, bits: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    keep = ~zero_mask(array, params)
    hist = histogram(array, params, keep)
    k = (1 << bits) - 1
    if hist.values.size <= k:
        return array
    x = hist.values.astype(np.float64)
    centroids, _, _ = kmeans_1d(x, k, "mse", importance=hist.importance)
    shared = np.unique(np.rint(centroids))
    return remap(array, hist, shared[nearest(shared, x)].astype(np.int64), keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("weights", nargs="+")
    args = parser.parse_args()
    model = CanonicalizePass()(load_model(args.model)).model
    stored = {w.name: w for w in find_stored_weights(model.graph, 1) if w.kind == "integer"}
    for name in args.weights:
        weight = stored[name]
        q = weight.array()
        params = read_params(weight.weight)
        scale = np.broadcast_to(params.scale, q.shape)
        norm = float(np.linalg.norm(magnitudes(q, params)))

        def error(out: np.ndarray, q: np.ndarray = q, scale: np.ndarray = scale) -> float:
            step = out.astype(np.int64) - q.astype(np.int64)
            return float(np.linalg.norm(step * scale)) / norm  # noqa: B023

        print(f"{name} {list(q.shape)} {q.dtype}, zero point from {params.source}: "
              f"{bits_per_weight(q):.3f} bits per weight lossless")  # fmt: skip
        print("bits | k-means: bits/weight, error | compiler: bits/weight, error")
        for b in BITS:
            a, c = kmeans(q, params, b), requantize(q, params, b, 0.0)
            print(f"{b} | {bits_per_weight(a):.3f}, {error(a):.4f} | "
                  f"{bits_per_weight(c):.3f}, {error(c):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
