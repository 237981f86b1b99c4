"""`dc_onnx.compile`: the Deep Compression pipeline (a recipe of passes) as one function call."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import onnx
import onnx_ir as ir

from dc_onnx.data import Dataset
from dc_onnx.errors import InputError
from dc_onnx.io import load_model, save_compiled, side_file_path
from dc_onnx.options import CompileOptions
from dc_onnx.passes.lower import LowerStats
from dc_onnx.pipeline import run_passes, stats_of
from dc_onnx.recipes import build_passes
from dc_onnx.report import Report
from dc_onnx.training.trainer import TrainingData, resolve_loss

__all__ = ["CompileOptions", "CompileResult", "compile"]


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
    """Compress a model; with `output`, also write it (plus its side file) and size it."""
    options = options or CompileOptions()
    if isinstance(model, ir.Model):
        source = model
        original_bytes = ir.to_proto(model).ByteSize()
    else:
        in_path = Path(model)
        if output is not None and in_path.resolve() in (
            Path(output).resolve(),
            side_file_path(output).resolve(),
        ):
            raise InputError(f"refusing to overwrite the input {in_path}")
        source = load_model(in_path)
        original_bytes = _file_bytes(in_path)
    try:
        passes = build_passes(options, _training_data(options, source))
    except ValueError as e:
        raise InputError(str(e)) from None
    compiled, records = run_passes(source, passes)
    lowered = stats_of(records, LowerStats) or LowerStats({})
    report = Report.from_records(records, lowered, original_bytes)
    if not lowered.layers:
        why = "".join(f"; '{s.name}': {s.reason}" for s in report.left)
        raise InputError(
            f"nothing to compress: no weight of at least {options.min_weight_elements} "
            "elements, no Gemm, MatMul or Conv reading a constant float32 weight and no "
            f"embedding table worth encoding{why}"
        )
    if output is not None:
        files = save_compiled(compiled, output, single_file=options.single_file)
        report.compressed_bytes = sum(f.stat().st_size for f in files)
        report.files = [f.name for f in files]
    return CompileResult(compiled, report)
