"""`dc_onnx.compile`: the Deep Compression pipeline (a recipe of passes) as one function call."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import tempfile
from pathlib import Path

import onnx_ir as ir

from dc_onnx.budget import safety
from dc_onnx.budget.calibration import Calibration, calibration_for
from dc_onnx.budget.simulate import (
    Outputs,
    constant_error,
    measure_compiled,
    reference_outputs,
    rounding_floor,
)
from dc_onnx.codecs.schema import HEADER_NAME
from dc_onnx.data import Dataset
from dc_onnx.errors import CompileError, InputError
from dc_onnx.io import external_data_files, load_model, referenced_files
from dc_onnx.options import CompileOptions
from dc_onnx.passes.allocate import AllocatePass
from dc_onnx.passes.lower import LowerStats
from dc_onnx.passes.retrain import RetrainPass
from dc_onnx.paths import check_output
from dc_onnx.pipeline import run_passes, stats_of
from dc_onnx.recipes import build_passes
from dc_onnx.report import Report, zip_bytes
from dc_onnx.scratch import materialize, scratch_directory
from dc_onnx.training.trainer import TrainingData, resolve_loss
from dc_onnx.writer import save_compiled

__all__ = ["CompileOptions", "CompileResult", "compile"]

logger = logging.getLogger(__name__)

# Budget mode: compilations with a tighter allocation after the first one lands over budget;
# after those, the safety net keeps the weights responsible exact.
RETRIES = 3
# A budget is refused when reordering the original's float arithmetic alone moves its
# outputs on the calibration inputs by more than this share of it: it cannot be measured.
FLOOR_SHARE = 0.25


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


def input_files(model: ir.Model | str | os.PathLike[str]) -> list[Path]:
    """The files an input is made of: no output may replace one of them."""
    if isinstance(model, ir.Model):
        return sorted(referenced_files(model))
    path = Path(model)
    return [path, *external_data_files(path)] if path.is_file() else [path]


def _load(path: Path, options: CompileOptions) -> ir.Model:
    model = load_model(path)
    if options.simplify or options.data is not None:
        # onnx-simplifier and the training graph take the model as one protobuf: they need
        # every weight in memory (and such a model is below protobuf's 2 GiB anyway).
        ir.external_data.load_to_model(model)
    return model


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
    protected = input_files(model)  # no output may replace one of these
    if isinstance(model, ir.Model):
        snapshot = ir.to_proto(model)
        reference: str | bytes = snapshot.SerializeToString()
        original_bytes = len(reference)

        def fresh() -> ir.Model:
            return ir.from_proto(snapshot)

        source = model
        if options.simplify or options.data is not None:
            ir.external_data.load_to_model(source)
    else:
        in_path = Path(model)

        def fresh() -> ir.Model:
            return _load(in_path, options)

        source = fresh()
        reference, original_bytes = str(in_path), sum(f.stat().st_size for f in protected)
    if HEADER_NAME in source.graph.initializers:
        raise CompileError("the model is already compiled (it has a dc-onnx header)")
    if output is not None:
        check_output(Path(output), protected)  # before the work, not after it
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
    # Retraining moves the outputs towards the labels (or a teacher) on purpose: without an
    # explicit --max-error its error against the original is measured and reported, but it
    # is no breakage, so no budget verdict (and no false alarm) goes with it.
    judged = None if retrains and options.budget.max_error is None else limit
    expected = None if calibration is None else reference_outputs(reference, calibration)
    floor = None
    if calibration is not None and expected is not None:
        dynamic = _quantizes_at_run_time(source.graph)
        floor = _check_calibration(reference, expected, calibration, limit, enforced, dynamic)
    # Rewritten weights of 16 MiB or more go to scratch files beside the output, so a
    # model larger than memory is compiled one weight at a time (dc_onnx/scratch.py).
    parent = None if output is None else Path(output).parent
    # Without an output the compiled model is still written once, to be measured in ORT.
    unsaved = tempfile.TemporaryDirectory(prefix="dc-onnx-") if output is None else None
    with (
        scratch_directory(parent, prefix=f".{Path(output or 'dc-onnx').name}"),
        unsaved or contextlib.nullcontext(""),
    ):
        net = safety.SafetyNet(allocate, limit) if allocate is not None else None
        for attempt in itertools.count():
            current = source if attempt == 0 else fresh()
            report, compiled = _compile_once(current, passes, original_bytes, options, allocate)
            path = Path(unsaved.name) / "model.dc.onnx" if unsaved else Path(output or "")
            files = save_compiled(compiled, path, options.single_file, protected)
            if output is not None:
                report.compressed_bytes = sum(f.stat().st_size for f in files)
                report.files = [f.name for f in files]
                if options.target == "portable":  # no Huffman coding there: zip does that part
                    report.zipped_bytes = zip_bytes(files)
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
            used = {**calibration.to_json(), "rounding_floor": floor}
            report.set_error(error, judged, used)
            if not enforced or error.worst <= limit:
                break
            assert allocate is not None and net is not None
            if attempt < RETRIES:
                logger.info(
                    "compiled model at %.4g, over the budget %.4g: tightening the allocation",
                    error.worst, limit,
                )  # fmt: skip
                allocate.tighten(0.9 * limit / error.worst)
            elif not net.keep_more(error.worst):
                break  # every weight the budget can keep exact already is
        if allocate is not None:
            report.kept_exact = dict(allocate.kept_exact)
        materialize(compiled)
    report.mode = "budget" if enforced else "budget targets" if allocate else "manual"
    if report.within_budget is False:
        logger.warning(
            "warning: output error %.3g%% exceeds the budget %.3g%% (--max-error %g)",
            100 * (report.error or {}).get("relative_l2", float("nan")), 100 * limit, limit,
        )  # fmt: skip
    elif report.within_budget and calibration is not None and calibration.source == "synthetic":
        logger.warning(
            "warning: the output error was measured on synthesized inputs, not on inputs of "
            "the kind the model is used on. Compiled on such inputs, 3 of 11 zoo models "
            'measured up to 2.7x their budget on real ones (docs/budget.md, "Synthesized '
            'inputs against real ones"): pass --calibration to hold it on your data'
        )
    return CompileResult(compiled, report)


# Ops that round activations to integers at run time (ORT's dynamic quantization).
_RUN_TIME_QUANTIZERS = {"DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul"}


def _quantizes_at_run_time(graph: ir.Graph) -> bool:
    nodes = ir.traversal.RecursiveGraphIterator(graph)
    return any(node.op_type in _RUN_TIME_QUANTIZERS for node in nodes)


def _check_calibration(
    reference: str | bytes,
    expected: tuple[list[str], Outputs],
    calibration: Calibration,
    limit: float,
    enforced: bool,
    dynamic: bool = False,
) -> float:
    """Whether the calibration inputs can measure an error of `limit`, before any work;
    returns their rounding floor (simulate.rounding_floor). A budget they cannot measure
    is refused, or only warned about with manual settings."""
    floor = rounding_floor(reference, *expected, calibration)
    constant = constant_error(*expected, calibration)
    real_inputs = "Pass inputs of the kind the model is used on with --calibration"
    if floor.worst > FLOOR_SHARE * limit:
        cause = (
            "the model quantizes its activations as it runs (DynamicQuantizeLinear), and a "
            "reordered float sum moves values across its rounding steps"
            if dynamic
            else "there that output is likely near zero or saturated everywhere"
        )
        worst = max(floor.outputs, key=lambda o: o.relative_l2)
        problem = (
            f"output '{worst.name}' moves by {100 * floor.worst:.3g}% when ONNX Runtime only "
            "reorders the original model's float arithmetic (its graph optimizations on, then "
            f"off), so an output error of {100 * limit:g}% cannot be measured on them: "
            f"{cause}. {real_inputs}, or a "
            f"--max-error of at least {floor.worst / FLOOR_SHARE:.2g}"
        )
    elif constant is not None and constant <= limit:
        problem = (
            "the original's outputs hardly differ from one sample to the next: a model that "
            f"ignores its input and returns their mean is within {100 * constant:.3g}% of them, "
            f"inside the budget of {100 * limit:g}%, so the budget cannot tell a working "
            f"compiled model from a broken one. {real_inputs}"
        )
    else:
        return floor.worst
    problem = f"on the calibration inputs ({calibration.description}), {problem}"
    if enforced:
        raise InputError(problem)
    logger.warning("warning: %s", problem)
    return floor.worst


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
    chosen = {} if allocate is None else allocate.stats.get("layers", {})
    kept_all = bool(chosen)
    halved = [name for name, s in chosen.items() if s["setting"].get("float16")]
    if lowered.layers or halved:
        pass  # something got smaller (float16 weights alone count: passes/half.py)
    elif kept_all:
        # The budget's answer, not a failure: the output is the model, unchanged in value.
        assert allocate is not None
        logger.warning(
            "warning: no layer is worth compressing within --max-error %g (each one changes "
            "the outputs by more than that, or would not get smaller): weights left as they are",
            allocate.max_error,
        )
    else:
        why = "".join(f"; '{s.name}': {s.reason}" for s in report.left)
        raise InputError(
            f"nothing to compress: no weight of at least {options.min_weight_elements} "
            "elements, no Gemm, MatMul or Conv reading a constant float32 weight and no "
            f"embedding table worth encoding{why}"
        )
    if allocate is not None:
        # An integer weight left as it is is still coded (losslessly): not "left dense".
        report.kept_dense = [
            name
            for name, s in allocate.stats["layers"].items()
            if s["setting"].get("keep") and s["kind"] != "integer"
        ]
        report.stored_float16 = halved
    return report, compiled
