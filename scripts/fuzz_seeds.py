"""Writes the fuzz targets' seed corpus from real compiled models.

Compiles the bundled LeNets (and the small Conv + Gemm model of `decoder_seed.py`, once more
with rows orders apart, so its layers get row scales) with a few option sets, then writes
one seed per compressed layer in the input format of
`runtime_ops/fuzz/fuzz_input.h`: flags (CRCs resealed, the op), the node's attributes as
records, and a side file cut down to that layer's streams (a fresh header and TOC),
so each seed stays small and every byte of it matters to the decoder.
Usage: python scripts/fuzz_seeds.py OUT_DIR
"""

from __future__ import annotations

import argparse
import itertools
import struct
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from dc_onnx.cli import main as dc_onnx_main
from dc_onnx.io import side_file_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoder_seed import seed_model

# The record ids of fuzz_input.h, in its order.
ATTRIBUTES = [
    "weight_shape", "num_entries", "index_bits", "stream_ids", "group", "kernel_shape",
    "strides", "dilations", "pads", "auto_pad", "transA", "weight_side", "alpha", "beta",
    "x_shape", "bias_shape",
]  # fmt: skip
AUTO_PADS = ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]
OPS = {"CompressedGemm": 0, "CompressedMatMul": 1, "CompressedConv": 2}
REPO = Path(__file__).resolve().parent.parent
# The fuzzers' -max_len: larger layers (LeNet-300-100's ip1 at the default density)
# would be cut short, and each execution would cost more for no new code reached.
MAX_SEED_BYTES = 16384
ROW_SPREAD = 1e4  # output channels 1 to 10^4 apart in the "seed-rows" model

# (model, extra `dc-onnx compile` arguments): defaults, high sparsity with few bits (escapes).
RUNS = [
    ("lenet-300-100.onnx", ["--quality", "0.5"]),  # manual: no budget analysis to wait for
    ("lenet-300-100.onnx", ["--sparsity", "0.95", "--bits-fc", "3", "--index-bits-fc", "3"]),
    ("lenet5.onnx", ["--quality", "0.5"]),
    ("lenet5.onnx", ["--sparsity", "0.9", "--bits-conv", "4", "--index-bits-conv", "2"]),
    ("seed", ["--sparsity", "0.75", "--bits-conv", "4", "--index-bits-conv", "2"]),
    ("seed", ["--sparsity", "0.3"]),
    # Rows orders apart: both layers get row scales (the fifth stream) in the kernels.
    ("seed-rows", ["--sparsity", "0.55", "--bits-conv", "3", "--bits-fc", "3", "--max-error", "1"]),
]
# The seeds are for the kernel ops: FC layers up to 70% and conv layers up to 35% non-zero
# keep them, as before the default thresholds followed the layer's size and the conv's
# output size (these small layers would decode from 10%, LeNet-5's conv2 from 15%).
KERNEL_FORMS = ["--fc-dense-density", "0.7", "--conv-dense-density", "0.35"]


def record(name: str, values: list[int]) -> bytes:
    return struct.pack("<BB", ATTRIBUTES.index(name), len(values)) + b"".join(
        struct.pack("<q", v) for v in values
    )


def layer_side_file(side: bytes, stream_ids: list[int], version: int = 1) -> bytes:
    """The side file reduced to the layer's streams (TOC indices 0-3, and 4 for row scales),
    CRCs intact; `version` 3
    makes the harness hand it whole as the header input (fuzz_input.h)."""
    entries, body = [], b""
    offset = 24 + 32 * len(stream_ids)
    for sid in stream_ids:
        off, nbytes, count, crc, kind, _ = struct.unpack_from("<QQQIHH", side, 24 + 32 * sid)
        data = side[off : off + nbytes]
        entries.append(struct.pack("<QQQIHH", offset + len(body), nbytes, count, crc, kind, 0))
        body += data
    toc = b"".join(entries)
    fixed = b"DCONNXW\0" + struct.pack("<HHIII", version, 0, len(entries), zlib.crc32(toc), 0)
    return fixed + toc + body


def attrs_of(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def node_seed(node: onnx.NodeProto, side: bytes, version: int = 1) -> bytes:
    attrs = attrs_of(node)
    records = []
    for name, value in attrs.items():
        if name not in ATTRIBUTES:
            continue
        if name == "stream_ids":
            value = list(range(len(value)))
        elif name == "auto_pad":
            value = AUTO_PADS.index(value.decode() if isinstance(value, bytes) else value)
        elif name in ("alpha", "beta"):
            value = struct.unpack("<i", struct.pack("<f", value))[0]
        records.append(record(name, list(value) if isinstance(value, list) else [value]))
    # The kernel target's run-time shapes: a batch of 2 (1 image for Conv) and a bias.
    shape = attrs["weight_shape"]
    if node.op_type == "CompressedConv":
        x_shape = [1, shape[1] * attrs.get("group", 1), *([8] * (len(shape) - 2))]
    elif attrs.get("transA", 0) == 1 or attrs.get("weight_side", 1) == 0:
        x_shape = [shape[1], 2]
    else:
        x_shape = [2, shape[1]]
    records += [record("x_shape", x_shape), record("bias_shape", [shape[0]])]
    with_bias = node.op_type != "CompressedMatMul" and version < 3
    head = struct.pack("<BB", 1 | OPS[node.op_type] << 1 | with_bias << 3, len(records))
    return head + b"".join(records) + layer_side_file(side, list(attrs["stream_ids"]), version)


def write_seeds(out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = row_scaled = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(RUNS):
            source = Path(tmp) / f"in{i}.onnx"
            if name.startswith("seed"):
                onnx.save(seed_model(ROW_SPREAD if name == "seed-rows" else 1.0), source)
            else:
                source = REPO / "models" / name
            compiled = Path(tmp) / f"out{i}.dc.onnx"
            args = ["compile", str(source), "-o", str(compiled), "--quiet", *extra, *KERNEL_FORMS]
            if dc_onnx_main(args):
                raise SystemExit(f"dc-onnx compile {name} failed")
            side_file = side_file_of(compiled)
            if side_file is None:
                raise SystemExit(f"dc-onnx compile {name} wrote no side file")
            side = side_file.read_bytes()
            model = onnx.load(str(compiled), load_external_data=False)
            for node, version in itertools.product(model.graph.node, (1, 3)):
                seed = node_seed(node, side, version) if node.op_type in OPS else b""
                if 0 < len(seed) <= MAX_SEED_BYTES:
                    (out_dir / f"run{i}-v{version}-{node.name}.bin").write_bytes(seed)
                    written += 1
                    row_scaled += len(attrs_of(node).get("stream_ids", [])) == 5
    if not row_scaled:  # the seeds would no longer reach the kernels' row-scale code
        raise SystemExit("fuzz_seeds: no seed has row scales")
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="the corpus folder to fill")
    print(f"fuzz_seeds: {write_seeds(parser.parse_args().out_dir)} seeds")
