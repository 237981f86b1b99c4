"""Two models timed by CPU time on a shared machine: alternating runs, batch 1, one
intra-op thread, median of the calling thread's CPU time (`time.thread_time`).

    python models/cpu_time_ab.py ORIGINAL COMPILED [--repeat 20] [--inputs INPUTS.npz]

With one intra-op thread ORT runs the graph on the calling thread, so its CPU time is the
run's cost without the time other processes held the core (wall-clock medians on a
loaded machine measure the scheduler); both are printed. Inputs: the .npz's arrays, or
standard normal float32 of the first input's shape (symbolic dims 1).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dc_onnx.runtime import open_session
from dc_onnx.tools.bench_sessions import bench_session_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original")
    parser.add_argument("compiled")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--inputs", default=None)
    args = parser.parse_args()
    sessions = [open_session(p, bench_session_options(1)) for p in (args.original, args.compiled)]
    if args.inputs:
        arrays = np.load(args.inputs)
        feeds = {k: arrays[k] for k in arrays.files}
    else:
        first = sessions[0].get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in first.shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        feeds = {first.name: x}
    for s in sessions:
        s.run(None, feeds)
    cpu: list[list[float]] = [[], []]
    wall: list[list[float]] = [[], []]
    for r in range(args.repeat):
        for i in (0, 1) if r % 2 else (1, 0):
            c, w = time.thread_time(), time.perf_counter()
            sessions[i].run(None, feeds)
            cpu[i].append((time.thread_time() - c) * 1e3)
            wall[i].append((time.perf_counter() - w) * 1e3)
    c0, c1 = (float(np.median(t)) for t in cpu)
    w0, w1 = (float(np.median(t)) for t in wall)
    print(f"cpu: original {c0:.3f} ms, compiled {c1:.3f} ms: {c0 / c1:.2f}x")
    print(f"wall: original {w0:.3f} ms, compiled {w1:.3f} ms: {w0 / w1:.2f}x")


if __name__ == "__main__":
    main()
