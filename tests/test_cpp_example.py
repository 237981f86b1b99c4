"""examples/cpp: the C++ API program runs a compiled LeNet and agrees with Python.

`make test` builds it (`make example`, build/example/dc_onnx_run) against the latest
onnxruntime wheel's shared library; DC_ONNX_EXAMPLE names another build.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, MODELS, REPO, run
from dc_onnx.cli import main
from dc_onnx.runtime import ops_library_path

PROGRAM = Path(os.environ.get("DC_ONNX_EXAMPLE", REPO / "build" / "example" / "dc_onnx_run"))


@pytest.fixture(scope="module")
def program() -> Path:
    assert PROGRAM.exists(), f"{PROGRAM} missing: `make example` (part of `make test`) builds it"
    return PROGRAM


def _run(program: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), *map(str, args)], capture_output=True, text=True, check=False, timeout=120
    )


def test_the_cpp_example_matches_python_on_a_compiled_lenet(tmp_path: Path, program: Path) -> None:
    compiled = tmp_path / "lenet5.dc.onnx"
    assert main(["compile", str(MODELS / "lenet5.onnx"), "-o", str(compiled), "--quiet"]) == 0
    mnist = np.load(DATA / "mnist_test_subset.npz")
    x = (mnist["images"][:16].astype(np.float32) / 255).reshape(16, 1, 28, 28)
    (expected,) = run(compiled, {"input": x})
    np.save(tmp_path / "x.npy", x)
    x.tofile(tmp_path / "x.raw")
    for source in ("x.npy", "x.raw"):
        out = tmp_path / f"{source}.out"
        done = _run(program, compiled, ops_library_path(), tmp_path / source, "--save", out)
        assert done.returncode == 0, done.stderr
        got = np.fromfile(out, dtype=np.float32).reshape(expected.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        top1 = [int(c) for c in re.findall(r"top-1 class (\d+)", done.stdout)]
        assert top1 == expected.argmax(1).tolist()


def test_the_cpp_example_reports_errors(tmp_path: Path, program: Path) -> None:
    compiled = tmp_path / "lenet.dc.onnx"
    assert (
        main(["compile", str(MODELS / "lenet-300-100.onnx"), "-o", str(compiled), "--quiet"]) == 0
    )
    (tmp_path / "bad.raw").write_bytes(b"\0" * 12)  # 3 floats: no whole 28x28 image
    done = _run(program, compiled, ops_library_path(), tmp_path / "bad.raw")
    assert done.returncode == 1 and "error:" in done.stderr and "do not fill" in done.stderr
    done = _run(program, compiled, tmp_path / "missing.so", tmp_path / "bad.raw")
    assert done.returncode == 1 and "error:" in done.stderr
    assert _run(program).returncode == 2
