"""Loading models, and the names of the files a model is made of (its external data)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnx_ir as ir

from dc_onnx.codecs.schema import HEADER_NAME
from dc_onnx.errors import InputError

__all__ = [
    "external_data_files",
    "load_model",
    "load_proto",
    "referenced_files",
    "side_file_of",
]


def load_proto(path: str | os.PathLike[str], external_data: bool = True) -> onnx.ModelProto:
    """An ONNX file as a ModelProto (with or without its external data), or InputError."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        proto = onnx.load(str(p), load_external_data=external_data)
    except Exception as e:  # protobuf reports bad files with many exception types
        raise InputError(f"{p}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise InputError(f"{p}: not an ONNX model (no graph nodes)")
    return proto


def load_model(path: str | os.PathLike[str]) -> ir.Model:
    """Load an ONNX model or raise InputError saying why not.

    Tensors stored as external data stay there (`ir.ExternalTensor`, memory-mapped when
    first read), so a model larger than memory can be loaded; a pass that reads a weight
    releases it when done (`dc_onnx.layers.WeightGroup`).
    """
    p = Path(path)
    proto = load_proto(p, external_data=False)
    for location in external_data_files(p, proto):
        if not location.is_file():
            raise InputError(f"{p}: its external data file {location} does not exist")
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as e:
        cause: BaseException = e  # onnx-ir wraps the reason in one error per graph level
        while cause.__cause__ is not None:
            cause = cause.__cause__
        hint = ""
        if "Map types" in str(cause):  # skl2onnx's ZipMap output (a sequence of maps)
            hint = "; a classifier converted with skl2onnx: convert it with the option zipmap=False"
        raise InputError(f"{p}: the ONNX model could not be read ({cause}){hint}") from None
    ir.external_data.set_base_dir(model.graph, p.parent)
    return model


def external_data_files(path: Path, proto: onnx.ModelProto | None = None) -> list[Path]:
    """The external data files the model at `path` refers to (main graph initializers)."""
    if proto is None:
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception:  # not a model: it names no files (load_model says what is wrong)
            return []
    locations = {
        entry.value
        for tensor in proto.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [path.parent / location for location in sorted(locations)]


def side_file_of(model_path: str | os.PathLike[str]) -> Path | None:
    """The side file a compiled model refers to (None for a `--single-file` model)."""
    path = Path(model_path)
    proto = onnx.load(str(path), load_external_data=False)
    for tensor in proto.graph.initializer:
        if tensor.name == HEADER_NAME:
            location = {e.key: e.value for e in tensor.external_data}.get("location")
            return None if location is None else path.parent / location
    return None


def referenced_files(model: ir.Model) -> set[Path]:
    """The files whose data the in-memory model still reads (its external tensors)."""
    files = set()
    for value in model.graph.initializers.values():
        if isinstance(value.const_value, ir.ExternalTensor):
            files.add(Path(value.const_value.path))
    return files
