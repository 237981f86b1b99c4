"""allocate: per-layer settings chosen under an output-error budget (dc_onnx.budget).

Measures each weight's sensitivity curves on calibration inputs, chooses the sparsity,
k-means bits and index bits of every weight (or leaves it dense) so that the total bytes
are least and the simulated output error stays under `max_error`, and writes the choice
onto the weights as annotations (dc_onnx.layers.ANNOTATIONS). The prune, cluster and lower
passes that follow read them, so the same choice also sets the targets of retraining.
Every weight that can lose precision is analysed: layer weights, float storage-form
weights (LSTM/GRU, weights lifted out of If/Loop bodies) and integer (already quantized)
ones, which the requantize pass then rewrites in place; "left as it is" keeps an integer
weight lossless, so it gets no `keep` annotation (that would leave it uncoded).

The analysis is kept: running the pass again (after `tighten`) only re-allocates, and
after `keep_exact` (the compiler's safety net) it keeps the last choice with the named
weights left exact.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx_ir as ir

from dc_onnx.budget import cache
from dc_onnx.budget.activations import LayerInputs
from dc_onnx.budget.allocate import Allocation, Allocator
from dc_onnx.budget.calibration import Calibration
from dc_onnx.budget.candidates import KEEP, Setting
from dc_onnx.budget.integer import is_integer
from dc_onnx.budget.sensitivity import Analysis, LayerSensitivity, analyze
from dc_onnx.budget.simulate import Simulator
from dc_onnx.layers import DEFAULT_MIN_ELEMENTS, annotate, find_analysed_weights
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
        min_weight_elements: int = DEFAULT_MIN_ELEMENTS,
        layer_inputs: LayerInputs | None = None,
    ) -> None:
        super().__init__()
        if not max_error > 0:
            raise ValueError(f"the error budget must be > 0, got {max_error}")
        self.calibration = calibration
        self.max_error = max_error
        self.budget = max_error  # what the allocation aims under; `tighten` lowers it
        self.analysis_samples = analysis_samples
        self.init: Init = init  # the k-means start the cluster pass will use
        self.min_weight_elements = min_weight_elements  # storage weights from this size
        self.layer_inputs = layer_inputs  # error compensation's H (None: plain rounding)
        self.analysis: Analysis | None = None
        self._warned_unobserved = False  # the warning is given once, not on every retry
        self._cache: Path | None = None  # dc_onnx.budget.cache: points kept between compiles
        self.allocator: Allocator | None = None  # of the last run: simulates its choice
        self.allocation: Allocation | None = None  # the last choice
        self.kept_exact: dict[str, str] = {}  # weight -> why the safety net keeps it exact

    def tighten(self, factor: float) -> None:
        self.budget *= factor

    def keep_exact(self, reasons: dict[str, str]) -> None:
        """From the next run on: the last choice, with these weights left exact."""
        self.kept_exact.update(reasons)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        groups = find_analysed_weights(model.graph, self.min_weight_elements)
        if not groups:
            self.stats = {"layers": {}}
            return ir.passes.PassResult(model, False)
        simulator = Simulator(model, groups, self.calibration)
        hessians = None
        if self.layer_inputs is not None:  # integer weights are requantized without H
            floats = [g for g in groups if not is_integer(g)]
            hessians = self.layer_inputs.collect(model, floats).by_weight
        if self.analysis is None:
            subset = self.calibration.head(self.analysis_samples)
            give_up = max(GIVE_UP_FACTOR * self.max_error, GIVE_UP_MIN)
            self._cache = cache.cache_path(model, groups, subset, self.init, hessians)
            known = cache.load(self._cache)
            self.analysis = analyze(
                groups, simulator, subset, give_up, self.init, known=known, hessians=hessians
            )
        else:  # a retry on a fresh copy of the model: same weights, new graph objects
            by_weight = {str(g.weight.name): g for g in groups}
            for layer in self.analysis.layers:
                layer.group = by_weight[layer.weight]
        self.allocator = Allocator(self.analysis, simulator)
        if self.kept_exact and self.allocation is not None:
            settings = {
                w: KEEP if w in self.kept_exact else s for w, s in self.allocation.settings.items()
            }
            allocation = self.allocator.fixed(settings)
        else:
            allocation = self.allocator.allocate(self.budget)
        self.allocation = allocation
        cache.save(self._cache, {la.weight: la.measured_points() for la in self.analysis.layers})
        layers: dict[str, dict[str, Any]] = {}
        for layer in self.analysis.layers:
            setting = allocation.settings[layer.weight]
            if (setting.keep or setting.bits is None) and is_integer(layer.group):
                pass  # lossless: the lower pass codes it as it is
            elif setting.keep or setting.bits is None:
                annotate(layer.group.weight, keep=1)
            elif setting.float16:  # not a layer either: passes/half.py stores it
                annotate(layer.group.weight, keep=1, float16=1)
            else:
                annotate(
                    layer.group.weight,
                    sparsity=setting.sparsity,
                    bits=setting.bits,
                    index_bits=setting.index_bits,
                )
            layers[layer.name] = _layer_stats(layer, setting)
        unobserved = [layer.name for layer in self.analysis.layers if layer.unobserved]
        if unobserved and not self._warned_unobserved:
            self._warned_unobserved = True
            logger.warning(
                "warning: the calibration inputs do not reach %d weight(s), left exact: %s "
                "(an If branch they never take, or a recurrent weight they only multiply by "
                "a zero state); give --calibration inputs that exercise them to compress them",
                len(unobserved),
                ", ".join(unobserved),
            )
        kept = [
            n
            for n, s in layers.items()
            if s["setting"].get("keep") and n not in unobserved and s["kind"] != "integer"
        ]
        if kept:
            logger.info("left dense (its bytes saved are not worth its error): %s", ", ".join(kept))
        halved = [n for n, s in layers.items() if s["setting"].get("float16")]
        if halved:
            logger.info("stored as float16 (8-bit codes would cost too much error): %s",
                        ", ".join(halved))  # fmt: skip
        self.stats = {
            "max_error": self.max_error,
            "budget": self.budget,
            "calibration": self.calibration.to_json(),
            "analysis_samples": self.analysis.calibration.samples,
            "analysis_seconds": self.analysis.seconds,
            "analysis_runs": self.analysis.runs,
            **allocation.to_json(),
            "kept_exact": dict(self.kept_exact),
            "compensated": sorted(hessians or {}),
            "unobserved": unobserved,
            "layers": layers,
        }
        return ir.passes.PassResult(model, True)


def _layer_stats(layer: LayerSensitivity, setting: Setting) -> dict[str, Any]:
    return {
        "weight": layer.weight,
        "kind": layer.group.kind,
        "setting": setting.to_json(),
        "estimated_bytes": layer.sizes.bytes(setting),
        "dense_bytes": layer.sizes.dense_bytes,
        "predicted_error": layer.predicted_sq(setting) ** 0.5,
        "bits_error": {str(b): e for b, e in layer.bits_error.items()},
        "sparsity_error": {f"{s:g}": e for s, e in layer.sparsity_error.items()},
        "predicted": layer.predicted_points(),
    }
