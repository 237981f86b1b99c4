"""Small hand-built models with the constructs real models hide their weights in.

Each builder returns (model, feeds, names): the ONNX model, inputs to run it on, and the
names of the weights the compiler must find and compress. Shared by test_coverage.py and
test_latest_onnxruntime.py.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Built = tuple[onnx.ModelProto, dict[str, np.ndarray], list[str]]
RNG = np.random.default_rng(7)  # one stream: each build draws new weights
F = TensorProto.FLOAT


def _weights(*shape: int, scale: float = 0.1) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "coverage", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _int8(*shape: int) -> np.ndarray:
    """Quantized-looking int8 weights: a rounded bell curve, as real quantizers leave."""
    return np.clip(np.round(RNG.standard_normal(shape) * 12), -128, 127).astype(np.int8)


def _x(rows: int = 2, cols: int = 64) -> np.ndarray:
    return RNG.standard_normal((rows, cols)).astype(np.float32)


def if_branches() -> Built:
    """An If whose then-branch reads an outer-scope initializer and whose else-branch
    holds its weight as a Constant node (as exported control flow does)."""
    w_then, w_else = _weights(64, 96), _weights(64, 96)
    then = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W_then"], ["y_then"])], "then", [],
        [helper.make_tensor_value_info("y_then", F, None)],
    )  # fmt: skip
    other = helper.make_graph(
        [
            helper.make_node("Constant", [], ["W_else"], value=numpy_helper.from_array(w_else)),
            helper.make_node("MatMul", ["x", "W_else"], ["y_else"]),
        ],
        "else", [], [helper.make_tensor_value_info("y_else", F, None)],
    )  # fmt: skip
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)
    model = _model(
        [node],
        [helper.make_tensor_value_info("x", F, ["N", 64]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", F, ["N", 96])],
        [numpy_helper.from_array(w_then, "W_then")],
    )  # fmt: skip
    return model, {"x": _x(), "cond": np.array(False)}, ["W_then", "W_else"]


def loop_body() -> Built:
    """A Loop whose body holds its weight as a body initializer."""
    w = _weights(64, 64)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "W_body"], ["m"]),
            helper.make_node("Tanh", ["m"], ["h_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", F, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", F, None)],
        [numpy_helper.from_array(w, "W_body")],
    )  # fmt: skip
    trips = numpy_helper.from_array(np.array(3, dtype=np.int64), "trips")
    node = helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body)
    model = _model(
        [node],
        [helper.make_tensor_value_info("x", F, ["N", 64])],
        [helper.make_tensor_value_info("y", F, ["N", 64])],
        [trips],
    )
    return model, {"x": _x()}, ["W_body"]


def recurrent() -> Built:
    """An LSTM then a GRU: W and R (and the LSTM's B) in storage form."""
    hidden, inputs = 64, 32
    inits = {
        "lstm_W": _weights(1, 4 * hidden, inputs),
        "lstm_R": _weights(1, 4 * hidden, hidden),
        "lstm_B": _weights(1, 8 * hidden),
        "gru_W": _weights(1, 3 * hidden, hidden),
        "gru_R": _weights(1, 3 * hidden, hidden),
    }
    nodes = [
        helper.make_node("LSTM", ["x", "lstm_W", "lstm_R", "lstm_B"], ["h1"], hidden_size=hidden),
        helper.make_node("Squeeze", ["h1", "axis1"], ["s1"]),
        helper.make_node("GRU", ["s1", "gru_W", "gru_R"], ["h2"], hidden_size=hidden),
        helper.make_node("Squeeze", ["h2", "axis1"], ["y"]),
    ]
    tensors = [numpy_helper.from_array(v, k) for k, v in inits.items()]
    tensors.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"))
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [5, 1, inputs])],
        [helper.make_tensor_value_info("y", F, [5, 1, 64])],
        tensors,
    )
    x = RNG.standard_normal((5, 1, inputs)).astype(np.float32)
    return model, {"x": x}, ["lstm_W", "lstm_R", "gru_W", "gru_R"]


