"""`dc_onnx.compile`: the Deep Compression pipeline (a recipe of passes) as one function call."""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

from dc_onnx.budget.calibration import Calibration, calibration_for
from dc_onnx.budget.simulate import measure_compiled, reference_outputs
from dc_onnx.codecs.schema import HEADER_NAME
from dc_onnx.data import Dataset
from dc_onnx.errors import CompileError, InputError
from dc_onnx.io import load_model, save_compiled, side_file_path
from dc_onnx.options import CompileOptions
from dc_onnx.passes.allocate import AllocatePass
from dc_onnx.passes.lower import LowerStats
from dc_onnx.passes.retrain import RetrainPass
from dc_onnx.pipeline import run_passes, stats_of
from dc_onnx.recipes import build_passes
from dc_onnx.report import Report
from dc_onnx.training.trainer import TrainingData, resolve_loss

__all__ = ["CompileOptions", "CompileResult", "compile"]

logger = logging.getLogger(__name__)

# Budget mode: compilations with a tighter allocation after the first one lands over budget.
RETRIES = 3


def _training_data(options: CompileOptions, source: ir.Model) -> TrainingData | None:
    """The datasets named by `data`/`val`, plus `source` as the teacher if distilling."""
    if options.data is None:
        return None
    train = Dataset(options.data, options.labels)
    val = Dataset(options.val, options.labels) if options.val is not None else None
    data = TrainingData(train, val)
    losses = {resolve_loss(o.loss, data) for o in (options.retrain, options.retrain_centroids)}
    if losses - {"cross-entropy"}:
        data = dataclasses.replace(data, teacher=ir.to_proto(source).SerializeToString())
    return data


@dataclasses.dataclass
class CompileResult:
    model: ir.Model
    report: Report


def _file_bytes(path: Path) -> int:
    """Size of an ONNX file plus the external data files it names."""
    total = path.stat().st_size
    proto = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in proto.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return total + sum((path.parent / loc).stat().st_size for loc in locations)


def compile(
    model: ir.Model | str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    options: CompileOptions | None = None,
) -> CompileResult:
    """Compress a model; with `output`, also write it (plus its side file) and size it.

    The compiled model's output error on the calibration inputs is measured (in ORT, with
    the dc-onnx ops) and reported. In budget mode, a compiled model over the budget is
    compiled again with a tighter allocation.
    """
    options = options or CompileOptions()
    if isinstance(model, ir.Model):
        snapshot = ir.to_proto(model)
        reference: str | bytes = snapshot.SerializeToString()
        original_bytes = len(reference)

        def fresh() -> ir.Model:
            return ir.from_proto(snapshot)

        source = model
    else:
        in_path = Path(model)
        if output is not None and in_path.resolve() in (
            Path(output).resolve(),
            side_file_path(output).resolve(),
        ):
            raise InputError(f"refusing to overwrite the input {in_path}")
        source = load_model(in_path)
        reference, original_bytes = str(in_path), _file_bytes(in_path)

        def fresh() -> ir.Model:
            return load_model(in_path)

    if HEADER_NAME in source.graph.initializers:
        raise CompileError("the model is already compiled (it has a dc-onnx header)")
    calibration = _calibration(options, source.graph)
    try:
        passes = build_passes(options, _training_data(options, source), calibration)
    except ValueError as e:
        raise InputError(str(e)) from None
    allocate = next((p for p in passes if isinstance(p, AllocatePass)), None)
    # With retraining the budget only sets the targets: the trained model is meant to move
    # away from the original (towards the labels), so it is measured but not recompiled.
    retrains = any(isinstance(p, RetrainPass) for p in passes)
    enforced = allocate is not None and not retrains
    limit = options.budget.limit
    expected = None if calibration is None else reference_outputs(reference, calibration)
    with tempfile.TemporaryDirectory(prefix="dc-onnx-") as scratch:
        for attempt in range(1 + RETRIES):
            current = source if attempt == 0 else fresh()
            report, compiled = _compile_once(current, passes, original_bytes, options, allocate)
            path = Path(output) if output is not None else Path(scratch) / "model.dc.onnx"
            files = save_compiled(compiled, path, single_file=options.single_file)
            if output is not None:
                report.compressed_bytes = sum(f.stat().st_size for f in files)
                report.files = [f.name for f in files]
            if calibration is None or expected is None:
                break
            try:
                error = measure_compiled(path, *expected, calibration)
            except InputError as e:
                if allocate is not None:
                    raise
                # Manual mode: the user's model is written; it only lacks the measurement.
                logger.warning("warning: the output error is not measured: %s", e)
                break
            report.set_error(error, limit, calibration.to_json())
            if not enforced or error.worst <= limit or attempt == RETRIES:
                break
            logger.info(
                "compiled model at %.4g, over the budget %.4g: tightening the allocation",
                error.worst, limit,
            )  # fmt: skip
            assert allocate is not None
            allocate.tighten(0.9 * limit / error.worst)
    report.mode = "budget" if enforced else "budget targets" if allocate else "manual"
    if report.within_budget is False:
        logger.warning(
            "warning: output error %.3g%% exceeds the budget %.3g%% (--max-error %g)",
            100 * (report.error or {}).get("relative_l2", float("nan")), 100 * limit, limit,
        )  # fmt: skip
    return CompileResult(compiled, report)


def _calibration(options: CompileOptions, graph: ir.Graph) -> Calibration | None:
    """`--calibration`, else the validation or training data, else synthesized inputs.

    In manual mode, inputs that cannot be made up only cost the measurement (None).
    """
    given = options.budget
    path = given.calibration or options.val or options.data
    try:
        return calibration_for(graph, path, dict(given.input_shapes), options.labels)
    except InputError as e:
        if options.budgeted:
            raise
        logger.warning("warning: the output error is not measured: %s", e)
        return None


def _compile_once(
    model: ir.Model,
    passes: list[ir.passes.PassBase],
    original_bytes: int,
    options: CompileOptions,
    allocate: AllocatePass | None,
) -> tuple[Report, ir.Model]:
    compiled, records = run_passes(model, passes)
    lowered = stats_of(records, LowerStats) or LowerStats({})
    report = Report.from_records(records, lowered, original_bytes)
    if not lowered.layers:
        if allocate is not None and allocate.stats.get("layers"):
            raise InputError(
                "nothing to compress within the budget: every layer changes the outputs by "
                f"more than --max-error {allocate.max_error:g} allows when compressed"
            )
        why = "".join(f"; '{s.name}': {s.reason}" for s in report.left)
        raise InputError(
            f"nothing to compress: no weight of at least {options.min_weight_elements} "
            "elements, no Gemm, MatMul or Conv reading a constant float32 weight and no "
            f"embedding table worth encoding{why}"
        )
    if allocate is not None:
        report.kept_dense = [
            name for name, s in allocate.stats["layers"].items() if s["setting"].get("keep")
        ]
    return report, compiled
