"""What one model's Run costs the next: each model run K times in a row right after a Run
of a large one, every Run timed, alternating, in one process with one intra-op thread
(CPU time of the calling thread, medians per position in the row).

    python models/after_others.py LARGE MODEL [MODEL ...] [--repeat N] [--runs K]

The reason `dc-onnx bench` times each form on its second Run in a row (docs/benchmarks.md,
"What the previous form's Run costs the next"). Sessions open with the custom-op library
(`dc_onnx.runtime.open_session`); inputs are bench's random ones at batch 1
(`dc_onnx.tools.verify.random_inputs`).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from dc_onnx.runtime import open_session
from dc_onnx.tools.bench_sessions import bench_session_options
from dc_onnx.tools.verify import random_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("large")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--repeat", type=int, default=101)
    parser.add_argument("--runs", type=int, default=2, help="Runs in a row after the large one")
    args = parser.parse_args()
    large = open_session(args.large, bench_session_options(1))
    large_feeds = random_inputs(large, 1, seed=0)
    sessions = [(path, open_session(path, bench_session_options(1))) for path in args.models]
    times: dict[str, list[list[float]]] = {p: [[] for _ in range(args.runs)] for p in args.models}

    def timed(session: Any, feeds: dict[str, np.ndarray]) -> float:
        start = time.thread_time()
        session.run(None, feeds)
        return (time.thread_time() - start) * 1e3

    feeds = {path: random_inputs(s, 1, seed=0) for path, s in sessions}
    for _ in range(args.repeat):
        for path, session in sessions:
            large.run(None, large_feeds)
            for run in times[path]:
                run.append(timed(session, feeds[path]))
    head = " ".join(f"{f'run {k + 1} ms':>9}" for k in range(args.runs))
    print(f"{'model':<48} {head} {'1st/last':>8}")
    for path in args.models:
        medians = [float(np.median(run)) for run in times[path]]
        cells = " ".join(f"{m:>9.3f}" for m in medians)
        print(f"{path:<48} {cells} {medians[0] / medians[-1]:>7.2f}x")


if __name__ == "__main__":
    main()
