"""The side-file container: a header with a checksummed table of streams (docs/format.md)."""

from __future__ import annotations

import dataclasses
import enum
import struct
import zlib

MAGIC = b"DCONNXW\0"
# The version written, and those read. docs/format.md says what each version added; a
# runtime refuses any other, naming both.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# From this version on, the model's header initializer is the whole side file and each
# node slices its streams from it by TOC index; before, every stream was an initializer.
WHOLE_FILE_VERSION = 3
_HEADER = struct.Struct("<8sHHIII")  # magic, version, reserved, n_streams, toc_crc, reserved
_ENTRY = struct.Struct("<QQQIHH")  # offset, nbytes, count, crc32, kind, reserved
HEADER_SIZE = _HEADER.size
ENTRY_SIZE = _ENTRY.size


class ContainerError(ValueError):
    """A side file or header that does not follow the container format."""


class StreamKind(enum.IntEnum):
    CODEBOOK = 1
    CODES = 2
    GAPS = 3
    CODE_LENGTHS = 4
    ROW_SCALES = 5  # version 2


@dataclasses.dataclass(frozen=True)
class Stream:
    kind: StreamKind
    data: bytes
    count: int


@dataclasses.dataclass(frozen=True)
class TocEntry:
    offset: int
    nbytes: int
    count: int
    crc32: int
    kind: StreamKind


def header_size(n_streams: int) -> int:
    return HEADER_SIZE + ENTRY_SIZE * n_streams


def layout(streams: list[Stream]) -> tuple[bytes, list[TocEntry]]:
    """Header bytes and TOC for streams stored back to back, in the given order."""
    offset = header_size(len(streams))
    toc = []
    for s in streams:
        toc.append(TocEntry(offset, len(s.data), s.count, zlib.crc32(s.data), s.kind))
        offset += len(s.data)
    toc_bytes = b"".join(_ENTRY.pack(e.offset, e.nbytes, e.count, e.crc32, e.kind, 0) for e in toc)
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(streams), zlib.crc32(toc_bytes), 0)
    return head + toc_bytes, toc


def pack(streams: list[Stream]) -> tuple[bytearray, list[TocEntry]]:
    """The whole side file (header, TOC, then the streams back to back) and its TOC, in
    one buffer: each stream is copied once, into its place."""
    header, toc = layout(streams)
    out = bytearray(toc[-1].offset + toc[-1].nbytes if toc else len(header))
    out[: len(header)] = header
    for stream, entry in zip(streams, toc, strict=True):
        out[entry.offset : entry.offset + entry.nbytes] = stream.data
    return out, toc


def format_version(data: bytes) -> int:
    """The format_version field of a side file or header (0 when too short to hold one)."""
    return int.from_bytes(data[8:10], "little") if len(data) >= HEADER_SIZE else 0


def parse_header(data: bytes) -> list[TocEntry]:
    """The TOC of a side file (or of its header alone), validated."""
    if len(data) < HEADER_SIZE:
        raise ContainerError("side file shorter than its header")
    magic, version, _, n, toc_crc, _ = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ContainerError("not a dc-onnx side file (bad magic)")
    if version not in READABLE_VERSIONS:
        raise ContainerError(
            f"side file format_version {version} is not supported (this dc-onnx reads versions "
            f"{READABLE_VERSIONS[0]} to {READABLE_VERSIONS[-1]})"
        )
    end = header_size(n)
    if len(data) < end:
        raise ContainerError("side file header truncated")
    if zlib.crc32(data[HEADER_SIZE:end]) != toc_crc:
        raise ContainerError("side file table of contents is corrupted (CRC-32 mismatch)")
    toc = []
    for i in range(n):
        off, nbytes, count, crc, kind, _ = _ENTRY.unpack_from(data, HEADER_SIZE + i * ENTRY_SIZE)
        if off < end:
            raise ContainerError(f"stream {i} starts inside the side file's header")
        try:
            toc.append(TocEntry(off, nbytes, count, crc, StreamKind(kind)))
        except ValueError:
            raise ContainerError(f"stream {i} has unknown kind {kind}") from None
    return toc


def read_stream(data: bytes, entry: TocEntry, index: int) -> bytes:
    """Stream bytes from a whole side file, with bounds and checksum checked."""
    if entry.offset + entry.nbytes > len(data):
        raise ContainerError(f"stream {index} lies beyond the end of the side file")
    chunk = data[entry.offset : entry.offset + entry.nbytes]
    if zlib.crc32(chunk) != entry.crc32:
        raise ContainerError(f"stream {index} is corrupted (CRC-32 mismatch)")
    return chunk
