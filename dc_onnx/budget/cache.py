"""Measured sensitivity points kept between compiles of the same model (opt-in).

Compiling one model at several budgets (`make zoo` does the default and `--max-error
0.05`) would run the same analysis again. With the environment variable
DC_ONNX_ANALYSIS_CACHE naming a directory, the allocate pass reads the points measured
for this model before and writes back what it measured. The file is named by a hash of
everything the points depend on: the canonicalized model (weights included), the
calibration samples the curves use, the k-means start, and the source of the modules that
compute a point, so a change to any of them starts afresh. A cached point is used as if it
had been measured; points the cache lacks are measured as usual.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from dc_onnx.budget.calibration import Calibration
from dc_onnx.layers import AnalysedWeight

logger = logging.getLogger(__name__)

ENV = "DC_ONNX_ANALYSIS_CACHE"
Points = dict[str, dict[str, dict[float, float]]]  # weight -> "bits"/"sparsity" -> point


def cache_path(
    model: ir.Model,
    groups: Sequence[AnalysedWeight],
    calibration: Calibration,
    init: str,
    hessians: Mapping[str, np.ndarray] | None = None,
) -> Path | None:
    """The cache file of this analysis, or None when caching is off (or impossible).
    `hessians`: error compensation's H per weight, when the points use it."""
    directory = os.environ.get(ENV)
    if not directory:
        return None
    digest = hashlib.sha256()
    import dc_onnx.budget.integer as integer
    import dc_onnx.budget.sensitivity as sensitivity
    import dc_onnx.budget.simulate as simulate
    import dc_onnx.compensate as compensate
    import dc_onnx.integer_sharing as sharing
    import dc_onnx.qparams as qparams
    import dc_onnx.quantize as quantize
    import dc_onnx.requantize as requantize

    modules = (sensitivity, simulate, quantize, compensate, integer, qparams, requantize, sharing)
    for module in modules:
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(init.encode())
    for name, h in sorted((hessians or {}).items()):
        digest.update(b"H" + name.encode())
        digest.update(np.ascontiguousarray(h).tobytes())
    try:
        digest.update(ir.to_proto(model).SerializeToString())
    except ValueError:  # over protobuf's 2 GB: no cache
        return None
    for group in groups:  # weights held as external data are not in the proto's bytes
        digest.update(str(group.weight.name).encode())
        digest.update(group.array().tobytes())
    for batch in calibration.batches:
        for name in sorted(batch):
            digest.update(name.encode())
            digest.update(batch[name].tobytes())
    return Path(directory) / f"{digest.hexdigest()[:32]}.json"


def load(path: Path | None) -> Points:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {
            weight: {curve: {float(k): float(e) for k, e in points[curve].items()}
                     for curve in ("bits", "sparsity")}
            for weight, points in data.items()
        }  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        logger.warning("analysis cache %s unreadable (%s): measuring afresh", path, e)
        return {}


def save(path: Path | None, points: dict[str, dict[str, dict[Any, float]]]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.part")
        data = {
            w: {c: {str(k): e for k, e in p.items()} for c, p in v.items()}
            for w, v in points.items()
        }
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError as e:
        logger.warning("analysis cache %s not written: %s", path, e)
