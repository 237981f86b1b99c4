"""Option groups: each rule refuses a bad value from Python as from the CLI, naming it."""

from __future__ import annotations

import math
import re

import pytest

import dc_onnx
from dc_onnx.options import ClusterOptions, LowerOptions, PruneOptions, RetrainOptions
from dc_onnx.pipeline import PassRecord, stats_of


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ClusterOptions(bits_fc=9), "bits_fc must be in 1..8, got 9"),
        (lambda: LowerOptions(index_bits_conv=0), "index_bits_conv must be in 1..8, got 0"),
        (lambda: PruneOptions(quality=math.nan), "quality must be a finite number >= 0"),
        (lambda: PruneOptions(quality=math.inf), "quality must be a finite number >= 0"),
        (lambda: PruneOptions(sparsity=1.0), "sparsity must be in [0, 1), got 1.0"),
        (lambda: PruneOptions(sparsity_per_layer={"x": -0.1}), "sparsity_per_layer 'x'"),
        (lambda: PruneOptions(rounds=0), "rounds must be >= 1"),
        (lambda: RetrainOptions(batch_size=0), "batch_size must be >= 1"),
        (lambda: RetrainOptions(lr=math.nan), "lr must be a finite number > 0"),
        (lambda: RetrainOptions(temperature=0), "temperature must be a finite number > 0"),
    ],
)
def test_each_group_checks_its_values(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build()  # type: ignore[operator]


def test_validation_without_training_data_is_refused() -> None:
    with pytest.raises(ValueError, match="--val needs --data"):
        dc_onnx.CompileOptions(val="val.npz")


def test_defaults_are_the_budget_and_unset_bits_the_papers() -> None:
    options = dc_onnx.CompileOptions()
    assert options.budgeted and options.budget.limit == 0.01
    assert (options.cluster.bits("conv"), options.cluster.bits("fc")) == (8, 5)
    assert (options.lower.index_bits("conv"), options.lower.index_bits("fc")) == (8, 5)
    assert options.prune.quality is None and options.prune.sparsity is None
    assert not dc_onnx.CompileOptions(cluster=ClusterOptions(bits_fc=5)).budgeted
    assert options.retrain_centroids.lr == 1e-4 and options.retrain.lr == 1e-3
    assert dc_onnx.TrainOptions is RetrainOptions


def test_stats_are_found_by_type_not_position() -> None:
    records = [
        PassRecord("a", 0.0, True, {"layers": {}}),
        PassRecord("lower", 0.0, True, LowerOptions()),  # any dataclass stands in here
        PassRecord("after", 0.0, False, {}),
    ]
    assert stats_of(records, LowerOptions) is records[1].stats
    assert stats_of(records, ClusterOptions) is None
