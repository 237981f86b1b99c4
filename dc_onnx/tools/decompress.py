"""`dc-onnx decompress`: a compiled model back to a standard dense ONNX model.

The dense weights are the reference decoder's (`dc_onnx.tools.decompile`), so they are
exactly the values the custom ops compute with; the result needs no custom-op library and
passes `onnx.checker` with full checks. The output is written atomically and is never the
input or its side file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path

import onnx

from dc_onnx.codecs.huffman import HuffmanError
from dc_onnx.errors import InputError
from dc_onnx.io import external_data_files
from dc_onnx.tools.decompile import decode_model
from dc_onnx.tools.inspect import load_compiled

__all__ = ["DecompressResult", "decompress"]

# protobuf refuses to serialise a message of 2 GiB or more: bigger models keep their
# weights in one external data file beside the output.
_PROTOBUF_LIMIT = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class DecompressResult:
    output: Path
    files: list[Path]
    bytes: int


def decompress(path: str | os.PathLike[str], output: str | os.PathLike[str]) -> DecompressResult:
    """Write the dense model of the compiled model at `path` to `output`."""
    source, out = Path(path), Path(output)
    load_compiled(source)  # refuses a missing file or a model that is not compiled
    protected = {source.resolve(), *(f.resolve() for f in external_data_files(source))}
    if out.resolve() in protected:
        raise InputError(f"refusing to overwrite the input {out}")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: output directory does not exist")
    try:
        model = decode_model(source)
    except (ValueError, HuffmanError) as e:  # container, Huffman and index errors
        raise InputError(f"{source}: {e}") from None
    external = model.ByteSize() > _PROTOBUF_LIMIT
    data_name = out.name + ".data"
    if external and (out.parent / data_name).resolve() in protected:
        raise InputError(f"refusing to overwrite the input {out.parent / data_name}")
    try:
        onnx.checker.check_model(model, full_check=not external)
    except Exception as e:
        raise InputError(f"{source}: the decoded model does not pass onnx.checker: {e}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if external:
            onnx.save_model(model, tmp, save_as_external_data=True, location=data_name)
        else:
            onnx.save_model(model, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    files = [out] + ([out.parent / data_name] if external else [])
    return DecompressResult(out, files, sum(f.stat().st_size for f in files))
