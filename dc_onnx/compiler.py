"""`dc_onnx.compile`: the Deep Compression pipeline (a recipe of passes) as one function call."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import onnx_ir as ir

from dc_onnx.data import Dataset
from dc_onnx.errors import InputError
from dc_onnx.io import external_data_files, load_model, referenced_files
from dc_onnx.options import CompileOptions
from dc_onnx.passes.lower import LowerStats
from dc_onnx.paths import check_output
from dc_onnx.pipeline import run_passes, stats_of
from dc_onnx.recipes import build_passes
from dc_onnx.report import Report, zip_bytes
from dc_onnx.scratch import materialize, scratch_directory
from dc_onnx.training.trainer import TrainingData, resolve_loss
from dc_onnx.writer import save_compiled

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


def input_files(model: ir.Model | str | os.PathLike[str]) -> list[Path]:
    """The files an input is made of: no output may replace one of them."""
    if isinstance(model, ir.Model):
        return sorted(referenced_files(model))
    path = Path(model)
    return [path, *external_data_files(path)] if path.is_file() else [path]


def compile(
    model: ir.Model | str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    options: CompileOptions | None = None,
) -> CompileResult:
    """Compress a model; with `output`, also write it (plus its side file) and size it."""
    options = options or CompileOptions()
    protected = input_files(model)  # no output may replace one of these
    if isinstance(model, ir.Model):
        source = model
        original_bytes = ir.to_proto(model).ByteSize()
    else:
        source = load_model(model)
        original_bytes = sum(f.stat().st_size for f in protected)
    if options.simplify or options.data is not None:
        # onnx-simplifier and the training graph take the model as one protobuf: they need
        # every weight in memory (and such a model is below protobuf's 2 GiB anyway).
        ir.external_data.load_to_model(source)
    if output is not None:
        check_output(Path(output), protected)  # before the work, not after it
    try:
        passes = build_passes(options, _training_data(options, source))
    except ValueError as e:
        raise InputError(str(e)) from None
    # Rewritten weights of 16 MiB or more go to scratch files beside the output, so a
    # model larger than memory is compiled one weight at a time (dc_onnx/scratch.py).
    parent = None if output is None else Path(output).parent
    with scratch_directory(parent, prefix=f".{Path(output or 'dc-onnx').name}"):
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
            files = save_compiled(compiled, output, options.single_file, protected)
            report.compressed_bytes = sum(f.stat().st_size for f in files)
            report.files = [f.name for f in files]
            if options.target == "portable":  # no Huffman coding there: zip does that part
                report.zipped_bytes = zip_bytes(files)
        materialize(compiled)
    return CompileResult(compiled, report)
