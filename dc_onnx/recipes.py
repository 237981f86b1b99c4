"""Recipes: named pass lists, written as data.

A recipe is a tuple of steps; each step names a pass builder and its parameters. The
builders read the numbers (sparsity, bits, epochs, ...) from the option groups of
`dc_onnx.options.CompileOptions`, so a recipe only says what runs in which order.
`build_passes` is the one entry point: options (and data) in, pass list out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import onnx_ir as ir

from dc_onnx.options import CompileOptions
from dc_onnx.passes.canonicalize import CanonicalizePass
from dc_onnx.passes.cluster import ClusterPass
from dc_onnx.passes.lower import LowerPass
from dc_onnx.passes.lower_portable import PortableLowerPass
from dc_onnx.passes.prune import PrunePass, PrunePolicy
from dc_onnx.passes.retrain import RetrainPass
from dc_onnx.passes.simplify import SimplifyPass
from dc_onnx.quantize import Init
from dc_onnx.training.trainer import TrainingData


@dataclasses.dataclass(frozen=True)
class Step:
    builder: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


RECIPES: dict[str, tuple[Step, ...]] = {
    # Without data: prune by magnitude, share weights by k-means (least squared error, as
    # nothing retrains afterwards), encode.
    "data-free": (Step("canonicalize"), Step("prune"), Step("cluster"), Step("lower")),
    # Han et al. 2016: prune -> retrain (repeated `prune_rounds` times) -> cluster ->
    # retrain the centroids -> encode. Linear centroids, as in the paper: with retraining
    # they beat density-based starts, because the large weights keep centroids of their own.
    "deep-compression": (
        Step("canonicalize"),
        Step("prune", {"retrain": True}),
        Step("cluster", {"init": "linear"}),
        Step("retrain", {"phase": "centroids"}),
        Step("lower"),
    ),
}

DEFAULT_WITH_DATA = "deep-compression"
DEFAULT_WITHOUT_DATA = "data-free"

Builder = Callable[..., list[ir.passes.PassBase]]


def _canonicalize(options: CompileOptions, data: TrainingData | None) -> list[ir.passes.PassBase]:
    return [CanonicalizePass(options.min_weight_elements)]


def _prune(
    options: CompileOptions, data: TrainingData | None, retrain: bool = False
) -> list[ir.passes.PassBase]:
    given = options.prune
    policy = PrunePolicy(
        given.sparsity, dict(given.sparsity_per_layer), given.quality, options.min_weight_elements
    )
    if not retrain:
        return [PrunePass(policy)]
    assert data is not None
    passes: list[ir.passes.PassBase] = []
    rounds = given.rounds
    for r in range(1, rounds + 1):
        prune = PrunePass(policy.round(r, rounds))
        retrain_pass = RetrainPass("weights", data, options.retrain)
        if rounds > 1:
            prune.name = f"prune-{r}/{rounds}"
            retrain_pass.name = f"retrain-weights-{r}/{rounds}"
        passes += [prune, retrain_pass]
    return passes


def _cluster(
    options: CompileOptions, data: TrainingData | None, init: Init = "mse"
) -> list[ir.passes.PassBase]:
    """`init` is the recipe's k-means start, used unless the options name one."""
    return [ClusterPass(options.cluster, options.min_weight_elements, default_init=init)]


def _retrain(
    options: CompileOptions, data: TrainingData | None, phase: str
) -> list[ir.passes.PassBase]:
    assert data is not None
    train = options.retrain if phase == "weights" else options.retrain_centroids
    return [RetrainPass("weights" if phase == "weights" else "centroids", data, train)]


def _lower(options: CompileOptions, data: TrainingData | None) -> list[ir.passes.PassBase]:
    if options.target == "portable":
        return [PortableLowerPass(options.min_weight_elements)]
    return [LowerPass(options.lower, options.min_weight_elements)]


BUILDERS: dict[str, Builder] = {
    "canonicalize": _canonicalize,
    "prune": _prune,
    "cluster": _cluster,
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


def build_passes(options: CompileOptions, data: TrainingData | None) -> list[ir.passes.PassBase]:
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
    for step in steps:
        passes += BUILDERS[step.builder](options, data, **step.params)
    return passes
