"""Resident memory of this process, for `dc-onnx bench`: the resident set now, and the peak
resident set while one call runs.

The peak comes from Linux's high-water mark: writing "5" to /proc/self/clear_refs resets
VmHWM (in /proc/self/status) to the current resident set, so VmHWM read after the call is
the call's own peak. The reset costs one system call and nothing runs beside the call.
Where the reset is refused (kernels before 4.0, some sandboxes), a thread samples the
resident set every 0.5 ms instead; it can miss a peak shorter than that, and `PeakMeter`
says which method it used. Elsewhere than Linux there is no figure.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

HIGH_WATER_MARK = "VmHWM after a reset through /proc/self/clear_refs"
SAMPLING = "RSS sampled every 0.5 ms by a thread (/proc/self/statm)"
UNAVAILABLE = "unavailable (no /proc on this system)"
_SAMPLE_S = 0.0005


def rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc); None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _high_water_mark() -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakMeter:
    """Measures the peak growth of the resident set during calls, by the best method here."""

    def __init__(self) -> None:
        if rss_bytes() is None:
            self.method = UNAVAILABLE
        elif _reset_high_water_mark() and _high_water_mark() is not None:
            self.method = HIGH_WATER_MARK
        else:
            self.method = SAMPLING

    def measure(self, call: Callable[[], T]) -> tuple[T, int | None]:
        """Runs `call`; returns its result and how far the resident set rose above where it
        was just before (bytes), or None where this system cannot tell."""
        before = rss_bytes()
        if before is None:
            return call(), None
        if self.method == HIGH_WATER_MARK:
            _reset_high_water_mark()
            result = call()
            peak = _high_water_mark()
            return result, None if peak is None else max(peak - before, 0)
        return self._sampled(call, before)

    @staticmethod
    def _sampled(call: Callable[[], T], before: int) -> tuple[T, int | None]:
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(_SAMPLE_S):
                peak[0] = max(peak[0], rss_bytes() or 0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = call()
        finally:
            done.set()
            sampler.join()
        peak[0] = max(peak[0], rss_bytes() or 0)
        return result, peak[0] - before
