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
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
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


_REGISTERED_KEY = "dc_onnx.custom_ops_registered"


def session_options(options: Any = None) -> Any:
    """ORT SessionOptions (new, or the given ones) with the custom-op library registered.

    Registering twice on the same options makes newer ORTs refuse the next session
    ("Domain already set in registry"), so the options remember it in a config entry.
    """
    ort = _onnxruntime()
    options = options if options is not None else ort.SessionOptions()
    try:
        registered = options.get_session_config_entry(_REGISTERED_KEY) == "1"
    except RuntimeError:  # ORT raises for a key it does not hold
        registered = False
    if not registered:
        options.register_custom_ops_library(ops_library_path())
        options.add_session_config_entry(_REGISTERED_KEY, "1")
    return options


def InferenceSession(
    path: str | os.PathLike[str] | bytes,
    sess_options: Any = None,
    providers: list[str] | None = None,
    materialize: bool = True,
    **kwargs: Any,
) -> Any:
    """An onnxruntime.InferenceSession that can run compiled models (and any other).

    With `materialize` (the default), storage-form weights (CompressedConstant nodes) are
    decoded once here and given to ORT as plain initializers, so no Run pays for them
    (dc_onnx.materialize); without it they are decoded at session creation by the op and
    copied to its output on every Run, as in any other ORT host.
    """
    ort = _onnxruntime()
    options = session_options(sess_options)
    model = path if isinstance(path, bytes) else os.fspath(path)
    if materialize:
        from dc_onnx.materialize import materialize as decode_constants

        model = decode_constants(path, options) or model
    return ort.InferenceSession(
        model,
        sess_options=options,
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
