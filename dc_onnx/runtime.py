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
    providers = providers or ["CPUExecutionProvider"]
    model = path if isinstance(path, bytes) else os.fspath(path)
    if materialize:
        from dc_onnx.materialize import materialize as decode_constants

        decoded = decode_constants(path, options)
        if decoded is not None and not isinstance(path, bytes):
            session_type = _materialized_session_type(ort)
            session = session_type(path, decoded, options, providers=providers, **kwargs)
            del decoded
            _return_freed_memory()
            return session
        model = decoded or model
    return ort.InferenceSession(model, sess_options=options, providers=providers, **kwargs)


_MATERIALIZED_SESSION: Any = None


def _return_freed_memory() -> None:
    """Give the heap the decode's temporary copies took back to the system (glibc keeps
    freed memory mapped: 32 MiB of RSS on an 8-bit minilm-l3); elsewhere, nothing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _materialized_session_type(ort: Any) -> Any:
    """ort.InferenceSession, created from a materialised model's bytes, that does not keep
    them. ORT's Python session holds the bytes it was created from for its whole life (to
    create the session again after a provider change); with the decoded weights embedded,
    that is a second copy of them (36 MB on an 8-bit minilm-l3). This one drops them once
    ORT has read them, and decodes the file again if ORT ever needs them back."""
    global _MATERIALIZED_SESSION
    if _MATERIALIZED_SESSION is not None:
        return _MATERIALIZED_SESSION

    class MaterializedSession(ort.InferenceSession):
        def __init__(self, path: Any, decoded: bytes, options: Any, **kwargs: Any) -> None:
            self._dc_onnx_path = path
            super().__init__(decoded, sess_options=options, **kwargs)

        def _create_inference_session(self, *args: Any, **kwargs: Any) -> Any:
            from dc_onnx.materialize import materialize as decode_constants

            if getattr(self, "_model_bytes", None) is None:  # again (fallback, set_providers)
                self._model_bytes = decode_constants(self._dc_onnx_path, self._sess_options)
            try:
                return super()._create_inference_session(*args, **kwargs)
            finally:
                self._model_bytes = None

    _MATERIALIZED_SESSION = MaterializedSession
    return MaterializedSession


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
