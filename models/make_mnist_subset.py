"""Write the small MNIST test subset that the test suite uses instead of the full data set.

The subset is the first ``--count`` (default 1000) images of the official 10k MNIST test
set, in their original order, with their labels:

    images  uint8 [1000, 28, 28]  raw pixels, 0..255 (models take pixels / 255)
    labels  int64 [1000]

It was made from the repository root with::

    python models/make_mnist_subset.py

which reads ``../shared/data/mnist.npz`` (keys ``x_test``, ``y_test``) and writes
``tests/data/mnist_test_subset.npz`` with ``np.savez_compressed``. Only numpy is needed,
so a fresh clone can run the tests without downloading MNIST.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_subset(src: Path, dst: Path, count: int) -> None:
    with np.load(src) as data:
        images = np.ascontiguousarray(data["x_test"][:count], dtype=np.uint8)
        labels = data["y_test"][:count].astype(np.int64)
    if images.shape != (count, 28, 28) or labels.shape != (count,):
        raise ValueError(f"unexpected shapes {images.shape}, {labels.shape} in {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dst, images=images, labels=labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=(REPO_ROOT / ".." / "shared" / "data" / "mnist.npz").resolve(),
        help="full MNIST npz with x_test, y_test (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "tests" / "data" / "mnist_test_subset.npz",
        help="output npz (default: %(default)s)",
    )
    parser.add_argument("--count", type=int, default=1000, help="first N test images")
    args = parser.parse_args(argv)
    make_subset(args.data, args.out, args.count)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, first {args.count} test images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
