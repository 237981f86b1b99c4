"""Resident memory of one model alone, for `dc-onnx bench --footprint`.

In bench's own process the forms share one heap and one ORT arena, so a form's figures
there are growths that depend on what ran before it. Here each form gets a fresh child
process: it imports ORT and the custom-op library and runs a throw-away session (ORT's
one-time set-up), reads its resident set (the baseline), creates the form's session,
reads it again, then runs the model once at the given batch under `PeakMeter`
(dc_onnx/tools/memory.py). It reports, above the baseline:

- `session_bytes`: the resident set after session creation (weights, decoded or not,
  and whatever the session keeps);
- `peak_bytes`: the highest resident set during that first Run (activations, the arena's
  growth, kernels' scratch), i.e. what the machine must have free to run the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from dc_onnx.errors import InputError

__all__ = ["Footprint", "footprint_in_child"]

_MARK = "dc-onnx-footprint:"


@dataclasses.dataclass(frozen=True)
class Footprint:
    batch: int
    session_bytes: int
    peak_bytes: int
    method: str  # how the peak was read (dc_onnx.tools.memory)


def _measure(path: str, batch: int, threads: int, seed: int, shapes: str) -> dict[str, Any]:
    """In the child: the figures above, as a dict."""
    from dc_onnx.runtime import open_session
    from dc_onnx.tools.bench_sessions import bench_session_options, warm_up_ort
    from dc_onnx.tools.memory import PeakMeter, rss_bytes
    from dc_onnx.tools.verify import random_inputs

    warm_up_ort(threads)
    meter = PeakMeter()
    baseline = rss_bytes()
    if baseline is None:
        raise InputError("no resident-set figure on this system (/proc)")
    session = open_session(path, bench_session_options(threads))
    created = rss_bytes() or baseline
    feeds = random_inputs(session, batch, seed, json.loads(shapes))
    _, growth = meter.measure(lambda: session.run(None, feeds))
    peak = created + (growth or 0)
    return {
        "batch": batch,
        "session_bytes": max(created - baseline, 0),
        "peak_bytes": max(peak - baseline, 0),
        "method": meter.method,
    }


def footprint_in_child(
    path: str | os.PathLike[str],
    batch: int,
    threads: int,
    seed: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Footprint | str:
    """The model's footprint measured in a fresh process, or why it could not be."""
    code = (
        "import json, sys; from dc_onnx.tools.footprint import _measure, _MARK;"
        "print(_MARK + json.dumps(_measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),"
        " int(sys.argv[4]), sys.argv[5])))"
    )
    model = os.path.abspath(path)  # the child runs in another folder
    shapes = json.dumps(dict(input_shapes or {}))
    args = [sys.executable, "-c", code, model, str(batch), str(threads), str(seed), shapes]
    # Not from the source tree: `import dc_onnx` must find the installed package.
    done = subprocess.run(args, capture_output=True, text=True, cwd=tempfile.gettempdir())
    for line in done.stdout.splitlines():
        if line.startswith(_MARK):
            return Footprint(**json.loads(line.removeprefix(_MARK)))
    lines = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()
    return f"the child process failed: {lines[-1]}"
