"""Running compiled models: the custom-op library and ORT sessions that have it."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dc_onnx.errors import DcOnnxError, InputError

_LIBRARY = {
    "linux": "libdc_onnx_ops.so",
    "darwin": "libdc_onnx_ops.dylib",
    "win32": "dc_onnx_ops.dll",
}

# ORT's names of tensor types -> numpy: how verify, eval and bench feed a session.
NUMPY_TYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def ops_library_path() -> str:
    """Path of the custom-op shared library installed with the package.

    The environment variable DC_ONNX_OPS_LIBRARY, when set, names another build of it
    instead (`make asan-test` runs the tests against a sanitizer build that way).
    """
    override = os.environ.get("DC_ONNX_OPS_LIBRARY")
    if override:
        if not Path(override).is_file():
            raise DcOnnxError(f"DC_ONNX_OPS_LIBRARY={override} is not a file")
        return override
    name = _LIBRARY.get(sys.platform, _LIBRARY["linux"])
    path = resources.files("dc_onnx") / "lib" / name
    if not path.is_file():
        raise DcOnnxError(
            f"custom-op library {name} is not installed with dc_onnx; "
            "install the package with pip (it builds runtime_ops/), not from a source tree"
        )
    return str(path)


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise DcOnnxError(
            "ONNX Runtime is not installed: pip install 'dc-onnx[runtime]' (or '[train]')"
        ) from None
    return onnxruntime


def session_options(options: Any = None) -> Any:
    """ORT SessionOptions (new, or the given ones) with the custom-op library registered."""
    ort = _onnxruntime()
    options = options if options is not None else ort.SessionOptions()
    options.register_custom_ops_library(ops_library_path())
    return options


def InferenceSession(
    path: str | os.PathLike[str],
    sess_options: Any = None,
    providers: list[str] | None = None,
    **kwargs: Any,
) -> Any:
    """An onnxruntime.InferenceSession that can run compiled models (and any other)."""
    ort = _onnxruntime()
    return ort.InferenceSession(
        os.fspath(path),
        sess_options=session_options(sess_options),
        providers=providers or ["CPUExecutionProvider"],
        **kwargs,
    )


def open_session(path: str | os.PathLike[str], sess_options: Any = None) -> Any:
    """InferenceSession on a user-given file; InputError (not ORT's exception) on failure."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        return InferenceSession(path, sess_options)
    except DcOnnxError:
        raise
    except Exception as e:  # ORT raises its own exception types for any load failure
        raise InputError(f"{path}: ONNX Runtime cannot load it: {e}") from None
