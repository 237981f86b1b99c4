"""Per-layer sensitivity curves (Han et al. 2015, figure 6; 2016, section 3).

For each compressible weight, the model's output error with only that weight compressed:
once per sparsity (pruning alone, the paper's pruning curves) and once per k-means bit
width (quantization alone, at sparsity 0). Sizes come for every (sparsity, bits) pair from
`LayerSizes`, so the allocation can combine the two curves without running the model for
each pair.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from dc_onnx.budget.calibration import Calibration
from dc_onnx.budget.candidates import BITS, SPARSITIES, LayerSizes, Setting
from dc_onnx.budget.simulate import Simulator
from dc_onnx.layers import AnalysedWeight
from dc_onnx.quantize import Init, prune_array, quantize

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LayerSensitivity:
    group: AnalysedWeight
    sizes: LayerSizes
    # Measured points only: a sweep stops once the error is beyond any budget in play.
    bits_error: dict[int, float]  # k-means bits -> error, no pruning
    sparsity_error: dict[float, float]  # sparsity -> error, no quantization

    @property
    def name(self) -> str:
        return self.group.name

    @property
    def weight(self) -> str:
        return str(self.group.weight.name)

    def predicted_sq(self, setting: Setting) -> float:
        """Squared error of this layer at `setting`: pruning and quantization add as noise."""
        if setting.keep or setting.bits is None:
            return 0.0
        prune = self.sparsity_error.get(setting.sparsity, math.inf)
        return prune**2 + self.bits_error.get(setting.bits, math.inf) ** 2

    def candidates(self) -> list[Setting]:
        """The measured (sparsity, bits) pairs."""
        return [self.sizes.setting(s, b) for s in self.sparsity_error for b in self.bits_error]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight": self.weight,
            "kind": self.group.kind,
            "weights": int(self.sizes.array.size),
            "dense_bytes": self.sizes.dense_bytes,
            "bits_error": {str(b): e for b, e in self.bits_error.items()},
            "sparsity_error": {f"{s:g}": e for s, e in self.sparsity_error.items()},
            "bytes": {
                f"s={s:g},b={b}": self.sizes.bytes(self.sizes.setting(s, b))
                for s in SPARSITIES
                for b in BITS
            },
        }


@dataclasses.dataclass
class Analysis:
    layers: list[LayerSensitivity]
    calibration: Calibration  # the samples the curves were measured on
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.to_json(),
            "seconds": self.seconds,
            "bits": list(BITS),
            "sparsities": list(SPARSITIES),
            "layers": [layer.to_json() for layer in self.layers],
        }

    def format_table(self) -> str:
        head = ["layer", "weights", *[f"{b}b" for b in BITS], *[f"s{s:g}" for s in SPARSITIES[1:]]]
        rows = [head]
        for layer in self.layers:
            rows.append([
                layer.name, f"{layer.sizes.array.size:,}",
                *[_pct(layer.bits_error.get(b)) for b in BITS],
                *[_pct(layer.sparsity_error.get(s)) for s in SPARSITIES[1:]],
            ])  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        lines.append(
            "relative L2 output error with only that layer compressed: k-means bits (no "
            "pruning), then sparsity (no quantization)"
        )
        lines.append(f"calibration: {self.calibration.summary()}")
        lines.append(f"analysed in {self.seconds:.1f} s")
        return "\n".join(lines)


def _pct(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.2f}%" if x < 10 else ">1000%"


def analyze(
    groups: Sequence[AnalysedWeight],
    simulator: Simulator,
    calibration: Calibration,
    give_up: float | None = None,
    init: Init = "mse",
) -> Analysis:
    """Measure every weight's curves on `calibration` (a subset of the simulator's).

    With `give_up`, each sweep (bits downwards, sparsity upwards) stops after the first
    error above it: harsher settings would never be chosen, so they are not run.
    """
    start = time.perf_counter()
    layers = []
    for i, group in enumerate(groups, 1):
        name = str(group.weight.name)
        array = group.array()
        bits_error: dict[int, float] = {}
        for b in BITS:
            simulated = quantize(array, b, 0.0, init)
            bits_error[b] = simulator.error({name: simulated}, calibration).worst
            if give_up is not None and bits_error[b] > give_up:
                break
        sparsity_error = {0.0: 0.0}
        for s in SPARSITIES[1:]:
            pruned = prune_array(array, "sparsity", s)
            sparsity_error[s] = simulator.error({name: pruned}, calibration).worst
            if give_up is not None and sparsity_error[s] > give_up:
                break
        sizes = LayerSizes(group, array, init)
        layers.append(LayerSensitivity(group, sizes, bits_error, sparsity_error))
        logger.info(
            "sensitivity %d/%d %s: %s at 8 bits, %s at 50%% sparsity",
            i, len(groups), group.name, _pct(bits_error[8]), _pct(sparsity_error.get(0.5)),
        )  # fmt: skip
    return Analysis(layers, calibration, time.perf_counter() - start)
