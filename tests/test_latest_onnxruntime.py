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
import onnxruntime
from coverage_models import BUILDERS

from conftest import REPO, cnn_model, compile_model, mlp_model, run

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


def test_storage_forms_run_in_the_latest_onnxruntime(tmp_path: Path) -> None:
    """Subgraphs, LSTM/GRU, fp16/bf16 and int8 storage forms: same outputs in both ORTs."""
    python = _runtime_python()
    for name, build in BUILDERS.items():
        model, feeds, _ = build()
        compiled = compile_model(model, tmp_path, name=name)
        inputs, result = tmp_path / f"{name}.npz", tmp_path / f"{name}.npy"
        np.savez(inputs, **feeds)
        done = subprocess.run(
            [str(python), "-c", SCRIPT, str(compiled), str(inputs), str(result)],
            capture_output=True, text=True, check=False, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, f"{name}: {done.stderr}"
        (expected,) = run(compiled, feeds)
        np.testing.assert_allclose(np.load(result), expected, rtol=1e-5, atol=1e-5, err_msg=name)
