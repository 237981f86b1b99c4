"""The budget's last safety net: weights kept exact until the compiled model is within budget.

When the compiled model still measures over budget after the allocation was tightened,
the weights responsible are found by measurement and kept exact (left as they are, in
their own dtype). Each compressed weight's contribution is measured leave-one-out: the
simulated error with every chosen setting applied, minus the error with that one weight
restored. The compiler then keeps the largest contributors exact, as many as the
simulation says are needed, recompiles and measures again, doubling the number kept
until the compiled model is within budget or every weight is exact. Only a model that
stays over budget with every weight exact ends over budget.
"""

from __future__ import annotations

import dataclasses
import logging

from dc_onnx.budget.allocate import AIM, Allocator
from dc_onnx.budget.candidates import KEEP, Setting

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Contribution:
    weight: str
    error_without: float  # simulated error with this weight restored, the others compressed
    contribution: float  # simulated error of the whole choice minus error_without


def rank(allocator: Allocator, settings: dict[str, Setting]) -> tuple[float, list[Contribution]]:
    """The whole choice's simulated error, and the compressed weights, largest
    contribution first (one simulation per compressed weight)."""
    overrides = allocator.overrides(settings)
    total = allocator.simulator.error(overrides).worst
    ranked = []
    for weight in overrides:
        rest = {k: v for k, v in overrides.items() if k != weight}
        without = allocator.simulator.error(rest).worst
        ranked.append(Contribution(weight, without, total - without))
    ranked.sort(key=lambda c: (-c.contribution, c.error_without))
    return total, ranked


def how_many(
    allocator: Allocator, settings: dict[str, Setting], ranked: list[Contribution], limit: float
) -> int:
    """The fewest leading weights of `ranked` whose restoring simulates within the aim
    (AIM x limit), found by doubling; len(ranked) when none does sooner."""
    count = 1
    while count < len(ranked):
        kept = {c.weight for c in ranked[:count]}
        trial = {w: KEEP if w in kept else s for w, s in settings.items()}
        error = allocator.simulator.error(allocator.overrides(trial)).worst
        logger.info("safety net: %d weight(s) kept exact simulate at %.4g", count, error)
        if error <= AIM * limit:
            return count
        count *= 2
    return len(ranked)
