"""Per-run cost of CompressedGather against ORT's dense Gather (docs/format.md, "Embeddings").

Builds a 30000 x 384 float32 embedding table (and a 3000-row one, to show the cost does
not follow the table size), compiles each with the defaults (8 bits, tables not pruned)
and at 90% sparsity, and times Run() gathering 128 and 1024 rows, sessions alternating,
one thread, spinning off. Prints median times and their ratio to the dense Gather of the same table.

    .venv/bin/python scripts/bench_gather.py [--repeat 400]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import dc_onnx


def _model(rows: int, width: int, seed: int) -> onnx.ModelProto:
    table = np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)
    node = helper.make_node("Gather", ["E", "idx"], ["y"], name="emb")
    graph = helper.make_graph(
        [node],
        "emb",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
        [numpy_helper.from_array(table, "E")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return dc_onnx.InferenceSession(str(path), options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=400)
    args = parser.parse_args()
    width = 384
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (30000, 3000):
            source = Path(tmp) / f"emb{rows}.onnx"
            onnx.save(_model(rows, width, rows), str(source))
            sessions = {"dense Gather": _session(source)}
            for label, sparsity in (("8-bit", 0.0), ("8-bit, 90% pruned", 0.9)):
                out = Path(tmp) / f"emb{rows}_{int(sparsity * 100)}.dc.onnx"
                options = dc_onnx.CompileOptions(sparsity_per_layer={"emb": sparsity})
                dc_onnx.compile(source, out, options)
                sessions[f"CompressedGather {label}"] = _session(out)
            for n in (128, 1024):
                idx = np.random.default_rng(n).integers(0, rows, size=n)
                times: dict[str, list[float]] = {k: [] for k in sessions}
                for _ in range(args.repeat):
                    for key, session in sessions.items():
                        start = time.perf_counter()
                        session.run(None, {"idx": idx})
                        times[key].append(time.perf_counter() - start)
                base = float(np.median(times["dense Gather"]))
                for key, t in times.items():
                    med = float(np.median(t))
                    print(
                        f"table {rows}x{width}, {n:4d} rows: {key:34s} "
                        f"{med * 1e6:8.1f} us  x{med / base:5.2f}"
                    )


if __name__ == "__main__":
    main()
