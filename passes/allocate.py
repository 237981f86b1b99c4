"""allocate: per-layer settings chosen under an output-error budget (dc_onnx.budget).

Measures each weight's sensitivity curves on calibration inputs, chooses the sparsity,
k-means bits and index bits of every weight (or leaves it dense) so that the total bytes
are least and the simulated output error stays under `max_error`, and writes the choice
onto the weights as annotations (dc_onnx.layers.ANNOTATIONS). The prune, cluster and lower
passes that follow read them, so the same choice also sets the targets of retraining.
The analysis is kept: running the pass again (after `tighten`) only re-allocates.
"""

from __future__ import annotations

import logging
from typing import Any

import onnx_ir as ir

from dc_onnx.budget.allocate import Allocator
from dc_onnx.budget.calibration import Calibration
from dc_onnx.budget.candidates import Setting
from dc_onnx.budget.sensitivity import Analysis, LayerSensitivity, analyze
from dc_onnx.budget.simulate import Simulator
from dc_onnx.layers import annotate, find_weight_groups
from dc_onnx.pipeline import CompilerPass
from dc_onnx.quantize import Init

logger = logging.getLogger(__name__)

# Samples the per-layer curves are measured on; the joint check uses all of them.
ANALYSIS_SAMPLES = 8
# A sweep stops past this error: a setting that alone costs several budgets is never chosen.
GIVE_UP_FACTOR, GIVE_UP_MIN = 4.0, 0.1


class AllocatePass(CompilerPass):
    name = "allocate"

    def __init__(
        self,
        calibration: Calibration,
        max_error: float,
        analysis_samples: int = ANALYSIS_SAMPLES,
        init: Init = "mse",
    ) -> None:
        super().__init__()
        if not max_error > 0:
            raise ValueError(f"the error budget must be > 0, got {max_error}")
        self.calibration = calibration
        self.max_error = max_error
        self.budget = max_error  # what the allocation aims under; `tighten` lowers it
        self.analysis_samples = analysis_samples
        self.init: Init = init  # the k-means start the cluster pass will use
        self.analysis: Analysis | None = None

    def tighten(self, factor: float) -> None:
        self.budget *= factor

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        groups = find_weight_groups(model.graph)
        if not groups:
            self.stats = {"layers": {}}
            return ir.passes.PassResult(model, False)
        simulator = Simulator(model, groups, self.calibration)
        if self.analysis is None:
            subset = self.calibration.head(self.analysis_samples)
            give_up = max(GIVE_UP_FACTOR * self.max_error, GIVE_UP_MIN)
            self.analysis = analyze(groups, simulator, subset, give_up, self.init)
        else:  # a retry on a fresh copy of the model: same weights, new graph objects
            by_weight = {str(g.weight.name): g for g in groups}
            for layer in self.analysis.layers:
                layer.group = by_weight[layer.weight]
        allocation = Allocator(self.analysis, simulator).allocate(self.budget)
        layers: dict[str, dict[str, Any]] = {}
        for layer in self.analysis.layers:
            setting = allocation.settings[layer.weight]
            if setting.keep or setting.bits is None:
                annotate(layer.group.weight, keep=1)
            else:
                annotate(
                    layer.group.weight,
                    sparsity=setting.sparsity,
                    bits=setting.bits,
                    index_bits=setting.index_bits,
                )
            layers[layer.name] = _layer_stats(layer, setting)
        kept = [name for name, s in layers.items() if s["setting"].get("keep")]
        if kept:
            logger.info("left dense (its bytes saved are not worth its error): %s", ", ".join(kept))
        self.stats = {
            "max_error": self.max_error,
            "budget": self.budget,
            "calibration": self.calibration.to_json(),
            "analysis_samples": self.analysis.calibration.samples,
            "analysis_seconds": self.analysis.seconds,
            "analysis_runs": self.analysis.runs,
            **allocation.to_json(),
            "layers": layers,
        }
        return ir.passes.PassResult(model, True)


def _layer_stats(layer: LayerSensitivity, setting: Setting) -> dict[str, Any]:
    return {
        "setting": setting.to_json(),
        "estimated_bytes": layer.sizes.bytes(setting),
        "dense_bytes": layer.sizes.dense_bytes,
        "predicted_error": layer.predicted_sq(setting) ** 0.5,
        "bits_error": {str(b): e for b, e in layer.bits_error.items()},
        "sparsity_error": {f"{s:g}": e for s, e in layer.sparsity_error.items()},
        "predicted": layer.predicted_points(),
    }
