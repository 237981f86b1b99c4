"""Loading models and writing compiled ones: side file, atomic writes, clear errors."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from dc_onnx.codecs.container import parse_header
from dc_onnx.codecs.schema import DOMAIN, HEADER_NAME, SIDE_FILE_SUFFIX, stream_inputs
from dc_onnx.errors import InputError

__all__ = ["load_model", "save_compiled", "side_file_path"]


def side_file_path(model_path: str | os.PathLike[str]) -> Path:
    return Path(model_path).with_suffix(SIDE_FILE_SUFFIX)


def load_model(path: str | os.PathLike[str]) -> ir.Model:
    """Load an ONNX model (external data included) or raise InputError saying why not."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        proto = onnx.load(str(p), load_external_data=True)
    except Exception as e:  # protobuf reports bad files with many exception types
        raise InputError(f"{p}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise InputError(f"{p}: not an ONNX model (no graph nodes)")
    try:
        return ir.from_proto(proto)
    except Exception as e:
        raise InputError(f"{p}: the ONNX model could not be read ({e})") from None


def _temp_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    return Path(tmp)


def _stream_order(graph: onnx.GraphProto) -> list[str]:
    """Initializer names of the side file's streams, in TOC order (from `stream_ids`)."""
    by_id: dict[int, str] = {}
    for node in graph.node:
        if node.domain != DOMAIN:
            continue
        ids = next(list(a.ints) for a in node.attribute if a.name == "stream_ids")
        streams = node.input[stream_inputs(node.op_type)]
        for stream_id, name in zip(ids, streams, strict=True):
            by_id[stream_id] = name
    return [by_id[i] for i in sorted(by_id)]


def save_compiled(
    model: ir.Model, path: str | os.PathLike[str], single_file: bool = False
) -> list[Path]:
    """Write the compiled model (and its side file); return the files written.

    Both files are written under temporary names, then renamed into place, side file
    first, so a failure never leaves a half-written model behind.
    """
    out = Path(path)
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: output directory does not exist")
    proto = ir.to_proto(model)
    side = side_file_path(out)
    initializers = {t.name: t for t in proto.graph.initializer}
    external = HEADER_NAME in initializers and not single_file
    temps: dict[Path, Path] = {}
    try:
        if external:
            temps[side] = _temp_beside(side)
            _write_side_file(proto.graph, initializers, temps[side], side.name)
        temps[out] = _temp_beside(out)
        onnx.save_model(proto, str(temps[out]))
        for final, tmp in temps.items():
            os.replace(tmp, final)
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return list(temps)


def _write_side_file(
    graph: onnx.GraphProto, initializers: dict[str, onnx.TensorProto], tmp: Path, location: str
) -> None:
    """Write header + streams to `tmp` and point their initializers at `location`."""
    header = _raw_bytes(initializers[HEADER_NAME])
    toc = parse_header(header)
    names = [HEADER_NAME, *_stream_order(graph)]
    extents = [(0, len(header))] + [(e.offset, e.nbytes) for e in toc]
    with open(tmp, "wb") as f:
        for name, (offset, nbytes) in zip(names, extents, strict=True):
            tensor = initializers[name]
            data = _raw_bytes(tensor)
            if f.tell() != offset or len(data) != nbytes:
                raise AssertionError(f"stream {name} does not match the side-file TOC")
            f.write(data)
            if nbytes:  # an empty stream stays embedded: readers take length 0 as "to the end"
                _point_to_side_file(tensor, location, offset, nbytes)


def _raw_bytes(tensor: onnx.TensorProto) -> bytes:
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return np.ascontiguousarray(onnx.numpy_helper.to_array(tensor)).tobytes()


def _point_to_side_file(tensor: onnx.TensorProto, location: str, offset: int, nbytes: int) -> None:
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", nbytes)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)
