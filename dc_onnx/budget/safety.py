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
from typing import TYPE_CHECKING

from dc_onnx.budget.allocate import AIM, Allocator
from dc_onnx.budget.candidates import KEEP, Setting

if TYPE_CHECKING:
    from dc_onnx.passes.allocate import AllocatePass

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


class SafetyNet:
    """Keeps the weights most responsible for a compiled model over budget exact
    (see the module docstring): as many as the simulation asks for, then twice as many
    at each further miss, up to every compressed weight."""

    def __init__(self, allocate: AllocatePass, limit: float) -> None:
        self.allocate = allocate
        self.limit = limit
        self.ranked: list[Contribution] | None = None
        self.count = 0

    def keep_more(self, measured: float) -> bool:
        """Mark more weights to keep exact; False when there are none left to keep."""
        allocator, allocation = self.allocate.allocator, self.allocate.allocation
        if allocator is None or allocation is None:
            return False  # nothing was analysed: only lossless weights were compressed
        if self.ranked is None:
            total, self.ranked = rank(allocator, allocation.settings)
            self.count = how_many(allocator, allocation.settings, self.ranked, self.limit)
            logger.info(
                "compiled model at %.4g (simulated %.4g), over the budget %.4g: keeping the %d "
                "weight(s) that contribute most exact", measured, total, self.limit, self.count,
            )  # fmt: skip
        elif self.count >= len(self.ranked):
            return False
        else:
            self.count = min(2 * self.count, len(self.ranked))
            logger.info(
                "compiled model still at %.4g, over the budget %.4g: keeping %d weight(s) exact",
                measured, self.limit, self.count,
            )  # fmt: skip
        if not self.ranked:
            return False
        self.allocate.keep_exact({
            c.weight: (
                f"safety net: the compiled model measured {measured:.4g}, over the budget "
                f"{self.limit:g}; this weight's contribution (simulated, leave-one-out) was "
                f"{c.contribution:.4g}"
            )
            for c in self.ranked[: self.count]
            if c.weight not in self.allocate.kept_exact
        })  # fmt: skip
        return True
