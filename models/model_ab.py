"""Compiled forms of one model against its dense original, in one process, alternating:
wall-clock and thread CPU medians of each, and what runs just before each timed run.

    python models/model_ab.py ORIGINAL COMPILED [COMPILED ...] [--repeat 30] [--batch 1]
                              [--before alone,dense,evict,sleep] [--relu]

Each COMPILED file (say the same model compiled with different options) runs through
`dc_onnx.InferenceSession` with the installed library. `--before` lists what precedes
each timed run of a compiled form, each in turn: nothing (`alone`: the form's previous
run), a run of the dense original (`dense`: what `dc-onnx bench`'s alternation does), a
pass over 256 MB of other memory (`evict`), or 30 ms of sleep (`sleep`). The dense
original is timed after its own previous run. One intra-op thread, spinning off, as in
`dc-onnx bench`. With one thread ORT runs the graph on the calling thread, so the gap
between wall clock and that thread's CPU time is time the thread did not run (other
processes, the hypervisor), and a cold cache shows in both. `--relu` times, the same
way, a one-node Relu on the same input: what ORT and the Python call cost a Run of any
model, which no kernel can save.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import dc_onnx
from dc_onnx.runtime import _onnxruntime
from dc_onnx.tools.bench_sessions import bench_session_options


def relu_session(name: str, shape: list[int]) -> Any:
    """A session of one Relu from `name` of `shape` (float32)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", [name], ["y"])],
        "relu",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _onnxruntime().InferenceSession(model.SerializeToString(), bench_session_options(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original")
    parser.add_argument("compiled", nargs="+")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--before", default="dense")
    parser.add_argument("--relu", action="store_true", help="also time a one-node Relu")
    args = parser.parse_args()
    known = ("alone", "dense", "evict", "sleep")
    if unknown := sorted(set(args.before.split(",")) - set(known)):
        parser.error(f"--before: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    dense = _onnxruntime().InferenceSession(args.original, bench_session_options(1))
    forms = [dc_onnx.InferenceSession(p, bench_session_options(1)) for p in args.compiled]
    names = [os.path.basename(p) for p in args.compiled]
    first = dense.get_inputs()[0]
    shape = [d if isinstance(d, int) else args.batch for d in first.shape]
    if args.relu:
        forms.append(relu_session(first.name, shape))
        names.append("one-node Relu")
    feeds = {first.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    evict = np.ones(64 << 20, np.float32)
    # Each takes the form about to be timed. `alone` runs it once more untimed: without
    # that, the first kind listed followed the dense original's timed run.
    before: dict[str, Callable[[Any], object]] = {
        "alone": lambda form: form.run(None, feeds),
        "dense": lambda form: dense.run(None, feeds),
        "evict": lambda form: evict.sum(),
        "sleep": lambda form: time.sleep(0.03),
    }
    kinds = args.before.split(",")
    for s in [dense, *forms]:
        s.run(None, feeds)

    def timed(session: object) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.thread_time()
        session.run(None, feeds)  # type: ignore[attr-defined]
        return (time.perf_counter() - wall) * 1e3, (time.thread_time() - cpu) * 1e3

    dense_times: list[tuple[float, float]] = []
    times = {(i, k): [] for i in range(len(forms)) for k in kinds}  # type: ignore[var-annotated]
    for _ in range(args.repeat):
        dense.run(None, feeds)
        dense_times.append(timed(dense))
        for i, form in enumerate(forms):
            for kind in kinds:
                before[kind](form)
                times[(i, kind)].append(timed(form))
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average {load}; medians of {args.repeat} runs, batch {args.batch}")
    d_wall, d_cpu = np.median(np.array(dense_times), axis=0)
    print(f"{'dense original':<48} wall {d_wall:8.2f} ms  cpu {d_cpu:8.2f} ms")
    for (i, kind), t in times.items():
        wall, cpu = np.median(np.array(t), axis=0)
        name = f"{names[i]}, after {kind}"
        print(
            f"{name:<48} wall {wall:8.2f} ms ({d_wall / wall:.2f}x)"
            f"  cpu {cpu:8.2f} ms ({d_cpu / cpu:.2f}x)"
        )


if __name__ == "__main__":
    main()
