"""Option groups: each rule refuses a bad value from Python as from the CLI, naming it."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

import dc_onnx
from dc_onnx.options import (
    ClusterOptions,
    CompileOptions,
    LowerOptions,
    PruneOptions,
    RetrainOptions,
)
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


def test_defaults_are_the_papers() -> None:
    options = dc_onnx.CompileOptions()
    assert (options.cluster.bits_conv, options.cluster.bits_fc) == (8, 5)
    assert (options.lower.index_bits_conv, options.lower.index_bits_fc) == (8, 5)
    assert options.prune.quality == 0.5 and options.prune.sparsity is None
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


def test_flat_keywords_go_to_their_groups() -> None:
    # The Python API before options were grouped: users' scripts call it this way.
    flat = CompileOptions(sparsity=0.8, bits_fc=6, index_bits_fc=4, prune_rounds=2, labels="y")
    nested = CompileOptions(
        prune=PruneOptions(sparsity=0.8, rounds=2),
        cluster=ClusterOptions(bits_fc=6),
        lower=LowerOptions(index_bits_fc=4),
        labels="y",
    )
    assert flat == nested
    assert dataclasses.replace(flat, labels="z").prune.sparsity == 0.8


def test_flat_keywords_are_checked_and_unknown_ones_refused() -> None:
    with pytest.raises(ValueError, match="bits_fc"):
        CompileOptions(bits_fc=9)
    with pytest.raises(TypeError, match="spars"):
        CompileOptions(sparsty=0.5)
    with pytest.raises(TypeError, match="seed"):
        CompileOptions(seed=3)  # k-means and retraining both have a seed: say which