def half_precision() -> Built:
    """An fp16 MatMul (the weight keeps fp16 at the op boundary) and a bf16 table read
    by two Casts (shared, so nothing folds: the decode op outputs bf16)."""
    w16 = _weights(64, 96).astype(np.float16)
    table = _weights(64, 96).astype(ml_dtypes.bfloat16)
    bf16 = helper.make_tensor(
        "T_bf16", TensorProto.BFLOAT16, table.shape, table.view(np.uint16).tobytes(), raw=True
    )
    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["x16", "W_fp16"], ["m16"]),
        helper.make_node("Cast", ["m16"], ["m"], to=F),
        helper.make_node("Cast", ["T_bf16"], ["t1"], to=F),
        helper.make_node("Cast", ["T_bf16"], ["t2"], to=F),
        helper.make_node("MatMul", ["x", "t1"], ["a"]),
        helper.make_node("MatMul", ["x", "t2"], ["b"]),
        helper.make_node("Sum", ["m", "a", "b"], ["y"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, ["N", 64])],
        [helper.make_tensor_value_info("y", F, ["N", 96])],
        [numpy_helper.from_array(w16, "W_fp16"), bf16],
    )
    return model, {"x": _x()}, ["W_fp16", "T_bf16"]


def qdq_int8() -> Built:
    """DequantizeLinear of an int8 initializer feeding a MatMul (a QDQ model)."""
    q = _int8(64, 96)
    inits = [
        numpy_helper.from_array(q, "W_q"),
        numpy_helper.from_array(np.array(0.01, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array(3, dtype=np.int8), "zero"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["W_q", "scale", "zero"], ["W"]),
        helper.make_node("MatMul", ["x", "W"], ["y"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, ["N", 64])],
        [helper.make_tensor_value_info("y", F, ["N", 96])],
        inits,
    )
    return model, {"x": _x()}, ["W_q"]


def matmul_integer() -> Built:
    """MatMulInteger with a uint8 activation and an int8 weight (dynamic quantization)."""
    b = _int8(64, 96)
    nodes = [
        helper.make_node("MatMulInteger", ["a", "B_int8", "", "b_zero"], ["y"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("a", TensorProto.UINT8, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 96])],
        [numpy_helper.from_array(b, "B_int8"),
         numpy_helper.from_array(np.array(2, dtype=np.int8), "b_zero")],
    )  # fmt: skip
    a = RNG.integers(0, 256, size=(3, 64)).astype(np.uint8)
    return model, {"a": a}, ["B_int8"]


def shared_and_chains() -> Built:
    """A weight read by a MatMul and an Add (stored and decoded once), and an fp16 weight
    reached through Cast then Transpose (folded into a float32 layer weight)."""
    shared = _weights(64, 64)
    chained = _weights(96, 64).astype(np.float16)
    nodes = [
        helper.make_node("MatMul", ["x", "S"], ["m"]),
        helper.make_node("Add", ["m", "S"], ["s"]),  # x [64, 64]: broadcast over rows
        helper.make_node("Cast", ["C_fp16"], ["c32"], to=F),
        helper.make_node("Transpose", ["c32"], ["ct"], perm=[1, 0]),
        helper.make_node("MatMul", ["s", "ct"], ["y"], name="chained"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [64, 64])],
        [helper.make_tensor_value_info("y", F, [64, 96])],
        [numpy_helper.from_array(shared, "S"), numpy_helper.from_array(chained, "C_fp16")],
    )
    return model, {"x": _x(64, 64)}, ["S", "chained"]


BUILDERS: dict[str, Callable[[], Built]] = {
    "if_branches": if_branches,
    "loop_body": loop_body,
    "recurrent": recurrent,
    "half_precision": half_precision,
    "qdq_int8": qdq_int8,
    "matmul_integer": matmul_integer,
    "shared_and_chains": shared_and_chains,
}
