"""Choosing per-layer settings under an output-error budget.

Error model: each layer's compression adds noise to the outputs, and independent noises add
in energy, so the predicted error is sqrt(sum over layers of e_prune(s)^2 + e_quant(b)^2),
read off the measured curves. A Lagrangian search picks, per layer, the candidate that
minimises bytes + lambda * error^2, with the smallest lambda that meets the target.

The prediction is only a guide: every choice is then simulated with all its weights
compressed at once, and the target is rescaled by measured / wanted until the simulated
error sits just under the budget (a choice over it aims lower, at AIM of the budget, and
faster while the error holds still; one within it aims higher, never lower), then bisected
between the largest target found within and the smallest found over. The cheapest choice
measured within budget wins.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from dc_onnx.budget.candidates import FLOAT16, KEEP, Setting, float16_values
from dc_onnx.budget.integer import IntegerSizes
from dc_onnx.budget.sensitivity import Analysis, LayerSensitivity
from dc_onnx.budget.simulate import OutputError, Simulator
from dc_onnx.layers import row_axis_of
from dc_onnx.quantize import quantize

logger = logging.getLogger(__name__)

# Simulated error aimed at, and accepted, as a fraction of the budget. The compiled model
# holds exactly the simulated weights (models/budget_fidelity.py), so it differs from the
# simulation only by float summation order: a choice that simulates just under the budget
# is accepted, and the rare compiled model that lands over it goes to the compiler's
# tightening and safety net (dc_onnx/budget/safety.py).
AIM = 0.9
ACCEPT = 0.999
MAX_ATTEMPTS = 14
# Over budget, the target falls by at most MIN_STEP per attempt, unless the error, still
# FAR_OVER budgets away, fell by less than STALLED of itself since the last attempt: then
# by MIN_STEP^2, ^3, ... A saturated classifier's outputs hold still until its top class
# flips, so its predicted errors sit orders of magnitude under what it simulates
# (ppocr-cls: 1e-6 against 0.8).
MIN_STEP = 0.25
STALLED = 0.5
FAR_OVER = 4.0
MILDEST_BITS = 8  # the k-means bits closest to leaving a weight exact


@dataclasses.dataclass
class Allocation:
    settings: dict[str, Setting]  # weight name -> setting
    predicted: float  # error predicted from the curves
    simulated: OutputError | None  # measured with every chosen weight compressed at once
    estimated_bytes: int  # of the compressible weights at these settings
    dense_bytes: int
    attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "predicted_error": self.predicted,
            "simulated_error": None if self.simulated is None else self.simulated.worst,
            "estimated_bytes": self.estimated_bytes,
            "dense_bytes": self.dense_bytes,
            "attempts": self.attempts,
        }


Option = tuple[int, float, Setting]  # bytes, predicted squared error, setting


def _options(layer: LayerSensitivity, half: bool = True) -> list[Option]:
    options = [(layer.sizes.dense_bytes, 0.0, KEEP)]
    if layer.unobserved:  # what the inputs never exercise stays exact (never "free")
        return options
    for setting, error_sq in layer.candidates():
        if half or not setting.float16:
            options.append((layer.sizes.bytes(setting), error_sq, setting))
    return options


def choose(
    layers: list[LayerSensitivity], target: float, fill: bool = False, half: bool = True
) -> dict[str, Setting]:
    """Per-layer settings of least total bytes whose predicted error is at most `target`;
    `half` False leaves float16 out."""
    table = [_options(layer, half) for layer in layers]
    arrays = _padded(table)
    limit = target**2
    chosen, total = _pick(table, arrays, 0.0)
    if total > limit:
        lo, hi = -6.0, 30.0  # log10 of lambda: bytes per unit of squared error
        best = _pick(table, arrays, 10.0**hi)[0]
        for _ in range(60):
            mid = (lo + hi) / 2
            candidate, total = _pick(table, arrays, 10.0**mid)
            if total <= limit:
                hi, best = mid, candidate
            else:
                lo = mid
        chosen = _fill(table, best, limit) if fill else best
    return {layer.weight: o[2] for layer, o in zip(layers, chosen, strict=True)}


def _pick(
    table: list[list[Option]], arrays: tuple[np.ndarray, np.ndarray], lam: float
) -> tuple[list[Option], float]:
    """Per layer the first option of least (bytes + lam * error, error), as
    `min(options, key=...)` would take it, for all layers at once (a search calls this
    thousands of times), and the total squared error, summed in layer order as `sum` would."""
    nbytes, error = arrays
    with np.errstate(invalid="ignore"):  # padding: inf + 0 * inf
        cost = nbytes + lam * error
    cost[np.isnan(cost)] = np.inf
    tied = cost == cost.min(axis=1, keepdims=True)
    least = np.where(tied, error, np.inf).min(axis=1, keepdims=True)
    index = np.argmax(tied & (error == least), axis=1).tolist()
    chosen = [opts[j] for opts, j in zip(table, index, strict=True)]
    return chosen, sum(o[1] for o in chosen)


def _padded(table: list[list[Option]]) -> tuple[np.ndarray, np.ndarray]:
    """Bytes and squared errors of every layer's options as arrays, padded with inf."""
    width = max(len(opts) for opts in table)
    nbytes = np.full((len(table), width), np.inf)
    error = np.full((len(table), width), np.inf)
    for i, opts in enumerate(table):
        nbytes[i, : len(opts)] = [o[0] for o in opts]
        error[i, : len(opts)] = [o[1] for o in opts]
    return nbytes, error


