"""Writing a compiled model: the `.onnx`, its side file and its external data, atomically.

Every file is first written to a temporary beside its final path and flushed to disk.
The side file (`<stem>.<hash>.dcw`) and the data file of the weights left dense
(`<stem>.<hash>.data`) carry a hash of their content in their name, and the `.onnx`
refers to them by that name. They are renamed into place first and the `.onnx` last,
so a reader sees either the previous model with its own files or the new one with its
own: never a mixed pair. The files of the previous output are removed after the new
model is in place, and only files that follow our naming (the side file must also
start with our magic). On any failure the temporaries go and the previous output stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import onnx
import onnx_ir as ir

from dc_onnx.codecs.container import MAGIC
from dc_onnx.codecs.schema import (
    DATA_FILE_SUFFIX,
    HEADER_NAME,
    SIDE_FILE_SUFFIX,
)
from dc_onnx.codecs.wiring import holds_streams, tensor_bytes
from dc_onnx.errors import OutputError
from dc_onnx.paths import check_not_protected, check_output, same_file

logger = logging.getLogger(__name__)

PROTOBUF_LIMIT = 2**31  # a serialized ModelProto must stay below 2 GiB
_HASH_CHARS = 8  # names only need to differ from the previous output's
_CHUNK = 16 << 20  # copy external data 16 MiB at a time: memory stays bounded
_PAGE = 4096  # large dense tensors start on a page boundary, so ORT can map them


def save_compiled(
    model: ir.Model,
    path: str | os.PathLike[str],
    single_file: bool = False,
    protected: Iterable[Path] = (),
) -> list[Path]:
    """Write the compiled model and its files; return them, the `.onnx` first.

    `protected` are input files no output may replace (the input model and its data).
    Raises OutputError, after removing every temporary, when anything cannot be written.
    """
    out = Path(path)
    protected = list(protected)
    check_output(out, protected)
    previous = _previous_companions(out)
    proto = ir.to_proto(model)  # external tensors stay references to their files
    _drop_initializer_value_info(proto.graph)
    sources = {
        str(v.name): v.const_value
        for v in model.graph.initializers.values()
        if isinstance(v.const_value, ir.ExternalTensor)
    }
    try:
        with _Staging(out) as stage:
            initializers = {t.name: t for t in proto.graph.initializer}
            dense = [t for t in proto.graph.initializer if t.name in sources]
            if single_file:
                _inline(proto, dense, sources)
            else:
                if HEADER_NAME in initializers:
                    _write_side_file(stage, initializers[HEADER_NAME])
                if dense:
                    _write_dense_data(stage, dense, sources)
            if proto.ByteSize() >= PROTOBUF_LIMIT:
                raise OutputError(
                    f"{out}: the model would be {proto.ByteSize() / 2**30:.2f} GiB, over"
                    " protobuf's 2 GiB limit" + (": drop --single-file" if single_file else "")
                )
            stage.add(out, proto.SerializeToString())
            for final in stage.finals()[:-1]:
                check_not_protected(final, protected, "output")
            written = stage.commit()
    except OSError as e:
        raise OutputError(f"{e.filename or out}: cannot write the output ({e.strerror})") from None
    _remove_previous(previous, written, protected)
    return written[-1:] + written[:-1]


def _drop_initializer_value_info(graph: onnx.GraphProto) -> None:
    """Removes the value_info of the graph's own initializers, in subgraphs too: the
    initializer already holds their type and shape, and the serializer repeats it for
    every one (5% of a small classifier's compressed .onnx)."""
    names = {t.name for t in graph.initializer}
    kept = [v for v in graph.value_info if v.name not in names]
    if len(kept) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(kept)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _drop_initializer_value_info(attr.g)
            for sub in attr.graphs:
                _drop_initializer_value_info(sub)


def write_file(path: Path, text: str) -> None:
    """Write a small file (a report) atomically: a temporary beside it, then a rename."""
    try:
        with _Staging(path) as stage:
            stage.add(path, text.encode())
            stage.commit()
    except OSError as e:
        raise OutputError(f"{e.filename or path}: cannot write ({e.strerror})") from None


class _Staging:
    """Temporaries beside the output, renamed into place in order by `commit`."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: list[tuple[Path, Path | None]] = []  # (temporary, final)

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        for tmp, _ in self.files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def open(self) -> tuple[Path, int]:
        """A new empty temporary (with the usual permissions of a new file) and its fd."""
        fd, name = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
        tmp = Path(name)
        self.files.append((tmp, None))
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600
        return tmp, fd

    def name(self, tmp: Path, final: Path) -> None:
        self.files = [(t, final if t == tmp else f) for t, f in self.files]

    def add(self, final: Path, data: bytes) -> None:
        tmp, fd = self.open()
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            _flush(f)
        self.name(tmp, final)

    def finals(self) -> list[Path]:
        return [f for _, f in self.files if f is not None]

    def commit(self) -> list[Path]:
        """Rename every temporary into place, in the order added; the model comes last."""
        for tmp, final in self.files:
            assert final is not None
            os.replace(tmp, final)
        _sync_directory(self.out.parent)
        finals = self.finals()
        self.files = []
        return finals


def _flush(f: object) -> None:
    f.flush()  # type: ignore[attr-defined]
    os.fsync(f.fileno())  # type: ignore[attr-defined]


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingWriter:
    """A binary file that hashes what is written to it."""

    def __init__(self, fd: int) -> None:
        self.file = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> None:
        self.file.write(data)
        self.hash.update(data)

    def tell(self) -> int:
        return self.file.tell()

    def pad_to(self, alignment: int) -> None:
        self.write(b"\0" * (-self.tell() % alignment))

    def close(self) -> str:
        _flush(self.file)
        self.file.close()
        return self.hash.hexdigest()[:_HASH_CHARS]


def _companion(out: Path, digest: str, suffix: str) -> Path:
    return out.with_name(f"{out.stem}.{digest}{suffix}")


def _write_side_file(stage: _Staging, header: onnx.TensorProto) -> None:
    """The side file to a temporary; the header initializer, which holds it whole (format
    version 3), then points at its final name."""
    data = tensor_bytes(header)
    if not holds_streams(data):
        raise AssertionError("the header initializer does not hold the whole side file")
    tmp, fd = stage.open()
    f = _HashingWriter(fd)
    try:
        f.write(data)
    finally:
        digest = f.close()
    final = _companion(stage.out, digest, SIDE_FILE_SUFFIX)
    stage.name(tmp, final)
    _point_to(header, final.name, 0, len(data))


def _write_dense_data(
    stage: _Staging, dense: list[onnx.TensorProto], sources: dict[str, ir.ExternalTensor]
) -> None:
    """Copy the external tensors into the output's `.data` file: weights left dense from
    the input's external data, and float16 weights from scratch files (passes/half.py)."""
    tmp, fd = stage.open()
    f = _HashingWriter(fd)
    extents = []
    try:
        for tensor in dense:
            source = sources[tensor.name]
            nbytes = source.length if source.length is not None else source.nbytes
            f.pad_to(_PAGE if nbytes >= 16 * _PAGE else 64)
            extents.append((f.tell(), nbytes))
            for chunk in _read_chunks(source, nbytes):
                f.write(chunk)
    finally:
        digest = f.close()
    final = _companion(stage.out, digest, DATA_FILE_SUFFIX)
    stage.name(tmp, final)
    for tensor, (offset, nbytes) in zip(dense, extents, strict=True):
        _point_to(tensor, final.name, offset, nbytes)


def _read_chunks(source: ir.ExternalTensor, nbytes: int) -> Iterator[bytes]:
    with open(source.path, "rb") as f:
        f.seek(source.offset or 0)
        left = nbytes
        while left:
            chunk = f.read(min(left, _CHUNK))
            if not chunk:
                raise OutputError(f"{source.path}: external data of '{source.name}' is truncated")
            left -= len(chunk)
            yield chunk


def _inline(
    proto: onnx.ModelProto, dense: list[onnx.TensorProto], sources: dict[str, ir.ExternalTensor]
) -> None:
    """--single-file: embed the dense external tensors, if the model stays under 2 GiB."""
    extra = sum(sources[t.name].nbytes for t in dense)
    total = proto.ByteSize() + extra
    if total >= PROTOBUF_LIMIT:
        raise OutputError(
            f"--single-file: the model would be {total / 2**30:.2f} GiB, over protobuf's"
            " 2 GiB limit; without --single-file its weights stay in external files"
        )
    for tensor in dense:
        source = sources[tensor.name]
        nbytes = source.length if source.length is not None else source.nbytes
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        tensor.raw_data = b"".join(_read_chunks(source, nbytes))


def _point_to(tensor: onnx.TensorProto, location: str, offset: int, nbytes: int) -> None:
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", nbytes)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)


def _previous_companions(out: Path) -> list[Path]:
    """Side and data files of the model now at `out` that we wrote (by name and magic)."""
    if not out.is_file():
        return []
    try:
        proto = onnx.load(str(out), load_external_data=False)
    except Exception:  # not a model we can read: it refers to nothing we would remove
        return []
    ours = re.compile(
        rf"{re.escape(out.stem)}\.[0-9a-f]{{{_HASH_CHARS}}}"
        rf"({re.escape(SIDE_FILE_SUFFIX)}|{re.escape(DATA_FILE_SUFFIX)})"
    )
    found = set()
    for tensor in proto.graph.initializer:
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        match = ours.fullmatch(location)
        path = out.parent / location
        if match is None or not path.is_file():
            continue
        if match.group(1) == SIDE_FILE_SUFFIX and not _starts_with_magic(path):
            continue
        found.add(path)
    return sorted(found)


def _starts_with_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _remove_previous(previous: list[Path], written: list[Path], protected: list[Path]) -> None:
    for path in previous:
        if any(same_file(path, p) for p in [*written, *protected]):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:  # the new output is in place; a stale file is only clutter
            logger.warning("could not remove the previous output's %s: %s", path, e.strerror)
