"""Recipes: named pass lists, written as data.

A recipe is a tuple of steps; each step names a pass builder and its parameters. The
builders read the numbers (sparsity, bits, epochs, ...) from the option groups of
`dc_onnx.options.CompileOptions`, so a recipe only says what runs in which order.
`build_passes` is the one entry point: options (and data) in, pass list out. The
`allocate` step builds nothing in manual mode (the user set the sparsity or bits); in
budget mode it chooses per-layer settings that the prune, cluster and lower steps apply.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import onnx_ir as ir

from dc_onnx.budget.activations import LayerInputs
from dc_onnx.budget.calibration import Calibration
from dc_onnx.budget.sequential import SequentialCompensation
from dc_onnx.options import DEFAULT_QUALITY, CompileOptions
from dc_onnx.passes.allocate import AllocatePass
from dc_onnx.passes.canonicalize import CanonicalizePass
from dc_onnx.passes.cluster import ClusterPass
from dc_onnx.passes.correct_bias import BiasCorrection, CorrectBiasPass, RecordMeansPass
from dc_onnx.passes.fuse_activation import FuseActivationPass
from dc_onnx.passes.half import HalfPass
from dc_onnx.passes.lower import LowerPass
from dc_onnx.passes.lower_portable import PortableLowerPass
from dc_onnx.passes.prune import PrunePass, PrunePolicy
from dc_onnx.passes.requantize import RequantizePass
from dc_onnx.passes.retrain import RetrainPass
from dc_onnx.passes.simplify import SimplifyPass
from dc_onnx.quantize import Init
from dc_onnx.training.trainer import TrainingData

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Step:
    builder: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


RECIPES: dict[str, tuple[Step, ...]] = {
    # Without data: prune by magnitude, share weights by k-means (least squared error, as
    # nothing retrains afterwards), encode.
    "data-free": (
        Step("canonicalize"),
        Step("allocate"),
        Step("requantize"),
        Step("record_means"),
        Step("prune"),
        Step("cluster"),
        Step("correct_bias"),
        Step("lower"),
    ),
    # Han et al. 2016: prune -> retrain (repeated `prune_rounds` times) -> cluster ->
    # retrain the centroids -> encode. Linear centroids, as in the paper: with retraining
    # they beat density-based starts, because the large weights keep centroids of their own.
    "deep-compression": (
        Step("canonicalize"),
        Step("allocate", {"init": "linear"}),
        Step("requantize"),
        Step("prune", {"retrain": True}),
        # Row scales would give each row its own values: the centroids retrain per codebook.
        Step("cluster", {"init": "linear", "row_scales": False}),
        Step("retrain", {"phase": "centroids"}),
        Step("lower"),
    ),
}

DEFAULT_WITH_DATA = "deep-compression"
DEFAULT_WITHOUT_DATA = "data-free"

Builder = Callable[..., list[ir.passes.PassBase]]


@dataclasses.dataclass(frozen=True)
class Context:
    """What the builders need besides the options: training data, calibration inputs."""

    data: TrainingData | None = None
    calibration: Calibration | None = None
    layer_inputs: LayerInputs | None = None  # error compensation's H, shared by the passes
    bias_correction: BiasCorrection | None = None  # shared by record_means and correct_bias
    sequential: SequentialCompensation | None = None  # the cluster pass's rounding in waves


def _canonicalize(options: CompileOptions, ctx: Context) -> list[ir.passes.PassBase]:
    return [CanonicalizePass(options.min_weight_elements)]


def _prune(
    options: CompileOptions, ctx: Context, retrain: bool = False
) -> list[ir.passes.PassBase]:
    given = options.prune
    # In budget mode the allocation's annotations set each target; no fallback threshold.
    quality = given.quality
    if quality is None and not options.budgeted:
        quality = DEFAULT_QUALITY
    policy = PrunePolicy(
        given.sparsity, dict(given.sparsity_per_layer), quality, options.min_weight_elements
    )
    if not retrain:
        return [PrunePass(policy, ctx.layer_inputs)]
    assert ctx.data is not None
    passes: list[ir.passes.PassBase] = []
    rounds = given.rounds
    for r in range(1, rounds + 1):
        prune = PrunePass(policy.round(r, rounds))
        retrain_pass = RetrainPass("weights", ctx.data, options.retrain)
        if rounds > 1:
            prune.name = f"prune-{r}/{rounds}"
            retrain_pass.name = f"retrain-weights-{r}/{rounds}"
        passes += [prune, retrain_pass]
    return passes


def _allocate(
    options: CompileOptions, ctx: Context, init: Init = "mse"
) -> list[ir.passes.PassBase]:
    """`init` is the recipe's k-means start, so the simulation quantizes as cluster will."""
    if not options.budgeted:
        return []
    if ctx.calibration is None:
        raise ValueError("budget mode needs calibration inputs")
    budget = options.budget
    return [
        AllocatePass(
            ctx.calibration,
            budget.limit,
            budget.analysis_samples,
            options.cluster.init or init,
            options.min_weight_elements,
            ctx.layer_inputs,
        )
    ]


def _requantize(options: CompileOptions, ctx: Context) -> list[ir.passes.PassBase]:
    """Integer weights get the allocation's settings; without one (manual mode) they stay
    lossless, so the step builds nothing there."""
    return [RequantizePass(options.min_weight_elements)] if options.budgeted else []


