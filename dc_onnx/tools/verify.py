"""`dc-onnx verify`: run an original and a compiled model on the same inputs and compare."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from dc_onnx.errors import InputError
from dc_onnx.runtime import NUMPY_TYPES, open_session


@dataclasses.dataclass(frozen=True)
class OutputComparison:
    name: str
    max_abs_error: float
    max_rel_error: float  # max |a - b| / max |a|, a = original output
    argmax_agreement: float | None  # along the last axis, when it has more than one class


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    outputs: list[OutputComparison]
    samples: int
    accuracy: dict[str, float] | None  # top-1 of both models when labels were given

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def random_inputs(session: Any, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs shaped like the model's, `batch` for a symbolic first dim: standard normal
    floats, True for bools, ones for integers (as the compiler's synthesized calibration
    inputs where it finds no embedding table: a valid id, length or flag)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        dtype = NUMPY_TYPES.get(arg.type)
        if dtype is None:
            why = f"input '{arg.name}' is {arg.type}"
            raise InputError(f"{why}: give real inputs (verify --inputs)")
        shape = []
        for axis, d in enumerate(arg.shape):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif axis == 0:
                shape.append(batch)
            else:  # an image size or a sequence length: no size fits every model
                dims = ",".join(str(x) for x in arg.shape)
                raise InputError(
                    f"input '{arg.name}' has shape [{dims}]: only the first (batch) dim can be "
                    "made up; fix the others in the model (python -m onnxruntime.tools."
                    "make_dynamic_shape_fixed), or give real inputs (verify --inputs)"
                )
        if np.issubdtype(dtype, np.floating):
            feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[arg.name] = np.ones(shape, dtype=dtype)  # True for bools
    return feeds


def verify(
    original: str | os.PathLike[str],
    compiled: str | os.PathLike[str],
    inputs: dict[str, np.ndarray] | None = None,
    batch: int = 8,
    seed: int = 0,
) -> VerifyResult:
    """Compare outputs; `inputs` may also hold `labels` for top-1 accuracy of both."""
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    reference, candidate = open_session(original), open_session(compiled)
    names = [i.name for i in reference.get_inputs()]
    feeds = random_inputs(reference, batch, seed) if inputs is None else dict(inputs)
    labels = feeds.pop("labels", None)
    missing = [n for n in names if n not in feeds]
    if missing:
        raise InputError(f"inputs lack {', '.join(missing)} (model inputs: {', '.join(names)})")
    feeds = {n: feeds[n] for n in names}
    expected = reference.run(None, feeds)
    try:
        actual = candidate.run(None, feeds)
    except Exception as e:
        raise InputError(f"{compiled}: running it failed: {e}") from None
    outputs = []
    for arg, a, b in zip(reference.get_outputs(), expected, actual, strict=True):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a64.shape != b64.shape:
            raise InputError(f"output '{arg.name}': shape {b64.shape}, expected {a64.shape}")
        err = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
        scale = float(np.max(np.abs(a64))) if a64.size else 0.0
        agree = None
        if a64.ndim >= 1 and a64.shape[-1] > 1:
            agree = float(np.mean(a64.argmax(-1) == b64.argmax(-1)))
        outputs.append(OutputComparison(arg.name, err, err / scale if scale else err, agree))
    accuracy = None
    if labels is not None:
        accuracy = {
            "original": float(np.mean(np.asarray(expected[0]).argmax(-1) == labels)),
            "compiled": float(np.mean(np.asarray(actual[0]).argmax(-1) == labels)),
        }
    samples = int(next(iter(feeds.values())).shape[0]) if feeds else 0
    return VerifyResult(outputs, samples, accuracy)
