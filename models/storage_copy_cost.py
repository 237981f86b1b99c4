"""Per-run cost of the storage form: an LSTM whose W and R are CompressedConstant outputs.

Builds an LSTM (input 512, hidden 512: W and R hold 1M float32 each, 8 MiB together),
compiles it with the defaults, and times one step at batch 1 (one thread, no spinning,
round-robin runs): the original; the compiled model with its decode ops running (as in
any ORT host: a copy per Run, and an LSTM that cannot pre-pack a non-constant weight);
and the compiled model as `dc_onnx.InferenceSession` runs it, the weights materialised
once at session creation (docs/format.md).

    .venv/bin/python models/storage_copy_cost.py [--out build/copy-cost]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import dc_onnx

HIDDEN = INPUT = 512


def lstm_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((1, 4 * HIDDEN, INPUT)) * 0.05).astype(np.float32)
    r = (rng.standard_normal((1, 4 * HIDDEN, HIDDEN)) * 0.05).astype(np.float32)
    node = helper.make_node("LSTM", ["x", "W", "R"], ["", "y"], hidden_size=HIDDEN)
    graph = helper.make_graph(
        [node], "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "N", INPUT])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "N", HIDDEN])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _session(path: Path, materialize: bool) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return dc_onnx.InferenceSession(path, options, materialize=materialize)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/copy-cost"))
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.out / "lstm.onnx"
    onnx.save(lstm_model(), str(source))
    compiled = args.out / "lstm.dc.onnx"
    dc_onnx.compile(source, compiled, dc_onnx.CompileOptions(quality=0.0))
    # The original with W and R fed as inputs: what an LSTM costs when its weights are not
    # constant (no pre-packing) but nothing is copied; the rest of the op path is the copy.
    unpacked = lstm_model()
    weights = {t.name: numpy_helper.to_array(t) for t in unpacked.graph.initializer}
    del unpacked.graph.initializer[:]
    for name, array in weights.items():
        unpacked.graph.input.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, list(array.shape))
        )
    onnx.save(unpacked, str(args.out / "lstm_inputs.onnx"))
    sessions = {
        "original": _session(source, False),
        "original, W and R fed as inputs": _session(args.out / "lstm_inputs.onnx", False),
        "decode op (any ORT host)": _session(compiled, False),
        "materialised (dc_onnx.InferenceSession)": _session(compiled, True),
    }
    x = np.random.default_rng(1).standard_normal((1, 1, INPUT)).astype(np.float32)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for i in range(args.repeat + 5):
        # Round robin, so no session always runs on a cache the previous one warmed.
        items = list(sessions.items())
        for name, session in items[i % len(items) :] + items[: i % len(items)]:
            feeds = {"x": x, **weights} if "inputs" in name else {"x": x}
            start = time.perf_counter()
            session.run(None, feeds)
            if i >= 5:
                times[name].append((time.perf_counter() - start) * 1e3)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    for name, ms in medians.items():
        print(f"{name:42s} {ms:8.3f} ms per run (median of {args.repeat})")
    print(f"load average: {os.getloadavg()}")
    print(json.dumps({"median_ms": medians, "weight_bytes": 4 * 4 * HIDDEN * (INPUT + HIDDEN)}))


if __name__ == "__main__":
    main()
