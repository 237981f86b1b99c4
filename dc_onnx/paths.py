"""Checks on output paths, made before anything is written.

The input model and every external data file it reads are protected: no output, report
or temporary may be one of them (compared with `os.path.samefile`, so links and other
spellings of a path are caught too). The checks here run before compiling, so a bad path
costs no work and leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dc_onnx.codecs.schema import SIDE_FILE_SUFFIX
from dc_onnx.errors import OutputError


def same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one file (by inode when both exist, else by resolved path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_not_protected(path: Path, protected: Iterable[Path], what: str) -> None:
    for p in protected:
        if same_file(path, p):
            raise OutputError(f"{path}: refusing to write the {what} over the input file {p}")


def check_writable(path: Path, protected: Iterable[Path], what: str) -> None:
    """`path` can be created or replaced by a rename from a temporary beside it."""
    if path.is_dir():
        raise OutputError(f"{path}: the {what} path is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{parent}: the {what}'s directory does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: no permission to write the {what} there")
    check_not_protected(path, protected, what)


def check_output(path: Path, protected: Iterable[Path]) -> None:
    """The compiled model's path is usable; its side files get names of their own."""
    if path.suffix == SIDE_FILE_SUFFIX:
        raise OutputError(
            f"{path}: '{SIDE_FILE_SUFFIX}' is the side file's suffix; name the model '.onnx'"
        )
    check_writable(path, protected, "output")


def check_report(report: Path, output: Path | None, protected: Iterable[Path]) -> None:
    check_writable(report, protected, "report")
    if output is not None and same_file(report, output):
        raise OutputError(f"{report}: the report and the compiled model have the same path")
