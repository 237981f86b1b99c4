"""Dump the Huffman streams of a compiled model for the C++ decode-rate benchmark.

    python models/huffman_streams.py COMPILED.dc.onnx OUT.streams

`runtime_ops/bench/decode_rate.cc` reads OUT.streams and times the library's Huffman
decoder against a baseline one on exactly these streams (`make decode-rate`,
docs/benchmarks.md). The streams are read through the reference reader
(`read_encoded_weight`), so they are checked against the TOC first.

File layout, little-endian: b"DCHS", u32 layers; per layer u32 k, u32 index_bits (0 for a
dense weight: no gaps stream), u64 num_entries, u64 num_codes, u64 gaps bytes,
u64 codes bytes, u64 rows, u64 cols (the stored matrix), then the k + gap-symbol code
lengths (k + 2^index_bits), the gaps stream, the codes stream.
"""

from __future__ import annotations

import argparse
import struct

import onnx

from dc_onnx.codecs.schema import DOMAIN
from dc_onnx.tools.decompile import read_encoded_weight

MAGIC = b"DCHS"


def dump(compiled: str, out: str) -> int:
    """Writes the streams of every compressed node; returns the number of layers."""
    model = onnx.load(compiled, load_external_data=True)
    tensors = {t.name: t for t in model.graph.initializer}
    records = []
    for node in model.graph.node:
        if node.domain != DOMAIN:
            continue
        w, (rows, cols) = read_encoded_weight(node, tensors)
        head = struct.pack(
            "<IIQQQQQQ",
            w.codebook.size,
            w.index_bits,
            w.num_entries,
            w.num_codes,
            len(w.gaps),
            len(w.codes),
            rows,
            cols,
        )
        lengths = w.code_lengths[: w.codebook.size + (1 << w.index_bits)].tobytes()
        records.append(head + lengths + w.gaps + w.codes)
    with open(out, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(records)))
        for r in records:
            f.write(r)
    return len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compiled")
    parser.add_argument("out")
    args = parser.parse_args()
    n = dump(args.compiled, args.out)
    print(f"{args.out}: {n} layers")


if __name__ == "__main__":
    main()
