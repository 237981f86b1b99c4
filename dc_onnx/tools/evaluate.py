"""`dc-onnx eval`: top-1 (and top-5) accuracy of a dense or compiled model on labelled data."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from dc_onnx.data import Dataset
from dc_onnx.errors import InputError
from dc_onnx.runtime import NUMPY_TYPES, open_session


@dataclasses.dataclass(frozen=True)
class EvalResult:
    samples: int
    top1: float
    top5: float | None  # only when the model scores more than five classes

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    labels: str = "labels",
    batch_size: int = 1000,
) -> EvalResult:
    """Accuracy of the model's first output (class scores, last axis) against the labels."""
    session = open_session(model)
    dataset = Dataset(data, labels)
    if not dataset.has_labels:
        raise InputError(f"{data} has no '{labels}' array (pass --labels KEY)")
    names = [i.name for i in session.get_inputs()]
    dtypes = {
        i.name: np.dtype(NUMPY_TYPES[i.type]) for i in session.get_inputs() if i.type in NUMPY_TYPES
    }
    samples = correct1 = correct5 = 0
    classes = 0
    for feeds, y in dataset.batches(names, batch_size, None, dtypes):
        assert y is not None
        scores = np.asarray(session.run(None, feeds)[0])
        scores = scores.reshape(len(y), -1)
        classes = scores.shape[1]
        y = y.reshape(-1).astype(np.int64)
        correct1 += int(np.sum(scores.argmax(1) == y))
        if classes > 5:
            top5 = np.argpartition(-scores, 4, axis=1)[:, :5]
            correct5 += int(np.sum(np.any(top5 == y[:, None], axis=1)))
        samples += len(y)
    if samples == 0:
        raise InputError(f"{data} holds no samples")
    return EvalResult(samples, correct1 / samples, correct5 / samples if classes > 5 else None)
