"""Library builds against each other: one model's dense original and its compiled form
run with each given custom-op library, in one process, one intra-op thread, median CPU
time of the calling thread (`time.thread_time`); each library's session runs twice in a
row after a dense run, and, as in `dc-onnx bench`, the second Run is its time (the first,
after the dense one, is shown as "after dense").

    python models/library_ab.py ORIGINAL COMPILED REPEAT LIBRARY [LIBRARY ...] [--batch N]

For kernel work on a shared machine: build the library twice (say main's into
/tmp/before.so and a branch's into /tmp/after.so) and compare them in the same process,
against ORT's dense kernels. Prints, per library, whether its outputs have the first
library's bits, and each median with its ratio over dense. Input: standard normal float32
of the first input's shape, symbolic dims N (--batch, default 1). Decode-form weights
(CompressedConstant) are materialised with each library first, as
`dc_onnx.InferenceSession` does, so ORT runs those layers as in `dc-onnx bench`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dc_onnx.materialize import materialize
from dc_onnx.runtime import _onnxruntime
from dc_onnx.tools.bench_sessions import bench_session_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original")
    parser.add_argument("compiled")
    parser.add_argument("repeat", type=int)
    parser.add_argument("libraries", nargs="+")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    original, compiled, repeat, libraries = (
        args.original,
        args.compiled,
        args.repeat,
        args.libraries,
    )
    ort = _onnxruntime()
    sessions = [ort.InferenceSession(original, bench_session_options(1))]
    for library in libraries:
        options = bench_session_options(1)
        options.register_custom_ops_library(library)
        model = materialize(compiled, options) or compiled
        sessions.append(ort.InferenceSession(model, options))
    first = sessions[0].get_inputs()[0]
    shape = [d if isinstance(d, int) else args.batch for d in first.shape]
    feeds = {first.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    outputs = [s.run(None, feeds)[0] for s in sessions]
    for i in range(2, len(outputs)):
        same = outputs[i].tobytes() == outputs[1].tobytes()
        diff = float(np.abs(outputs[i] - outputs[1]).max())
        print(f"{libraries[i - 1]}: same bits as {libraries[0]}: {same} (max diff {diff:.3g})")
    times: list[list[float]] = [[] for _ in sessions]
    after_dense: list[list[float]] = [[] for _ in sessions]

    def timed(i: int, into: list[list[float]]) -> None:
        start = time.thread_time()
        sessions[i].run(None, feeds)
        into[i].append((time.thread_time() - start) * 1e3)

    # Every library's pair of Runs comes right after a dense Run, the libraries in an order
    # rotated each round, so each starts from the same state of the caches.
    libs = list(range(1, len(sessions)))
    for r in range(repeat):
        for i in libs[r % len(libs) :] + libs[: r % len(libs)]:
            timed(0, after_dense)
            timed(0, times)
            timed(i, after_dense)
            timed(i, times)
    medians = [float(np.median(t)) for t in times]
    firsts = [float(np.median(t)) for t in after_dense]
    print(f"dense {medians[0]:.3f} ms (first of each pair {firsts[0]:.3f})")
    for library, m, first in zip(libraries, medians[1:], firsts[1:], strict=True):
        print(f"{library}: {m:.3f} ms, {medians[0] / m:.2f}x (after dense {first:.3f} ms)")


if __name__ == "__main__":
    main()
