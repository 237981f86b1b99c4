"""The package imports from a source checkout exactly as it does once installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_passes_import_from_the_repo_root() -> None:
    # `python -c` puts the working directory first on sys.path, so this imports the
    # source tree, not the installed wheel.
    code = "import dc_onnx, dc_onnx.passes.lower as m; print(dc_onnx.__file__, m.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    package_file, lower_file = result.stdout.split()
    assert Path(package_file).parent == REPO_ROOT / "dc_onnx"
    assert Path(lower_file).resolve() == REPO_ROOT / "passes" / "lower.py"
