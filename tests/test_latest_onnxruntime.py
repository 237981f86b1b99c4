"""Compiled models load and run in the latest plain `onnxruntime`, as deployments use it.

The development environment has onnxruntime-training 1.19.2; `make test` also builds a
second virtualenv (.venv-rt) with the newest onnxruntime and the same dc-onnx wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from coverage_models import BUILDERS
from onnx import helper
from test_embedding import embedding_model

from conftest import REPO, cnn_model, compile_model, make_model, mlp_model, run

SCRIPT = """
import json, sys
import numpy as np, onnxruntime as ort
import dc_onnx
options = ort.SessionOptions()
options.intra_op_num_threads = 1
feeds = dict(np.load(sys.argv[2]))
outputs = dc_onnx.InferenceSession(sys.argv[1], options).run(None, feeds)
np.save(sys.argv[3], outputs[0])
print(json.dumps({"version": ort.__version__}))
"""


def _runtime_python() -> Path:
    python = Path(os.environ.get("DC_ONNX_RT_PYTHON", REPO / ".venv-rt" / "bin" / "python"))
    assert python.exists(), f"{python} missing: `make test` creates the latest-onnxruntime venv"
    return python


def test_compiled_models_run_in_the_latest_onnxruntime(tmp_path: Path) -> None:
    python = _runtime_python()
    for build, shape in ((mlp_model, (5, 64)), (cnn_model, (2, 3, 8, 8))):
        compiled = compile_model(build(), tmp_path, name=build.__name__, sparsity=0.7)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        inputs, result = tmp_path / "inputs.npz", tmp_path / "out.npy"
        np.savez(inputs, x=x)
        done = subprocess.run(
            [str(python), "-c", SCRIPT, str(compiled), str(inputs), str(result)],
            capture_output=True, text=True, check=False, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        version = json.loads(done.stdout.strip().splitlines()[-1])["version"]
        assert version != onnxruntime.__version__, "the runtime venv must hold another ORT"
        (expected,) = run(compiled, {"x": x})
        np.testing.assert_allclose(np.load(result), expected, rtol=1e-6, atol=1e-6)
    print(f"latest onnxruntime: {version}; dev: {onnxruntime.__version__}", file=sys.stderr)


BATCH_SCRIPT = """
import json, sys
import numpy as np, onnxruntime as ort
import dc_onnx
options = ort.SessionOptions()
options.intra_op_num_threads = 1
for model, inputs, output in json.loads(sys.argv[1]):
    feeds = dict(np.load(inputs))
    np.save(output, dc_onnx.InferenceSession(model, options).run(None, feeds)[0])
"""


def test_storage_forms_run_in_the_latest_onnxruntime(tmp_path: Path) -> None:
    """Subgraphs, LSTM/GRU, fp16/bf16 and int8 storage forms: in the latest ORT too, the
    compiled model computes what the original computes there (bit for bit when lossless:
    that ORT may fuse DequantizeLinear + MatMul differently from 1.19, in both models)."""
    python = _runtime_python()
    jobs = []
    for name, build in BUILDERS.items():
        model, feeds, _ = build()
        source = tmp_path / f"{name}.onnx"
        onnx.save(model, str(source))
        compiled = compile_model(model, tmp_path, name=name, quality=0.0, bits_fc=8)
        inputs = tmp_path / f"{name}.npz"
        np.savez(inputs, **feeds)
        jobs.append((name, [str(p) for p in (source, inputs, tmp_path / f"{name}.npy")]))
        jobs.append((name, [str(p) for p in (compiled, inputs, tmp_path / f"{name}.dc.npy")]))
    done = subprocess.run(
        [str(python), "-c", BATCH_SCRIPT, json.dumps([job for _, job in jobs])],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in BUILDERS:
        expected, actual = (np.load(tmp_path / f"{name}{s}.npy") for s in ("", ".dc"))
        if name in ("qdq_int8", "matmul_integer"):
            assert np.array_equal(actual, expected), name
        else:
            error = np.linalg.norm(actual - expected) / np.linalg.norm(expected)
            assert error < 0.03, f"{name}: relative error {error:.4f}"


def _run_latest(compiled: Path, feeds: dict[str, np.ndarray], tmp_path: Path) -> np.ndarray:
    """The compiled model's first output, computed in the latest-onnxruntime venv."""
    inputs, result = tmp_path / "inputs.npz", tmp_path / "out.npy"
    np.savez(inputs, **feeds)
    done = subprocess.run(
        [str(_runtime_python()), "-c", SCRIPT, str(compiled), str(inputs), str(result)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return np.load(result)


def test_embedding_gather_runs_in_the_latest_onnxruntime(tmp_path: Path) -> None:
    table = np.random.default_rng(0).standard_normal((400, 24)).astype(np.float16)
    compiled = compile_model(embedding_model(table, 2), tmp_path, sparsity_per_layer={"E": 0.5})
    idx = np.array([[0, -1, 42], [399, -400, 7]], dtype=np.int64)
    (expected,) = run(compiled, {"idx": idx})
    latest = _run_latest(compiled, {"idx": idx}, tmp_path)
    assert latest.dtype == np.float16
    assert latest.tobytes() == expected.tobytes()
    int32_model = embedding_model(table, 2, onnx.TensorProto.INT32)
    compiled = compile_model(int32_model, tmp_path, name="int32")
    idx32 = idx.astype(np.int32)
    assert _run_latest(compiled, {"idx": idx32}, tmp_path).tobytes() == (
        run(compiled, {"idx": idx32})[0].tobytes()
    )


def test_decoded_conv_transpose_runs_in_the_latest_onnxruntime(tmp_path: Path) -> None:
    w = np.random.default_rng(0).standard_normal((16, 4, 3, 3)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="up", strides=[2, 2], group=2)
    model = make_model([node], {"x": [1, 16, 5, 6]}, {"y": [1, 8, 11, 13]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.5)
    x = np.random.default_rng(1).standard_normal((1, 16, 5, 6)).astype(np.float32)
    latest = _run_latest(compiled, {"x": x}, tmp_path)
    (expected,) = run(compiled, {"x": x})
    np.testing.assert_allclose(latest, expected, rtol=1e-5, atol=1e-5)
