"""Progress of long work (retraining steps, per-layer compile passes), through tqdm.

Progress is shown only when the `dc_onnx` logger lets INFO through: the CLI does that
unless `--quiet`, and a library user who configured no logging sees nothing. On a terminal
it is a tqdm bar on stderr; when stderr is not a terminal (a log file, CI) the bar would be
a stream of carriage returns, so it becomes plain log lines instead, and only for work
that lasts: nothing in the first seconds, then a line at each tenth of the work and at
the end, and at most one every few seconds in between.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

logger = logging.getLogger("dc_onnx.progress")

__all__ = ["Progress", "track"]

T = TypeVar("T")

_PLAIN_INTERVAL_S = 5.0  # plain lines: at most one this often, besides every 10%
_PLAIN_AFTER_S = 2.0  # ... and none for work that is done sooner


class Progress:
    """`with Progress(total, "retrain epoch 1/2", "step") as p: p.update(loss=0.3)`."""

    def __init__(self, total: int, description: str, unit: str = "it") -> None:
        self.total, self.description, self.unit = max(total, 0), description, unit
        self.done = 0
        self.enabled = logging.getLogger("dc_onnx").isEnabledFor(logging.INFO)
        self._bar: Any = None
        self._start = time.perf_counter()
        self._last_line = 0.0
        self._next_tenth = 1
        self._postfix: dict[str, str] = {}
        if self.enabled and _stderr_is_terminal():
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=self.total, desc=description, unit=unit, leave=False,
                             file=sys.stderr, dynamic_ncols=True)  # fmt: skip
            # Log lines written meanwhile go above the bar instead of through it.
            self._redirect = logging_redirect_tqdm([logging.root])
            self._redirect.__enter__()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(finished=kind is None)

    def update(self, n: int = 1, **postfix: float | str) -> None:
        """`n` more units done; `postfix` (loss=..., ...) is shown beside the count."""
        self.done += n
        if not self.enabled:
            return
        self._postfix.update({k: _format(v) for k, v in postfix.items()})
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(self._postfix, refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._start < _PLAIN_AFTER_S:
            return
        tenth = self.done * 10 // max(self.total, 1)
        if tenth >= self._next_tenth or now - self._last_line >= _PLAIN_INTERVAL_S:
            self._next_tenth = tenth + 1
            self._line(now)

    def elapsed(self) -> float:
        return max(time.perf_counter() - self._start, 1e-9)

    def rate(self) -> float:
        """Units per second so far."""
        return self.done / self.elapsed()

    def close(self, finished: bool = True) -> None:
        if self._bar is not None:
            self._redirect.__exit__(None, None, None)
            self._bar.close()
            self._bar = None
        elif self.enabled and finished and self._last_line and self._next_tenth <= 10:
            self._line(time.perf_counter())
        self.enabled = False

    def _line(self, now: float) -> None:
        self._last_line = now
        extra = "".join(f", {k} {v}" for k, v in self._postfix.items())
        logger.info("%s: %d/%d %s (%.1f %s/s%s)", self.description, self.done, self.total,
                    self.unit, self.rate(), self.unit, extra)  # fmt: skip


def track(items: Sequence[T], description: str, unit: str = "layer") -> Iterator[T]:
    """Iterate over `items`, showing progress: the per-layer loops of the compile passes."""
    with Progress(len(items), description, unit) as progress:
        for item in items:
            yield item
            progress.update()


def _format(value: float | str) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False
