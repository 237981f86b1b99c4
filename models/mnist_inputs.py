"""Turn MNIST arrays into model inputs for `dc-onnx verify --inputs`.

Reads the committed subset (tests/data/mnist_test_subset.npz: `images`, `labels`) or the
full MNIST (`x_test`, `y_test`) and writes `input` (float32 [N,1,28,28], pixels / 255)
plus `labels`, so verify also reports both models' top-1 accuracy.

    python models/mnist_inputs.py SRC.npz DST.npz
"""

from __future__ import annotations

import sys

import numpy as np


def main(src: str, dst: str) -> None:
    with np.load(src) as data:
        images = data["images"] if "images" in data else data["x_test"]
        labels = data["labels"] if "labels" in data else data["y_test"]
    x = (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    np.savez(dst, input=x, labels=labels.astype(np.int64))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