def _cluster(
    options: CompileOptions, ctx: Context, init: Init = "mse", row_scales: bool = True
) -> list[ir.passes.PassBase]:
    """`init` is the recipe's k-means start, used unless the options name one; row scales
    where they pay, unless the recipe retrains the centroids (one codebook per weight)."""
    cluster = options.cluster
    return [
        ClusterPass(
            cluster, options.min_weight_elements, init, row_scales, ctx.layer_inputs, ctx.sequential
        )
    ]


def _retrain(options: CompileOptions, ctx: Context, phase: str) -> list[ir.passes.PassBase]:
    assert ctx.data is not None
    train = options.retrain if phase == "weights" else options.retrain_centroids
    return [RetrainPass("weights" if phase == "weights" else "centroids", ctx.data, train)]


def _lower(options: CompileOptions, ctx: Context) -> list[ir.passes.PassBase]:
    # The weights the budget chose float16 for become float16 first, in either form.
    if options.target == "portable":
        return [HalfPass(), PortableLowerPass(options.min_weight_elements)]
    shapes = {} if ctx.calibration is None else ctx.calibration.input_shapes()
    lower: list[ir.passes.PassBase] = [
        HalfPass(),
        LowerPass(options.lower, options.min_weight_elements, shapes),
    ]
    # The portable form keeps its activation nodes: the layers there are ORT's own ops.
    return lower if options.lower.keep_activations else [*lower, FuseActivationPass()]


def _record_means(options: CompileOptions, ctx: Context) -> list[ir.passes.PassBase]:
    correction = ctx.bias_correction
    return [] if correction is None else [RecordMeansPass(correction)]


def _correct_bias(options: CompileOptions, ctx: Context) -> list[ir.passes.PassBase]:
    correction = ctx.bias_correction
    return [] if correction is None else [CorrectBiasPass(correction)]


BUILDERS: dict[str, Builder] = {
    "canonicalize": _canonicalize,
    "allocate": _allocate,
    "requantize": _requantize,
    "prune": _prune,
    "cluster": _cluster,
    "record_means": _record_means,
    "correct_bias": _correct_bias,
    "retrain": _retrain,
    "lower": _lower,
}


def needs_data(steps: tuple[Step, ...]) -> bool:
    return any(s.builder == "retrain" or s.params.get("retrain") for s in steps)


def recipe_name(options: CompileOptions) -> str:
    """The recipe `options` asks for: its own, else the default with or without data."""
    if options.recipe is not None:
        return options.recipe
    return DEFAULT_WITH_DATA if options.data is not None else DEFAULT_WITHOUT_DATA


def build_passes(
    options: CompileOptions,
    data: TrainingData | None,
    calibration: Calibration | None = None,
) -> list[ir.passes.PassBase]:
    """The passes of the chosen recipe, simplify first if asked; ValueError for an unknown
    recipe or one that retrains without data."""
    name = recipe_name(options)
    if name not in RECIPES:
        raise ValueError(f"unknown recipe '{name}' (known: {', '.join(RECIPES)})")
    steps = RECIPES[name]
    if needs_data(steps) and data is None:
        raise ValueError(
            f"recipe '{name}' retrains, so it needs training data (--data); "
            f"without data use --recipe {DEFAULT_WITHOUT_DATA}"
        )
    passes: list[ir.passes.PassBase] = [SimplifyPass()] if options.simplify else []
    layer_inputs = bias_correction = sequential = None
    if compensates(options, calibration) and not needs_data(steps):
        assert calibration is not None
        layer_inputs = LayerInputs(calibration)
        sequential = _sequential(options, calibration)
        # The budget's simulation would not see what it did not simulate: manual only.
        if not options.budgeted:
            shifted = None if sequential is None else sequential.shifted
            bias_correction = BiasCorrection(calibration, shifted)
    elif options.cluster.compensate == "sequential":
        logger.warning(
            "warning: --compensate sequential needs calibration inputs from a file"
            " (--calibration) and no retraining: nothing is compensated"
        )
    ctx = Context(data, calibration, layer_inputs, bias_correction, sequential)
    for step in steps:
        passes += BUILDERS[step.builder](options, ctx, **step.params)
    return passes


def compensates(options: CompileOptions, calibration: Calibration | None) -> bool:
    """Whether the layers' rounding compensates errors (ClusterOptions.compensate): with
    `auto`, only on inputs the user gave. Compensation fits the inputs it sees, and
    synthesized ones are a guess at the real ones (noise images are no photographs)."""
    mode = options.cluster.compensate
    if mode == "off" or calibration is None:
        return False
    return mode == "on" or calibration.source == "file"


def _sequential(options: CompileOptions, calibration: Calibration) -> SequentialCompensation | None:
    """`--compensate sequential` in manual mode: the budget's simulation rounds each layer
    against the original's inputs, and the compiled model must be what it simulated."""
    if options.cluster.compensate != "sequential":
        return None
    if options.budgeted:
        logger.warning(
            "warning: --compensate sequential applies in manual mode (--sparsity / --bits-*);"
            " budget mode compensates each layer alone"
        )
        return None
    return SequentialCompensation(calibration)
