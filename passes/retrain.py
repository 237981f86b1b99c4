"""retrain: fine-tune a pruned or clustered model on data (Han et al. 2016, sections 2-3).

Phase `weights` runs after prune: the surviving weights train, the pruned ones stay exactly
zero. Phase `centroids` runs after cluster: only the shared values (and biases) train, so
each weight keeps its cluster and at most `2**bits` distinct values. Either way the trained
values are written back into the model, which stays a plain ONNX model for the next pass.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from dc_onnx.layers import find_weight_groups
from dc_onnx.options import RetrainOptions
from dc_onnx.pipeline import CompilerPass
from dc_onnx.training.graph import Phase, build_trainable
from dc_onnx.training.trainer import TrainingData, train

logger = logging.getLogger(__name__)


class RetrainPass(CompilerPass):
    def __init__(self, phase: Phase, data: TrainingData, options: RetrainOptions) -> None:
        super().__init__()
        self.phase = phase
        self.data = data
        self.options = options
        self.name = f"retrain-{phase}"
        self._before: dict[str, tuple[np.ndarray, int]] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self._before = {
            g.name: (g.array() == 0, np.unique(g.array()).size)
            for g in find_weight_groups(model.graph)
        }
        if self.options.epochs == 0:
            self.stats = {"epochs": [], "kept_epoch": 0}
            return ir.passes.PassResult(model, False)
        trainable = build_trainable(model, self.phase)
        trained, history, kept = train(trainable, self.data, self.options, label=self.name)
        trainable.write_back(trained)
        self.stats = {"epochs": [dataclasses.asdict(r) for r in history], "kept_epoch": kept}
        return ir.passes.PassResult(model, True)

    def ensures(self, model: ir.Model) -> None:
        for group in find_weight_groups(model.graph):
            if group.name not in self._before:
                continue
            zeros, distinct = self._before[group.name]
            w = group.array()
            if np.any(w[zeros] != 0):
                raise AssertionError(f"{group.name}: a pruned weight became non-zero")
            if self.phase == "centroids" and np.unique(w).size > distinct:
                raise AssertionError(f"{group.name}: more distinct values after retraining")
