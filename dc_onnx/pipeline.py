"""The pass manager: runs compiler passes in order, timing them and collecting their stats.

Passes are onnx-ir passes (`ir.passes.PassBase`): each declares whether it works in place,
returns `PassResult(model, modified)` and checks its pre- and post-conditions in
`requires` / `ensures`. A failure is reported with the name of the pass and of the passes
that ran before it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import onnx_ir as ir

from dc_onnx.errors import CompileError

logger = logging.getLogger(__name__)


class CompilerPass(ir.passes.InPlacePass):
    """An in-place pass with a name and the statistics of its last run.

    `stats` is a dict, or a dataclass when a later step reads it (found with `stats_of`).
    """

    name = "pass"

    def __init__(self) -> None:
        super().__init__()
        self.stats: Any = {}

    def __str__(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class PassRecord:
    name: str
    seconds: float
    modified: bool
    stats: Any  # the pass's `stats`: a dict or a dataclass

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


S = TypeVar("S")


def stats_of(records: Sequence[PassRecord], kind: type[S]) -> S | None:
    """The stats of the last pass whose stats are a `kind`, whatever the pass order."""
    for record in reversed(records):
        if isinstance(record.stats, kind):
            return record.stats
    return None


def run_passes(
    model: ir.Model, passes: Sequence[ir.passes.PassBase]
) -> tuple[ir.Model, list[PassRecord]]:
    """Run the passes in order; raise CompileError naming the pass that failed."""
    records: list[PassRecord] = []
    for pass_ in passes:
        name = str(pass_)
        logger.info("running pass '%s'", name)
        start = time.perf_counter()
        try:
            result = pass_(model)
        except Exception as e:
            before = ", ".join(r.name for r in records) or "none"
            raise CompileError(
                f"pass '{name}' failed (passes run before it: {before}): {_root_cause(e)}"
            ) from e
        seconds = time.perf_counter() - start
        model = result.model
        stats = getattr(pass_, "stats", {})
        stats = dict(stats) if isinstance(stats, dict) else stats
        records.append(PassRecord(name, seconds, result.modified, stats))
        logger.info("pass '%s' done in %.2f s (modified: %s)", name, seconds, result.modified)
    return model, records


def _root_cause(error: BaseException) -> str:
    # onnx-ir wraps failures of requires()/ensures(); the innermost message says what broke.
    messages = [str(error)]
    while error.__cause__ is not None:
        error = error.__cause__
        messages.append(str(error))
    return messages[-1] if len(messages) == 1 else f"{messages[0]}: {messages[-1]}"
