"""Per-layer sensitivity curves (Han et al. 2015, figure 6; 2016, section 3).

For each compressible weight, the model's output error with only that weight compressed:
once per sparsity (pruning alone, the paper's pruning curves) and once per k-means bit
width (quantization alone, at sparsity 0). Sizes come for every (sparsity, bits) pair from
`LayerSizes`, so the allocation can combine the two curves without running the model for
each pair.

A model run per point is the cost (a 50-layer model has 900 points). So by default only a
few anchor points per weight are run and the rest are predicted from the weight-space error
of each setting (`Curve`); the allocation then runs the predicted points it picks
(`Analysis.measure_settings`), so every setting it chooses rests on measured points.
`exact` measures every point.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dc_onnx.budget.calibration import Calibration
from dc_onnx.budget.candidates import (
    BITS,
    FLOAT16,
    SPARSITIES,
    LayerSizes,
    Setting,
    float16_values,
)
from dc_onnx.budget.integer import IntegerSizes, is_integer, sizes_and_perturbations
from dc_onnx.budget.simulate import Simulator
from dc_onnx.layers import AnalysedWeight, StoredWeight, row_axis_of
from dc_onnx.quantize import Init, compensate_pruning, prune_array, quantize

logger = logging.getLogger(__name__)


Knob = int | float  # k-means bits of the quantization curve, sparsity of the pruning curve


@dataclasses.dataclass
class Curve:
    """One weight's output error against one knob (bits, or sparsity).

    `perturbation` holds, for every knob value, the relative weight-space error
    ||W - Q(W)|| / ||W|| of that setting, which costs no model run. Points in `measured`
    come from the model; the others are predicted from the measured ones: for small
    perturbations the output error grows close to linearly with the weight's, so between two
    measured points the error follows the power law through them (a straight line in log-log),
    and beyond the outermost one it follows the slope of the last two (at least linear, at
    most cubic). The allocation measures every predicted point it picks, so a wrong guess
    costs runs, never the budget.
    """

    perturbation: dict[Knob, float]
    measured: dict[Knob, float] = dataclasses.field(default_factory=dict)

    def error(self, knob: Knob) -> float:
        if knob in self.measured:
            return self.measured[knob]
        return self.predict(knob)

    def predict(self, knob: Knob) -> float:
        if knob not in self.perturbation:
            return math.inf  # not a candidate of this weight (an integer one's sparsity)
        x = self.perturbation[knob]
        if x <= 0:
            return 0.0  # the setting changes nothing
        points = sorted(
            (self.perturbation[k], e) for k, e in self.measured.items() if k in self.perturbation
        )  # a cached point of a knob this weight lacks (float16 past its range) is no guide
        points = [(px, e) for px, e in points if px > 0]
        if not points:
            return math.inf  # nothing measured: never chosen unmeasured
        below = [p for p in points if p[0] <= x]
        above = [p for p in points if p[0] > x]
        if below and above:
            (x0, e0), (x1, e1) = below[-1], above[0]
            if e0 <= 0 or e1 <= 0 or x0 == x1:  # no power law through a zero: a straight line
                return e0 + (e1 - e0) * (x - x0) / (x1 - x0)
            slope = math.log(e1 / e0) / math.log(x1 / x0)
            return e0 * (x / x0) ** slope
        if above:  # below every measured point: linear towards zero
            x1, e1 = above[0]
            return e1 * x / x1
        xn, en = below[-1]
        slope = 1.0
        if len(below) >= 2 and below[-2][1] > 0 and en > 0 and below[-2][0] < xn:
            slope = math.log(en / below[-2][1]) / math.log(xn / below[-2][0])
        return en * (x / xn) ** min(max(slope, 1.0), 3.0)

    def full(self) -> dict[Knob, float]:
        """Every knob's error, measured or predicted."""
        return {k: self.error(k) for k in self.perturbation}


