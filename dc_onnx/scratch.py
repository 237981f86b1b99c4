"""Scratch files for weights rewritten during a compile, so memory holds one weight at a time.

Passes rewrite weights (prune, cluster, retrain). Kept in memory, the rewritten weights of
a model past a few GB would add up to its whole size. While `scratch_directory` is
active (`dc_onnx.compile` opens one beside the output), `as_tensor` writes every array
of `SPILL_BYTES` or more to a file there and returns it as a memory-mapped
`ir.ExternalTensor`, which a pass releases when done with it (`release`). The folder and
its files are removed when the compile ends, whether it succeeded or not.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx_ir as ir

SPILL_BYTES = 16 << 20
_active: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "dc_onnx_scratch", default=None
)


@contextlib.contextmanager
def scratch_directory(parent: Path | None = None, prefix: str = ".dc-onnx") -> Iterator[Path]:
    """A folder for spilled weights, active (for `as_tensor`) until the block ends."""
    with tempfile.TemporaryDirectory(prefix=f"{prefix}.scratch-", dir=parent) as folder:
        token = _active.set(Path(folder))
        try:
            yield Path(folder)
        finally:
            _active.reset(token)


def as_tensor(array: np.ndarray, name: str | None) -> ir.TensorProtocol:
    """`array` as an initializer's tensor: in memory, or spilled to the scratch folder."""
    if _active.get() is None or array.nbytes < SPILL_BYTES:
        return ir.Tensor(array, name=name)
    return from_chunks([array.reshape(-1)], array.shape, array.dtype, name)


def from_chunks(
    chunks: Iterable[np.ndarray], shape: tuple[int, ...], dtype: np.dtype, name: str | None
) -> ir.TensorProtocol:
    """A tensor assembled from flat chunks, written straight to a scratch file if one is active."""
    folder = _active.get()
    if folder is None:
        return ir.Tensor(np.concatenate(list(chunks)).astype(dtype).reshape(shape), name=name)
    fd, path = tempfile.mkstemp(dir=folder, suffix=".bin")
    with os.fdopen(fd, "wb") as f:
        for chunk in chunks:
            f.write(np.ascontiguousarray(chunk, dtype=dtype).data)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if os.path.getsize(path) != nbytes:
        raise AssertionError(f"scratch tensor {name}: wrote {os.path.getsize(path)} of {nbytes} B")
    return ir.ExternalTensor(
        os.path.basename(path),
        offset=0,
        length=nbytes,
        dtype=ir.DataType.from_numpy(np.dtype(dtype)),
        shape=ir.Shape(shape),
        name=name or "",
        base_dir=folder,
    )


def release(tensor: ir.TensorProtocol | None) -> None:
    """Unmap a memory-mapped tensor; it is mapped again when next read."""
    if not isinstance(tensor, ir.ExternalTensor):
        return
    try:
        tensor.release()
    except BufferError:  # a caller still holds a view: the map closes when that goes
        tensor.raw = None


def discard(tensor: ir.TensorProtocol | None) -> None:
    """Release a tensor that was replaced; delete its file if it is one of ours."""
    release(tensor)
    if is_scratch(tensor):
        assert isinstance(tensor, ir.ExternalTensor)
        Path(tensor.path).unlink(missing_ok=True)  # a map still open keeps the data alive


def is_scratch(tensor: ir.TensorProtocol | None) -> bool:
    folder = _active.get()
    return (
        folder is not None
        and isinstance(tensor, ir.ExternalTensor)
        and Path(tensor.base_dir) == folder
    )


def materialize(model: ir.Model) -> None:
    """Bring weights still in scratch files into memory, before the folder goes away."""
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if is_scratch(tensor):
            assert tensor is not None
            value.const_value = ir.Tensor(np.array(tensor.numpy()), name=value.name)
            release(tensor)
