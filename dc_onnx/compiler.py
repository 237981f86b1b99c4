"""`dc_onnx.compile`: the Deep Compression pipeline (a recipe of passes) as one function call."""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

from dc_onnx import recipes
from dc_onnx.budget.calibration import Calibration, calibration_for
from dc_onnx.budget.simulate import measure_compiled, reference_outputs
from dc_onnx.data import Dataset
from dc_onnx.errors import CompileError, InputError
from dc_onnx.io import HEADER_NAME, load_model, save_compiled, side_file_path
from dc_onnx.passes.allocate import AllocatePass
from dc_onnx.passes.cluster import Init
from dc_onnx.passes.retrain import RetrainPass
from dc_onnx.passes.simplify import SimplifyPass
from dc_onnx.pipeline import run_passes
from dc_onnx.report import LayerReport, Report
from dc_onnx.training.trainer import TrainingData, TrainOptions, resolve_loss

logger = logging.getLogger(__name__)

# Budget mode: compilations with a tighter allocation after the first one lands over budget.
RETRIES = 3
# Manual mode without data: no retraining, so the default pruning is mild (on
# LeNet-300-100 it costs 0.1 points of accuracy, docs/results.md).
DEFAULT_QUALITY = 0.5
# Bits in manual mode: conv 8 / fc 5 for the weights and the indices (Han et al. 2016).
PAPER_BITS = (8, 5, 8, 5)
# The default output-error budget: relative L2 error of the worst output.
DEFAULT_MAX_ERROR = 0.01


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """What `dc-onnx compile` does.

    Budget mode (the default): every weight gets the sparsity and k-means bits that
    minimise bytes while the output error stays under `max_error` on calibration inputs
    (passes/allocate.py). Setting any of `sparsity`, `sparsity_per_layer`, `quality` or the
    bits switches to manual mode, where unset values take the paper's defaults (conv 8/8,
    fc 5/5 bits, pruning at `DEFAULT_QUALITY * std`).

    With `data` (a training `.npz` or a directory of shards) the default recipe is
    deep-compression (prune, retrain, cluster, retrain the centroids, encode); without it,
    data-free. `recipe` picks one by name (see `dc_onnx.recipes.RECIPES`).
    """

    sparsity: float | None = None
    sparsity_per_layer: dict[str, float] = dataclasses.field(default_factory=dict)
    quality: float | None = None
    bits_conv: int | None = None
    bits_fc: int | None = None
    index_bits_conv: int | None = None
    index_bits_fc: int | None = None
    init: Init = "linear"
    simplify: bool = False
    single_file: bool = False
    max_error: float = DEFAULT_MAX_ERROR
    calibration: str | os.PathLike[str] | None = None  # .npz or directory; labels optional
    input_shapes: dict[str, list[int]] = dataclasses.field(default_factory=dict)
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

    @property
    def budgeted(self) -> bool:
        """No explicit compression setting: the allocation chooses them."""
        explicit = (self.sparsity, self.quality, *self.given_bits())
        return not self.sparsity_per_layer and all(v is None for v in explicit)

    def given_bits(self) -> tuple[int | None, ...]:
        return (self.bits_conv, self.bits_fc, self.index_bits_conv, self.index_bits_fc)

    def bits(self) -> tuple[int, int, int, int]:
        """(weight bits conv, fc, index bits conv, fc), unset ones at the paper's values.

        In budget mode they only apply to a weight the allocation gave no bits."""
        b = [d if v is None else v for v, d in zip(self.given_bits(), PAPER_BITS, strict=True)]
        return b[0], b[1], b[2], b[3]

    def manual(self) -> CompileOptions:
        """These options with every unset compression setting at its manual default."""
        conv, fc, index_conv, index_fc = self.bits()
        quality = DEFAULT_QUALITY if self.quality is None else self.quality
        return dataclasses.replace(
            self, quality=quality, bits_conv=conv, bits_fc=fc,
            index_bits_conv=index_conv, index_bits_fc=index_fc,
        )  # fmt: skip

    def recipe_name(self) -> str:
        if self.recipe is not None:
            return self.recipe
        return recipes.DEFAULT_WITH_DATA if self.data is not None else recipes.DEFAULT_WITHOUT_DATA

    def passes(
        self, data: TrainingData | None = None, calibration: Calibration | None = None
    ) -> list[ir.passes.PassBase]:
        """The passes of the chosen recipe (data-free by default)."""
        if self.prune_rounds < 1:
            raise ValueError(f"prune rounds must be >= 1, got {self.prune_rounds}")
        if not self.max_error > 0:
            raise ValueError(f"--max-error must be > 0, got {self.max_error}")
        front: list[ir.passes.PassBase] = [SimplifyPass()] if self.simplify else []
        context = recipes.Context(data, calibration)
        return [*front, *recipes.build(self.recipe_name(), self, context)]

    def calibration_inputs(self, graph: ir.Graph) -> Calibration | None:
        """`calibration`, else the validation or training data, else synthesized inputs.

        In manual mode inputs that cannot be made up only cost the measurement (None).
        """
        path = self.calibration or self.val or self.data
        try:
            return calibration_for(graph, path, self.input_shapes, self.labels)
        except InputError as e:
            if self.budgeted:
                raise
            logger.warning("warning: the output error is not measured: %s", e)
            return None

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
    if not options.budgeted:
        options = options.manual()
    calibration = options.calibration_inputs(source.graph)
    try:
        passes = options.passes(options.training_data(source), calibration)
    except ValueError as e:
        raise InputError(str(e)) from None
    allocate = next((p for p in passes if isinstance(p, AllocatePass)), None)
    # With retraining the budget only sets the targets: the trained model is meant to move
    # away from the original (towards the labels), so it is measured but not recompiled.
    retrains = any(isinstance(p, RetrainPass) for p in passes)
    enforced = allocate is not None and not retrains
    expected = None if calibration is None else reference_outputs(reference, calibration)
    with tempfile.TemporaryDirectory(prefix="dc-onnx-") as scratch:
        for attempt in range(1 + RETRIES):
            current = source if attempt == 0 else fresh()
            result = _compile_once(current, passes, original_bytes, options, allocate)
            path = Path(output) if output is not None else Path(scratch) / "model.dc.onnx"
            files = save_compiled(result.model, path, single_file=options.single_file)
            if output is not None:
                result.report.compressed_bytes = sum(f.stat().st_size for f in files)
                result.report.files = [f.name for f in files]
            if calibration is None or expected is None:
                break
            error = measure_compiled(path, *expected, calibration)
            result.report.set_error(error, options.max_error, calibration.to_json())
            if not enforced or error.worst <= options.max_error or attempt == RETRIES:
                break
            logger.info(
                "compiled model at %.4g, over the budget %.4g: tightening the allocation",
                error.worst, options.max_error,
            )  # fmt: skip
            assert allocate is not None
            allocate.tighten(0.9 * options.max_error / error.worst)
    result.report.mode = "budget" if enforced else "budget targets" if allocate else "manual"
    if result.report.within_budget is False:
        logger.warning(
            "warning: output error %.3g%% exceeds the budget %.3g%% (--max-error %g)",
            100 * (result.report.error or {}).get("relative_l2", float("nan")),
            100 * options.max_error, options.max_error,
        )  # fmt: skip
    return result


def _compile_once(
    model: ir.Model,
    passes: list[ir.passes.PassBase],
    original_bytes: int,
    options: CompileOptions,
    allocate: AllocatePass | None,
) -> CompileResult:
    compiled, records = run_passes(model, passes)
    lower_stats = records[-1].stats["layers"]
    if not lower_stats:
        if allocate is not None and allocate.stats.get("layers"):
            raise InputError(
                f"nothing to compress within the budget: every layer changes the outputs by "
                f"more than --max-error {options.max_error:g} when compressed"
            )
        raise InputError(
            "nothing to compress: no Gemm, MatMul or Conv reads a constant float32 weight"
        )
    report = Report(
        layers=[LayerReport.from_lower_stats(name, s) for name, s in lower_stats.items()],
        passes=[dataclasses.asdict(r) for r in records],
        original_bytes=original_bytes,
        max_error=options.max_error,
    )
    if allocate is not None:
        report.kept_dense = [
            name for name, s in allocate.stats["layers"].items() if s["setting"].get("keep")
        ]
    return CompileResult(compiled, report)
