"""`dc_onnx.compile`: the Deep Compression pipeline (a recipe of passes) as one function call."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import onnx_ir as ir

from dc_onnx import recipes
from dc_onnx.data import Dataset
from dc_onnx.errors import InputError
from dc_onnx.io import external_data_files, load_model, referenced_files
from dc_onnx.passes.cluster import Init
from dc_onnx.passes.simplify import SimplifyPass
from dc_onnx.paths import check_output
from dc_onnx.pipeline import run_passes
from dc_onnx.report import LayerReport, Report
from dc_onnx.scratch import materialize, scratch_directory
from dc_onnx.training.trainer import TrainingData, TrainOptions, resolve_loss
from dc_onnx.writer import save_compiled

# Without data there is no retraining, so the default pruning is mild: on LeNet-300-100
# it costs 0.1 points of accuracy (docs/results.md); a --sparsity target overrides it.
DEFAULT_QUALITY = 0.5


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """What `dc-onnx compile` does; the bits default to the paper's (conv 8/8, fc 5/5).

    With `data` (a training `.npz` or a directory of shards) the default recipe is
    deep-compression (prune, retrain, cluster, retrain the centroids, encode); without it,
    data-free. `recipe` picks one by name (see `dc_onnx.recipes.RECIPES`).
    """

    sparsity: float | None = None
    sparsity_per_layer: dict[str, float] = dataclasses.field(default_factory=dict)
    quality: float | None = DEFAULT_QUALITY
    bits_conv: int = 8
    bits_fc: int = 5
    index_bits_conv: int = 8
    index_bits_fc: int = 5
    init: Init = "linear"
    simplify: bool = False
    single_file: bool = False
    recipe: str | None = None
    data: str | os.PathLike[str] | None = None  # training set
    val: str | os.PathLike[str] | None = None  # validation set: the best epoch is kept
    labels: str = "labels"  # key of the labels in the data files
    prune_rounds: int = 1  # iterative pruning: prune -> retrain cycles to reach the target
    # after each pruning round, and after clustering
    retrain: TrainOptions = dataclasses.field(default_factory=TrainOptions)
    retrain_centroids: TrainOptions = dataclasses.field(
        default_factory=lambda: TrainOptions(lr=1e-4)
    )

    def recipe_name(self) -> str:
        if self.recipe is not None:
            return self.recipe
        return recipes.DEFAULT_WITH_DATA if self.data is not None else recipes.DEFAULT_WITHOUT_DATA

    def passes(self, data: TrainingData | None = None) -> list[ir.passes.PassBase]:
        """The passes of the chosen recipe (data-free by default)."""
        if self.prune_rounds < 1:
            raise ValueError(f"prune rounds must be >= 1, got {self.prune_rounds}")
        front: list[ir.passes.PassBase] = [SimplifyPass()] if self.simplify else []
        return [*front, *recipes.build(self.recipe_name(), self, data)]

    def training_data(self, source: ir.Model) -> TrainingData | None:
        """The datasets named by `data`/`val`, plus `source` as the teacher if distilling."""
        if self.data is None:
            if self.val is not None:
                raise InputError("--val needs --data")
            return None
        train = Dataset(self.data, self.labels)
        val = Dataset(self.val, self.labels) if self.val is not None else None
        data = TrainingData(train, val)
        losses = {resolve_loss(o.loss, data) for o in (self.retrain, self.retrain_centroids)}
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
        passes = options.passes(options.training_data(source))
    except ValueError as e:
        raise InputError(str(e)) from None
    # Rewritten weights of 16 MiB or more go to scratch files beside the output, so a
    # model larger than memory is compiled one weight at a time (dc_onnx/scratch.py).
    parent = None if output is None else Path(output).parent
    with scratch_directory(parent, prefix=f".{Path(output or 'dc-onnx').name}"):
        compiled, records = run_passes(source, passes)
        lower_stats = records[-1].stats["layers"]
        if not lower_stats:
            raise InputError(
                "nothing to compress: no Gemm, MatMul or Conv reads a constant float32 weight"
            )
        report = Report(
            layers=[LayerReport.from_lower_stats(name, s) for name, s in lower_stats.items()],
            passes=[dataclasses.asdict(r) for r in records],
            original_bytes=original_bytes,
        )
        if output is not None:
            files = save_compiled(compiled, output, options.single_file, protected)
            report.compressed_bytes = sum(f.stat().st_size for f in files)
            report.files = [f.name for f in files]
        materialize(compiled)
    return CompileResult(compiled, report)