def _fill(table: list[list[Option]], chosen: list[Option], limit: float) -> list[Option]:
    """`chosen` with the error the Lagrangian choice leaves unused spent greedily.

    The Lagrangian choice only reaches the points on each layer's lower convex hull, so it
    stops where the next hull step would cross the limit, often well under it (the large
    word table of a text encoder doubles its error with each bit it gives up). Here, while
    a move fits, one layer at a time moves to whichever cheaper option saves the most bytes
    per unit of added squared error that still fits under `limit`.
    """
    nbytes, error = _padded(table)
    current = np.array([opts.index(o) for opts, o in zip(table, chosen, strict=True)])
    rows = np.arange(len(table))
    slack = limit - float(error[rows, current].sum())
    while True:
        with np.errstate(all="ignore"):  # padding (inf - inf) and free moves (x / 1e-300)
            saved = nbytes[rows, current][:, None] - nbytes
            extra = error - error[rows, current][:, None]
            fits = (saved > 0) & (extra <= slack)
            rate = np.where(fits, saved / np.maximum(extra, 1e-300), -np.inf)
        if not fits.any():
            break
        layer, option = np.unravel_index(int(np.argmax(rate)), rate.shape)
        slack -= float(extra[layer, option])
        current[layer] = option
    return [table[i][int(j)] for i, j in enumerate(current)]


def choose_measured(
    analysis: Analysis, simulator: Simulator, target: float, fill: bool = False, half: bool = True
) -> dict[str, Setting]:
    """`choose`, then measure the predicted curve points it picked and choose again, until
    the choice rests on measured points only (each round measures at least one new point).

    A weight left exact is measured too, at its mildest settings (8 bits, no pruning, and
    float16 where it has that candidate), if those points were only predicted: a prediction
    extrapolated from a harsh anchor can overstate it many times over, and an overstated
    point is never picked, so it would never be measured either (akiki-vad went from 1.66x
    to 4.49x with this and ACCEPT).
    """
    while True:
        settings = choose(analysis.layers, target, fill, half)
        if analysis.measure_settings(settings, simulator):
            continue
        mildest = [
            (layer, bits)
            for layer in analysis.layers
            if settings[layer.weight].keep
            for bits in ((MILDEST_BITS, FLOAT16) if half else (MILDEST_BITS,))
            if bits in layer.bits.perturbation and bits not in layer.bits.measured
        ]
        if not mildest:
            return settings
        logger.info(
            "allocation: measuring %d point(s) of weights left exact at their mildest settings",
            len(mildest),
        )
        for layer, bits in mildest:
            analysis.measure(layer, simulator, "bits", bits)


