"""Training and evaluation data: `.npz` files with one array per model input plus labels.

A dataset is one `.npz` file (loaded once, kept in memory) or a directory of `.npz` shards
(read one shard at a time, so a data set larger than memory can still be streamed). Every
file holds the same keys: one array per model input name, first axis the sample, and
optionally the labels (key `labels` unless told otherwise).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from dc_onnx.errors import InputError

logger = logging.getLogger(__name__)

Batch = tuple[dict[str, np.ndarray], np.ndarray | None]


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file, or InputError saying why it cannot be read."""
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except Exception as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from None


class Dataset:
    """Samples from an `.npz` file or a directory of `.npz` shards."""

    def __init__(self, path: str | os.PathLike[str], labels: str = "labels") -> None:
        self.path = Path(path)
        self.labels_key = labels
        if self.path.is_dir():
            self.shards = sorted(self.path.glob("*.npz"))
            if not self.shards:
                raise InputError(f"{self.path}: directory holds no .npz shards")
        elif self.path.is_file():
            self.shards = [self.path]
        else:
            raise InputError(f"{self.path}: no such file or directory")
        self._cache: dict[str, np.ndarray] | None = None
        first = self._shard(0)
        self.keys = frozenset(first)
        for key, array in first.items():
            if array.ndim == 0:
                raise InputError(f"{self.shards[0]}: array '{key}' has no sample axis")

    @property
    def has_labels(self) -> bool:
        return self.labels_key in self.keys

    def _shard(self, i: int) -> dict[str, np.ndarray]:
        if len(self.shards) == 1:  # a single file is small enough to keep
            if self._cache is None:
                self._cache = read_npz(self.shards[0])
            return self._cache
        return read_npz(self.shards[i])

    def check_inputs(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self.keys]
        if missing:
            raise InputError(
                f"{self.path} lacks {', '.join(repr(n) for n in missing)} "
                f"(model inputs: {', '.join(names)}; arrays: {', '.join(sorted(self.keys))})"
            )

    def batches(
        self,
        names: Sequence[str],
        batch_size: int,
        rng: np.random.Generator | None = None,
        dtypes: dict[str, np.dtype] | None = None,
    ) -> Iterator[Batch]:
        """(inputs, labels or None) batches; shuffled (shard order and within a shard) by rng.

        Batches do not span shards, so a shard's last batch may be short.
        """
        self.check_inputs(names)
        dtypes = dtypes or {}
        order = rng.permutation(len(self.shards)) if rng is not None else range(len(self.shards))
        for i in order:
            shard = self._shard(int(i))
            missing = [n for n in [*names, self.labels_key] if n in self.keys and n not in shard]
            if missing:
                raise InputError(f"{self.shards[int(i)]}: lacks {', '.join(missing)}")
            n = len(shard[names[0]])
            for key in [*names, self.labels_key]:
                if key in shard and len(shard[key]) != n:
                    raise InputError(
                        f"{self.shards[int(i)]}: '{key}' has {len(shard[key])} samples, "
                        f"'{names[0]}' has {n}"
                    )
            index = rng.permutation(n) if rng is not None else np.arange(n)
            for start in range(0, n, batch_size):
                take = index[start : start + batch_size]
                feeds = {k: as_input_dtype(k, shard[k][take], dtypes.get(k)) for k in names}
                labels = shard[self.labels_key][take] if self.has_labels else None
                yield feeds, labels


def as_input_dtype(name: str, array: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    """`array` as the model input `name` takes it. Floats for an integer input are taken
    only when they are whole numbers: a cast would silently truncate anything else."""
    array = np.asarray(array)
    if dtype is None or array.dtype == dtype:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f" and np.dtype(dtype).kind in "iub":
        broken = ~np.isfinite(array) | (array != np.round(array))
        if broken.any():
            raise InputError(
                f"input '{name}' takes {np.dtype(dtype).name}, but the data holds floats that "
                f"are not whole numbers (e.g. {array[broken].flat[0]!r}): give integers"
            )
    return np.ascontiguousarray(array, dtype=dtype)
