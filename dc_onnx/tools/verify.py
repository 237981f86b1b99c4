"""`dc-onnx verify`: run an original and a compiled model on the same inputs and compare."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dc_onnx.budget.calibration import integer_reads, padding_masks
from dc_onnx.budget.simulate import is_numeric, non_numeric_error
from dc_onnx.errors import InputError
from dc_onnx.io import load_model
from dc_onnx.runtime import NUMPY_TYPES, open_session


@dataclasses.dataclass(frozen=True)
class OutputComparison:
    name: str
    max_abs_error: float
    max_rel_error: float  # max |a - b| / max |a|, a = original output
    argmax_agreement: float | None  # along the last axis, when it has more than one class
    # Strings and sequences: both errors are the compile's measure of them (the share of
    # strings changed, the relative L2 of a sequence's numbers; inf for another shape).
    numeric: bool = True


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    outputs: list[OutputComparison]
    samples: int
    accuracy: dict[str, float] | None  # top-1 of both models when labels were given

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def random_inputs(
    session: Any,
    batch: int,
    seed: int,
    shapes: Mapping[str, Sequence[int]] | None = None,
    integers: Mapping[str, tuple[np.ndarray, str]] | None = None,
    masks: Collection[str] = (),
) -> dict[str, np.ndarray]:
    """Inputs shaped like the model's, `batch` for a symbolic first dim and `shapes`
    (--input-shape NAME=D0,D1,...) for its other symbolic dims: values drawn from
    `integers` (calibration.integer_reads: the values the graph reads them as, floats cast
    to ids included), standard normal floats, False / zeros for the padding `masks`
    (calibration.padding_masks), else ones / True (a valid id, length, flag or mask), as
    the compiler synthesizes them."""
    given = dict(shapes or {})
    args = session.get_inputs()
    unknown = sorted(set(given) - {arg.name for arg in args})
    if unknown:
        names = ", ".join(arg.name for arg in args)
        raise InputError(f"--input-shape names {', '.join(unknown)}; model inputs: {names}")
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in args:
        dtype = NUMPY_TYPES.get(arg.type)
        if dtype is None:
            why = f"input '{arg.name}' is {arg.type}"
            raise InputError(f"{why}: give real inputs (verify --inputs)")
        shape = _input_shape(arg.name, list(arg.shape), batch, given.get(arg.name))
        if integers and arg.name in integers:
            feeds[arg.name] = rng.choice(integers[arg.name][0], size=shape).astype(dtype)
        elif np.issubdtype(dtype, np.floating):
            feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
        elif arg.name in masks:
            feeds[arg.name] = np.zeros(shape, dtype=dtype)  # False: keeps every position
        else:
            feeds[arg.name] = np.ones(shape, dtype=dtype)  # True for bools
    return feeds


def _input_shape(name: str, dims: list[Any], batch: int, given: Sequence[int] | None) -> list[int]:
    shown = ",".join(str(x) for x in dims)
    if given is not None and len(given) != len(dims):
        raise InputError(f"--input-shape {name} has {len(given)} dims; the model's [{shown}] has "
                         f"{len(dims)}")  # fmt: skip
    shape = []
    for axis, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            if given is not None and given[axis] != d:
                raise InputError(f"--input-shape {name}: dim {axis} is fixed at {d} in the model")
            shape.append(d)
        elif axis == 0:
            shape.append(batch)  # the batch sizes being compared
        elif given is not None:
            shape.append(int(given[axis]))
        else:  # an image size or a sequence length: no size fits every model
            raise InputError(
                f"input '{name}' has shape [{shown}]: only the first (batch) dim can be made "
                f"up; give the others with --input-shape {name}=D0,D1,..., fix them in the "
                "model (python -m onnxruntime.tools.make_dynamic_shape_fixed), or give real "
                "inputs (verify --inputs)"
            )
    return shape


def verify(
    original: str | os.PathLike[str],
    compiled: str | os.PathLike[str],
    inputs: dict[str, np.ndarray] | None = None,
    batch: int = 8,
    seed: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> VerifyResult:
    """Compare outputs; `inputs` may also hold `labels` for top-1 accuracy of both."""
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    reference, candidate = open_session(original), open_session(compiled)
    names = [i.name for i in reference.get_inputs()]
    if inputs is None:
        graph = load_model(Path(original)).graph
        reads, masks = integer_reads(graph), padding_masks(graph)
        feeds = random_inputs(reference, batch, seed, input_shapes, reads, masks)
    else:
        feeds = dict(inputs)
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
    outputs = [
        _compare(arg.name, a, b)
        for arg, a, b in zip(reference.get_outputs(), expected, actual, strict=True)
    ]
    accuracy = None
    if labels is not None:
        accuracy = {
            "original": float(np.mean(np.asarray(expected[0]).argmax(-1) == labels)),
            "compiled": float(np.mean(np.asarray(actual[0]).argmax(-1) == labels)),
        }
    samples = int(next(iter(feeds.values())).shape[0]) if feeds else 0
    return VerifyResult(outputs, samples, accuracy)


def _compare(name: str, a: Any, b: Any) -> OutputComparison:
    if not (is_numeric(a) and is_numeric(b)):
        err = non_numeric_error([a], [b])  # as the compile measures it
        return OutputComparison(name, err, err, None, numeric=False)
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        raise InputError(f"output '{name}': shape {b64.shape}, expected {a64.shape}")
    # As the compile measures it: entries the original leaves non-finite (NaN at masked
    # positions) are not compared; a finite one the compiled model breaks is an inf error.
    finite = np.isfinite(a64)
    diff = np.abs(a64[finite] - b64[finite])
    err = float(np.nan_to_num(diff, nan=math.inf).max()) if diff.size else 0.0
    scale = float(np.max(np.abs(a64[finite]))) if diff.size else 0.0
    agree = None
    if a64.ndim >= 1 and a64.shape[-1] > 1:
        agree = float(np.mean(a64.argmax(-1) == b64.argmax(-1)))
    return OutputComparison(name, err, err / scale if scale else err, agree)
