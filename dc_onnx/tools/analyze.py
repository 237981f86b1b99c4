"""`dc-onnx analyze`: the per-layer sensitivity curves of a model, without compiling it."""

from __future__ import annotations

import os

from dc_onnx.budget.calibration import calibration_for
from dc_onnx.budget.sensitivity import Analysis, analyze
from dc_onnx.budget.simulate import Simulator
from dc_onnx.errors import InputError
from dc_onnx.io import load_model
from dc_onnx.layers import DEFAULT_MIN_ELEMENTS, find_analysed_weights
from dc_onnx.options import CalibrationOptions
from dc_onnx.passes.canonicalize import CanonicalizePass


def analyze_model(
    path: str | os.PathLike[str], options: CalibrationOptions | None = None, exact: bool = False
) -> Analysis:
    """Sensitivity of every compressible weight, as the compiler's budget mode sees it
    (after canonicalization, on the first `analysis_samples` calibration samples). Two
    points per weight are measured and the rest predicted, as the compiler does before its
    allocation measures the points it picks; `exact` measures every point."""
    options = options or CalibrationOptions()
    model = CanonicalizePass()(load_model(path)).model
    groups = find_analysed_weights(model.graph, DEFAULT_MIN_ELEMENTS)
    if not groups:
        raise InputError(
            f"{path}: nothing to analyse: no Gemm, MatMul, Conv or Gather weight, and no float "
            f"weight of at least {DEFAULT_MIN_ELEMENTS} elements"
        )
    shapes = dict(options.input_shapes)
    inputs = calibration_for(model.graph, options.calibration, shapes)
    inputs = inputs.head(options.analysis_samples)
    return analyze(groups, Simulator(model, groups, inputs), inputs, exact=exact)
