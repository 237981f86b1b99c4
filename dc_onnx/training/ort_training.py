"""Torch-free access to onnxruntime-training's on-device training API.

`onnxruntime-training-cpu` (last release 1.19.2) ships two submodules that dc-onnx needs:
`onnxruntime.training.artifacts` (``generate_artifacts``: builds the training, eval and
optimizer graphs plus a checkpoint) and `onnxruntime.training.api` (``Module``,
``Optimizer``, ``CheckpointState``: runs them). Neither of them needs PyTorch, but the
package's ``__init__.py`` imports ``onnxruntime.training.amp``/``optim``, which import
``torch`` (upstream issue microsoft/onnxruntime#22070). Installing torch only to get past an
import would add gigabytes to the ``train`` extra, so :func:`load_training_api` registers a
bare package object for ``onnxruntime.training`` (same ``__path__``, no ``__init__`` run)
and imports the two submodules through it.

Side effect: after the call, ``sys.modules["onnxruntime.training"]`` is that bare package
for the rest of the process. If the real package was imported earlier (torch present), it
is reused untouched.

The training build also needs ``onnx<1.18``: newer onnx writes IR version 14 into the
optimizer graph, which the 1.19 runtime rejects ("Unsupported model IR version: 14").
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path
from typing import NamedTuple

__all__ = ["INSTALL_HINT", "OrtTrainingUnavailableError", "TrainingAPI", "load_training_api"]

_PACKAGE = "onnxruntime.training"

INSTALL_HINT = (
    "install the 'train' extra: pip install 'dc-onnx[train]' "
    "(onnxruntime-training-cpu==1.19.2 with onnx<1.18), and do not install the plain "
    "'onnxruntime' wheel beside it (both provide the 'onnxruntime' module)"
)


class OrtTrainingUnavailableError(ImportError):
    """Raised when the onnxruntime-training build (or a compatible onnx) is not installed."""


class TrainingAPI(NamedTuple):
    """The two onnxruntime-training submodules dc-onnx uses."""

    artifacts: types.ModuleType
    """``onnxruntime.training.artifacts`` (``generate_artifacts``, ``LossType``, ``OptimType``)."""
    api: types.ModuleType
    """``onnxruntime.training.api`` (``Module``, ``Optimizer``, ``CheckpointState``, ...)."""


def _onnx_major_minor() -> tuple[int, int] | None:
    try:
        version = importlib.metadata.version("onnx")
    except importlib.metadata.PackageNotFoundError:
        return None
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def _training_dir() -> Path:
    """Directory of the onnxruntime.training package, without importing it."""
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise OrtTrainingUnavailableError(
            f"onnxruntime is not installed ({exc}); {INSTALL_HINT}"
        ) from exc
    for entry in getattr(ort, "__path__", []):
        candidate = Path(entry) / "training"
        if (candidate / "artifacts.py").is_file() and (candidate / "api").is_dir():
            return candidate
    raise OrtTrainingUnavailableError(
        "the installed onnxruntime "
        f"{getattr(ort, '__version__', '?')} is not the training build "
        f"(no onnxruntime/training/artifacts.py); {INSTALL_HINT}"
    )


def _register_bare_package(path: Path) -> None:
    """Put an ``onnxruntime.training`` package in sys.modules without running its __init__."""
    spec = importlib.machinery.ModuleSpec(_PACKAGE, loader=None, is_package=True)
    spec.submodule_search_locations = [str(path)]
    module = importlib.util.module_from_spec(spec)
    module.__file__ = None
    sys.modules[_PACKAGE] = module
    parent = sys.modules["onnxruntime"]
    parent.training = module  # type: ignore[attr-defined]


def load_training_api() -> TrainingAPI:
    """Import and return onnxruntime-training's ``artifacts`` and ``api`` submodules.

    Works without PyTorch. Raises :class:`OrtTrainingUnavailableError` with install
    instructions when the training build is missing or onnx is too new for it.
    """
    registered = _PACKAGE not in sys.modules
    training_dir = _training_dir() if registered else None
    onnx_version = _onnx_major_minor()
    if onnx_version is not None and onnx_version >= (1, 18):
        raise OrtTrainingUnavailableError(
            f"onnx {onnx_version[0]}.{onnx_version[1]} is too new for onnxruntime-training "
            f"1.19.2 (it writes an IR version above the runtime's maximum, 10); {INSTALL_HINT}"
        )
    if training_dir is not None:
        _register_bare_package(training_dir)
    try:
        artifacts = importlib.import_module(f"{_PACKAGE}.artifacts")
        api = importlib.import_module(f"{_PACKAGE}.api")
    except ImportError as exc:
        if registered:
            sys.modules.pop(_PACKAGE, None)
        raise OrtTrainingUnavailableError(
            f"could not import onnxruntime-training's artifacts/api ({exc}); {INSTALL_HINT}"
        ) from exc
    return TrainingAPI(artifacts=artifacts, api=api)
