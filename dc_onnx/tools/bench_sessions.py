"""The sessions `dc-onnx bench` and its child processes create: the same options for
every form (threads, no spinning: see "Isolation" in dc_onnx/tools/bench.py), and a
throw-away session that takes ORT's one-time set-up before anything is measured."""

from __future__ import annotations

from typing import Any

import numpy as np

from dc_onnx.runtime import _onnxruntime, session_options

__all__ = ["NO_SPINNING", "bench_session_options", "warm_up_ort"]

# Config keys set to "0" on every session bench creates.
NO_SPINNING = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def bench_session_options(threads: int) -> Any:
    """SessionOptions for every session bench creates: `threads` intra-op threads, one
    inter-op thread, no spinning."""
    options = _onnxruntime().SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    for key in NO_SPINNING:
        options.add_session_config_entry(key, "0")
    return options


def warm_up_ort(threads: int) -> None:
    """Creates and runs a session on a one-node model (ORT's global set-up happens here)."""
    from onnx import TensorProto, helper

    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "warm_up",
        [info("x", TensorProto.FLOAT, [1])],
        [info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = _onnxruntime().InferenceSession(
        model.SerializeToString(),
        session_options(bench_session_options(threads)),
        providers=["CPUExecutionProvider"],
    )
    session.run(None, {"x": np.zeros(1, np.float32)})