@dataclasses.dataclass
class LayerSensitivity:
    group: AnalysedWeight
    sizes: LayerSizes
    bits: Curve  # k-means bits -> error, no pruning
    sparsity: Curve  # sparsity -> error, no quantization; 0 is measured as 0

    @property
    def name(self) -> str:
        return self.group.name

    @property
    def weight(self) -> str:
        return str(self.group.weight.name)

    @property
    def bits_error(self) -> dict[int, float]:
        """Measured or predicted error at every bit width."""
        return {int(b): e for b, e in self.bits.full().items()}

    @property
    def sparsity_error(self) -> dict[float, float]:
        """Measured or predicted error at every sparsity."""
        return {float(s): e for s, e in self.sparsity.full().items()}

    def predicted_sq(self, setting: Setting) -> float:
        """Squared error of this layer at `setting`: pruning and quantization add as noise."""
        if setting.keep or setting.bits is None:
            return 0.0
        return self.sparsity.error(setting.sparsity) ** 2 + self.bits.error(setting.bits) ** 2

    def unmeasured(self, setting: Setting) -> tuple[int | None, float | None]:
        """The bits and the sparsity of `setting` whose errors are predicted (else None)."""
        if setting.keep or setting.bits is None:
            return None, None
        bits = None if setting.bits in self.bits.measured else setting.bits
        sparsity = None if setting.sparsity in self.sparsity.measured else setting.sparsity
        return bits, sparsity

    @property
    def unobserved(self) -> bool:
        """The calibration inputs do not reach this weight: every point measured away from
        the original (the harshest anchors included) left the outputs bit for bit the same,
        as for the weights of an If branch they never take, or a recurrent weight they only
        ever multiply by a zero state. No setting can then be vouched for."""
        # Only points that change the weight count: an integer weight with few values is
        # unchanged at 5 bits, and the unchanged outputs then prove nothing.
        points = [
            e
            for curve in (self.bits, self.sparsity)
            for k, e in curve.measured.items()
            if curve.perturbation.get(k)
        ]
        return bool(points) and all(e == 0.0 for e in points)

    def candidates(self) -> list[tuple[Setting, float]]:
        """Every (sparsity, bits) pair whose error is finite (measured or predicted), with its
        `predicted_sq`; float16 storage at sparsity 0 only. Each curve is read once here: the
        allocation asks for every layer's candidates at each of its choices."""
        bits = {b: e for b, e in self.bits_error.items() if math.isfinite(e)}
        sparsities = {s: e for s, e in self.sparsity_error.items() if math.isfinite(e)}
        return [
            (self.sizes.setting(s, b), es**2 + eb**2)
            for s, es in sparsities.items()
            for b, eb in bits.items()
            if b != FLOAT16 or s == 0.0
        ]

    def measured_points(self) -> dict[str, dict[Knob, float]]:
        return {"bits": dict(self.bits.measured), "sparsity": dict(self.sparsity.measured)}

    def predicted_points(self) -> dict[str, list[Any]]:
        """The points of `bits_error` and `sparsity_error` that were predicted, not measured."""
        return {
            "bits": [b for b in self.bits.perturbation if b not in self.bits.measured],
            "sparsity": [s for s in self.sparsity.perturbation if s not in self.sparsity.measured],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight": self.weight,
            "kind": self.group.kind,
            "weights": int(self.sizes.array.size),
            "dense_bytes": self.sizes.dense_bytes,
            "bits_error": {str(b): e for b, e in self.bits_error.items()},
            "sparsity_error": {f"{s:g}": e for s, e in self.sparsity_error.items()},
            "predicted": self.predicted_points(),
            "bytes": {
                f"s={s:g},b={b}": self.sizes.bytes(self.sizes.setting(s, int(b)))
                for s in self.sparsity.perturbation
                for b in self.bits.perturbation
                if b != FLOAT16 or s == 0.0
            },
        }