class Allocator:
    """Chooses, simulates and rescales (see the module docstring); caches the arrays."""

    def __init__(self, analysis: Analysis, simulator: Simulator) -> None:
        self.analysis = analysis
        self.simulator = simulator
        self._arrays: dict[tuple[str, Setting], np.ndarray] = {}

    def array(self, layer: LayerSensitivity, setting: Setting) -> np.ndarray:
        key = (layer.weight, setting)
        if key not in self._arrays:
            assert setting.bits is not None
            sizes = layer.sizes
            if setting.float16:
                self._arrays[key] = float16_values(sizes.array)
                return self._arrays[key]
            if isinstance(sizes, IntegerSizes):
                self._arrays[key] = sizes.array_at(setting.bits, setting.sparsity)
                return self._arrays[key]
            self._arrays[key] = quantize(
                sizes.array,
                setting.bits,
                setting.sparsity,
                sizes.init,
                row_axis=row_axis_of(sizes.group),
                hessian=self.analysis.hessians.get(layer.weight),
            )
        return self._arrays[key]

    def _evaluate(self, settings: dict[str, Setting]) -> tuple[OutputError, float, int]:
        predicted_sq, nbytes = 0.0, 0
        for layer in self.analysis.layers:
            setting = settings[layer.weight]
            predicted_sq += layer.predicted_sq(setting)
            nbytes += layer.sizes.bytes(setting)
        return self.simulator.error(self.overrides(settings)), math.sqrt(predicted_sq), nbytes

    def overrides(self, settings: dict[str, Setting]) -> dict[str, np.ndarray]:
        """The simulated arrays of the weights `settings` compresses."""
        return {
            layer.weight: self.array(layer, settings[layer.weight])
            for layer in self.analysis.layers
            if not settings[layer.weight].keep
        }

    def fixed(self, settings: dict[str, Setting]) -> Allocation:
        """`settings` as given, simulated."""
        dense = sum(layer.sizes.dense_bytes for layer in self.analysis.layers)
        measured, predicted, nbytes = self._evaluate(settings)
        attempt = {"fixed": True, "predicted_error": predicted,
                   "simulated_error": measured.worst, "estimated_bytes": nbytes}  # fmt: skip
        return Allocation(dict(settings), predicted, measured, nbytes, dense, [attempt])

    def allocate(self, budget: float) -> Allocation:
        """The search below twice, on the lower-hull choices and on the filled ones
        (`_fill`): the cheaper choice within budget wins. Neither wins everywhere: the
        filled choices sit closer to the target, which helps where one big layer moves
        the error in large steps (minilm-l3) but can send the search below a cheaper
        hull choice where the simulated error runs ahead of the prediction (ppocr-cls,
        silero-vad-sequence at the default budget: 15-24% larger filled).

        Where some weight has the float16 candidate, they run three times: without it,
        exactly as before it existed; with it, from the measured points the allocation
        started with, as if it had run first; and with it again, continuing from every
        point the searches without it measured. The searches are heuristic: what they
        find depends on the points measured along the way, and on models whose simulated
        error runs far ahead of the prediction each of the three wins somewhere (docs/
        budget.md, "Float16 for the layers 8 bits cannot hold"). So float16 never makes a
        result larger than the one found without it. A point measured by one search is
        not run again by another (`Analysis.known`); at the end every point counts."""
        dense = sum(layer.sizes.dense_bytes for layer in self.analysis.layers)
        best = Allocation(
            {layer.weight: KEEP for layer in self.analysis.layers}, 0.0, None, dense, dense
        )
        attempts: list[dict[str, Any]] = []
        seen: dict[tuple[Setting, ...], tuple[OutputError, float, int]] = {}
        families = [(False, True)]  # (float16 a candidate, from the starting points)
        if any(FLOAT16 in layer.bits.perturbation for layer in self.analysis.layers):
            families += [(True, True), (True, False)]
        start = without = self.analysis.view()
        for half, fresh in families:
            if half and fresh:
                without = self.analysis.view()
                self.analysis.restore(start)
            elif half:
                self.analysis.restore(without)
            for fill in (False, True):
                found = self._search(budget, fill, seen, attempts, half, fresh)
                if found is not None and found.estimated_bytes < best.estimated_bytes:
                    best = found
        self.analysis.recall_all()
        best.attempts = attempts
        return best

    def _search(
        self,
        budget: float,
        fill: bool,
        seen: dict[tuple[Setting, ...], tuple[OutputError, float, int]],
        attempts: list[dict[str, Any]],
        half: bool = True,
        fresh: bool = True,
    ) -> Allocation | None:
        """The cheapest choice found within budget (see the module docstring), if any."""
        layers = self.analysis.layers
        dense = sum(layer.sizes.dense_bytes for layer in layers)
        best: Allocation | None = None
        feasible, infeasible = 0.0, math.inf  # targets known to land within / over budget
        target = budget
        previous, stalled = math.inf, 0  # the last error over budget; steps it barely fell
        for _ in range(MAX_ATTEMPTS):
            settings = choose_measured(self.analysis, self.simulator, target, fill, half)
            key = tuple(settings[layer.weight] for layer in layers)
            repeat = key in seen  # another search simulated this choice already
            if not repeat:
                seen[key] = self._evaluate(settings)
            measured, predicted, nbytes = seen[key]
            worst = measured.worst
            ok = worst <= ACCEPT * budget
            attempts.append({
                "target": target, "fill": fill, "float16": half, "fresh": fresh,
                "repeat": repeat, "predicted_error": predicted, "simulated_error": worst,
                "estimated_bytes": nbytes, "within": ok,
            })  # fmt: skip
            if not repeat:
                logger.info(
                    "allocation: target %.4g, predicted %.4g, simulated %.4g, %d bytes",
                    target, predicted, worst, nbytes,
                )  # fmt: skip
            if ok and (best is None or nbytes < best.estimated_bytes):
                best = Allocation(settings, predicted, measured, nbytes, dense)
            if ok:
                feasible = max(feasible, target)
            else:
                infeasible = min(infeasible, target)
            if infeasible / max(feasible, 1e-12) < 1.05:
                break  # the boundary is found to within 5%
            if feasible and infeasible < math.inf:
                target = math.sqrt(feasible * infeasible)  # bisect between the two
            elif ok:  # within: up towards the budget, never down
                target *= float(np.clip(ACCEPT * budget / max(worst, 1e-12), 1.0, 4.0))
            else:  # over: down to the aim, faster while the error will not fall
                far = worst > FAR_OVER * budget
                stalled = stalled + 1 if far and worst > STALLED * previous else 0
                previous = worst
                step = float(np.clip(AIM * budget / worst, MIN_STEP, 1.0))
                target *= min(step, MIN_STEP ** (1 + stalled)) if stalled else step
        return best
