"""Two threads over one, for several models, measured in one process in the same rounds.

    python models/thread_scaling.py MODEL [MODEL ...] [--batch 1,64] [--repeat N]

Each model gets a session with one intra-op thread and one with two (spinning off in both,
as in `dc-onnx bench`). Rounds alternate over every (model, threads) pair, each run twice in
a row and timed on the second (wall clock), as bench does; a different pair goes first in
each round. So a dense model's scaling, ORT's own kernels, is measured beside the compiled
one's under the same share of the host: it is the ceiling the compiled model is held to.
Scaling measured in two `make bench` runs minutes apart also carries the host's drift
between them (docs/benchmarks.md).

Also printed: the share of the timed period that the hypervisor gave neither vCPU
("steal", from /proc/stat; 0 on bare metal or where not reported). Sessions open with the
custom-op library (`dc_onnx.runtime.open_session`); inputs are bench's random ones
(`dc_onnx.tools.verify.random_inputs`), the batch the first dim.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dc_onnx.runtime import open_session
from dc_onnx.tools.bench_sessions import bench_session_options, warm_up_ort
from dc_onnx.tools.verify import random_inputs

THREADS = (1, 2)


def _cpu_ticks() -> tuple[int, int]:
    """(steal, all) jiffies of the whole machine, from the first line of /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--repeat", type=int, default=31, help="timed rounds per batch size")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    warm_up_ort(1)
    sessions = {
        (m, t): open_session(m, bench_session_options(t)) for m in args.models for t in THREADS
    }
    pairs = list(sessions)
    print(f"{'model':<40} {'batch':>5} {'1 thread ms':>11} {'2 threads ms':>12} {'2 over 1':>8}")
    for batch in batches:
        feeds = {m: random_inputs(sessions[(m, 1)], batch, seed=0) for m in args.models}
        times: dict[tuple[str, int], list[float]] = {p: [] for p in pairs}
        for p in pairs:  # warm-up: arenas and scratch sized for this batch
            for _ in range(2):
                sessions[p].run(None, feeds[p[0]])
        steal0, all0 = _cpu_ticks()
        for r in range(args.repeat):
            for k in range(len(pairs)):
                p = pairs[(r + k) % len(pairs)]
                sessions[p].run(None, feeds[p[0]])
                start = time.perf_counter()
                sessions[p].run(None, feeds[p[0]])
                times[p].append((time.perf_counter() - start) * 1e3)
        steal1, all1 = _cpu_ticks()
        for m in args.models:
            one, two = (float(np.median(times[(m, t)])) for t in THREADS)
            print(f"{m:<40} {batch:>5} {one:>11.3f} {two:>12.3f} {one / two:>7.2f}x")
        share = (steal1 - steal0) / (all1 - all0) if all1 > all0 else 0.0
        print(f"  batch {batch}: steal {100 * share:.1f}% of both vCPUs' time while timed")


if __name__ == "__main__":
    main()