@dataclasses.dataclass
class Analysis:
    layers: list[LayerSensitivity]
    calibration: Calibration  # the samples the curves were measured on
    seconds: float  # measuring the curves, the allocation's extra points included
    exact: bool = False  # every point measured (else anchors, the rest predicted)
    runs: int = 0  # model runs so far
    init: Init = "mse"
    # error compensation's H per weight (dc_onnx.budget.activations); absent: plain rounding
    hessians: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    # every point measured so far, (weight, knob, point) -> error: a search that starts again
    # from an earlier view (`restore`) gets these back without running the model again
    known: dict[tuple[str, str, Knob], float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.to_json(),
            "seconds": self.seconds,
            "runs": self.runs,
            "exact": self.exact,
            "bits": list(BITS),  # k-means; bits_error also has FLOAT16 where it is a candidate
            "sparsities": list(SPARSITIES),
            "layers": [layer.to_json() for layer in self.layers],
        }

    def view(self) -> dict[str, dict[str, dict[Knob, float]]]:
        """Which points count as measured now (weight -> knob -> point -> error): what the
        predictions, and so the choices, rest on."""
        return {layer.weight: layer.measured_points() for layer in self.layers}

    def restore(self, view: Mapping[str, Mapping[str, Mapping[Knob, float]]]) -> None:
        """Make exactly the points of `view` count as measured (the rest are predicted)."""
        for layer in self.layers:
            layer.bits.measured = dict(view[layer.weight]["bits"])
            layer.sparsity.measured = dict(view[layer.weight]["sparsity"])

    def recall_all(self) -> None:
        """Make every point measured so far count as measured."""
        by_weight = {layer.weight: layer for layer in self.layers}
        for (weight, knob, value), error in self.known.items():
            layer = by_weight[weight]
            (layer.bits if knob == "bits" else layer.sparsity).measured[value] = error

    def measure(
        self, layer: LayerSensitivity, simulator: Simulator, knob: str, value: Knob
    ) -> float:
        """Measure one point of one curve (`knob` "bits" or "sparsity") and keep it."""
        curve = layer.bits if knob == "bits" else layer.sparsity
        key = (layer.weight, knob, value)
        if key in self.known:  # measured before a `restore`: the same run, not run again
            curve.measured[value] = self.known[key]
            return self.known[key]
        start = time.perf_counter()
        array = layer.sizes.array
        row_axis = row_axis_of(layer.sizes.group)  # row scales where the compiler takes them
        hessian = self.hessians.get(layer.weight)
        if isinstance(layer.sizes, IntegerSizes):  # requantized in place: no H, no rows
            bits = int(value) if knob == "bits" else None
            simulated = layer.sizes.array_at(bits, 0.0 if bits else float(value))
        elif knob == "bits" and value == FLOAT16:
            simulated = float16_values(array)
        elif knob == "bits":
            simulated = quantize(array, int(value), 0.0, self.init, row_axis=row_axis,
                                 hessian=hessian)  # fmt: skip
        else:
            simulated = prune_array(array, "sparsity", float(value))
            simulated = compensate_pruning(array, simulated, row_axis, hessian)
        error = simulator.error({layer.weight: simulated}, self.calibration).worst
        curve.measured[value] = self.known[key] = error
        self.runs += 1
        self.seconds += time.perf_counter() - start
        return error

    def measure_settings(self, settings: Mapping[str, Setting], simulator: Simulator) -> int:
        """Measure the predicted points that `settings` (weight -> setting) rely on; returns
        how many were measured."""
        points: list[tuple[LayerSensitivity, str, Knob]] = []
        for layer in self.layers:
            setting = settings.get(layer.weight)
            if setting is None:
                continue
            bits, sparsity = layer.unmeasured(setting)
            if bits is not None:
                points.append((layer, "bits", bits))
            if sparsity is not None:
                points.append((layer, "sparsity", sparsity))
        if points:  # each is a run of the model on the analysis samples: it can take minutes
            logger.info(
                "allocation: measuring %d predicted point(s) the choice rests on", len(points)
            )
        for layer, knob, value in points:
            self.measure(layer, simulator, knob, value)
        return len(points)

    def format_table(self) -> str:
        bits = (FLOAT16, *BITS)
        head = ["layer", "weights", "f16", *[f"{b}b" for b in BITS],
                *[f"s{s:g}" for s in SPARSITIES[1:]]]  # fmt: skip
        rows = [head]
        for layer in self.layers:
            rows.append([
                layer.name, f"{layer.sizes.array.size:,}",
                *[_point(layer.bits, b) for b in bits],
                *[_point(layer.sparsity, s) for s in SPARSITIES[1:]],
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
            "relative L2 output error with only that layer compressed: float16 storage (f16), "
            "k-means bits (no pruning), then sparsity (no quantization)"
        )
        if not self.exact:
            lines.append(
                "~ marks a predicted point (from the weight-space error and the measured "
                "points); --exact measures them all"
            )
        lines.append(f"calibration: {self.calibration.summary()}")
        lines.append(f"analysed in {self.seconds:.1f} s ({self.runs} model runs)")
        return "\n".join(lines)


def _point(curve: Curve, knob: Knob) -> str:
    if knob in curve.measured:
        return _pct(curve.measured[knob])
    value = curve.predict(knob)
    return "~" + _pct(value) if math.isfinite(value) else "-"


# Above this many seconds of analysis still to come, the compile says once how to go faster.
SLOW_ANALYSIS_S = 300.0


def _time_left(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _pct(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.2f}%" if x < 10 else ">1000%"


# Points measured per weight before the allocation asks for more, in the range a budget of
# 1-5% uses. Two pruning points bracket the sparsities chosen most; on the models of
# docs/budget.md they leave fewer points under-predicted by more than 2x than one at 0.5.
ANCHOR_BITS = (5,)
ANCHOR_SPARSITIES = (0.3, 0.7)
# The quantization curve's weight-space error is taken on a sample of this many weights.
_PERTURBATION_SAMPLE = 1 << 15
FLOAT16_MAX = float(np.finfo(np.float16).max)  # past it a weight would turn infinite


def perturbations(array: np.ndarray, init: Init) -> tuple[dict[Knob, float], dict[Knob, float]]:
    """Relative weight-space error ||W - Q(W)|| / ||W|| at each bit width (k-means on a
    sample), at float16 for a float32 weight within float16's range, and at each sparsity
    (exact, from the sorted magnitudes)."""
    flat = array.reshape(-1).astype(np.float64)
    flat = flat[np.isfinite(flat)]
    energy = float(np.dot(flat, flat))
    if energy == 0:
        return {b: 0.0 for b in BITS}, {s: 0.0 for s in SPARSITIES}
    squares = np.sort(flat * flat)
    cumulative = np.concatenate([[0.0], np.cumsum(squares)])
    sparsity = {s: math.sqrt(cumulative[round(s * flat.size)] / energy) for s in SPARSITIES}
    sample = flat
    if flat.size > _PERTURBATION_SAMPLE:
        rng = np.random.default_rng(0)
        sample = flat[rng.choice(flat.size, _PERTURBATION_SAMPLE, replace=False)]
    sample_energy = float(np.dot(sample, sample)) or 1.0
    bits: dict[Knob, float] = {}
    for b in BITS:
        quantized = quantize(sample.astype(np.float32), b, 0.0, init).astype(np.float64)
        bits[b] = math.sqrt(float(np.sum((quantized - sample) ** 2)) / sample_energy)
    if array.dtype == np.float32 and float(np.abs(flat).max()) <= FLOAT16_MAX:
        halved = sample.astype(np.float16).astype(np.float64)
        bits[FLOAT16] = math.sqrt(float(np.sum((halved - sample) ** 2)) / sample_energy)
    return bits, sparsity


def analyze(
    groups: Sequence[AnalysedWeight],
    simulator: Simulator,
    calibration: Calibration,
    give_up: float | None = None,
    init: Init = "mse",
    exact: bool = False,
    known: Mapping[str, Mapping[str, Mapping[float, float]]] | None = None,
    hessians: Mapping[str, np.ndarray] | None = None,
) -> Analysis:
    """Every weight's curves on `calibration` (a subset of the simulator's).

    By default only the anchor points are measured and the rest predicted (see Curve); the
    allocation then measures the predicted points it picks (`Analysis.measure_settings`).
    With `exact`, every point is measured. With `give_up`, each sweep (bits downwards,
    sparsity upwards; the anchors too) stops after the first error above it: harsher
    settings would never be chosen, so they are not run. `known` (weight -> "bits" /
    "sparsity" -> point -> error, from dc_onnx.budget.cache) holds points measured before:
    they count as measured and are not run again. `hessians` (weight -> H) makes the
    points of those weights error-compensating, as the prune and cluster passes will be.
    """
    start = time.perf_counter()
    analysis = Analysis([], calibration, 0.0, exact=exact, init=init, hessians=hessians or {})
    hinted = False
    for i, group in enumerate(groups, 1):
        array = group.array()
        sizes: LayerSizes
        if is_integer(group):
            assert isinstance(group, StoredWeight)
            sizes, bits_x, sparsity_x = sizes_and_perturbations(group, array)
        else:
            sizes = LayerSizes(group, array, init)
            bits_x, sparsity_x = perturbations(array, init)
        layer = LayerSensitivity(group, sizes, Curve(bits_x), Curve(sparsity_x, {0.0: 0.0}))
        analysis.layers.append(layer)
        before = (known or {}).get(layer.weight, {})
        layer.bits.measured.update({int(b): e for b, e in before.get("bits", {}).items()})
        layer.sparsity.measured.update(before.get("sparsity", {}))
        for knob, curve, points in (
            ("bits", layer.bits, (FLOAT16, *BITS) if exact else ANCHOR_BITS),
            ("sparsity", layer.sparsity, SPARSITIES[1:] if exact else ANCHOR_SPARSITIES),
        ):
            for point in points:
                if point not in curve.perturbation:
                    continue  # not a candidate (an integer weight without a zero point)
                if point in curve.measured:
                    error = curve.measured[point]
                else:
                    error = analysis.measure(layer, simulator, knob, point)
                if give_up is not None and error > give_up:
                    break
        elapsed = time.perf_counter() - start
        left = elapsed / i * (len(groups) - i)
        # The allocation that follows runs the model about as many times again.
        eta = f" (about {_time_left(left)} left in the analysis)" if left else ""
        logger.info(
            "sensitivity %d/%d %s: %s at 5 bits, %s at 50%% sparsity%s",
            i, len(groups), group.name, _pct(layer.bits.error(5)),
            _pct(layer.sparsity.error(0.5)), eta,
        )  # fmt: skip
        if left > SLOW_ANALYSIS_S and analysis.runs and not hinted:
            hinted = True
            logger.info(
                "the analysis runs the model %d times so far, %.1f s a run on %d calibration "
                "sample(s), and the allocation runs it again; faster: fewer samples "
                "(--analysis-samples), smaller inputs (--input-shape, for synthesized ones) "
                "or a manual compile (--sparsity / --bits-conv / --bits-fc), which runs it once",
                analysis.runs, elapsed / analysis.runs, calibration.samples,
            )  # fmt: skip
    analysis.seconds = time.perf_counter() - start
    return analysis
