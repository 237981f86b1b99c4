"""What a compressed layer costs beyond its streams, measured on compiled models.

`dc_onnx/budget/candidates.py` sizes a compressed layer as its streams plus a constant,
LAYER_OVERHEAD; this script measures that constant. For each compressed node of a compiled
model it counts, in serialized bytes:

- node: the compressed node against its dense twin (the node `decompress` writes back: the
  original op reading the weight by name); a CompressedConstant has no twin, it is all new;
- stubs: the stream initializers (name, dims, external-data record) of a version 1-2
  model; none from version 3;
- toc: the side file's 32-byte TOC entry per stream;
- saved: the weight's initializer record without its data (name, dims, type), which the
  compressed model no longer carries.

Usage: python models/layer_overhead.py COMPILED.dc.onnx [...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

from dc_onnx.codecs.container import ENTRY_SIZE, format_version, parse_header
from dc_onnx.codecs.schema import CONSTANT_OP, DOMAIN, HEADER_NAME, stream_names
from dc_onnx.tools.decompile import decode_model


def _field(message: onnx.NodeProto | onnx.TensorProto) -> int:
    """Bytes of a message as a repeated field of its parent: tag, length, body."""
    size = message.ByteSize()
    length = 1
    while size >> (7 * length):
        length += 1
    return 1 + length + size


def _record(tensor: onnx.TensorProto) -> int:
    """A tensor's initializer record without its data."""
    meta = onnx.TensorProto()
    meta.CopyFrom(tensor)
    meta.ClearField("raw_data")
    for field in ("float_data", "int32_data", "int64_data", "external_data"):
        meta.ClearField(field)
    meta.data_location = onnx.TensorProto.DEFAULT
    return _field(meta)


def measure(path: Path) -> dict[str, float]:
    model = onnx.load(str(path), load_external_data=False)
    full = onnx.load(str(path))
    header = next(t for t in full.graph.initializer if t.name == HEADER_NAME)
    toc_n = len(parse_header(header.raw_data))
    tensors = {t.name: t for t in model.graph.initializer}
    dense = decode_model(path)
    twins = {n.output[0]: n for n in dense.graph.node}
    weights = {t.name: t for t in dense.graph.initializer}
    totals = {"node": 0, "stubs": 0, "toc": 0, "saved": 0}
    layers = 0
    for node in model.graph.node:
        if node.domain != DOMAIN:
            continue
        layers += 1
        ids = next(list(a.ints) for a in node.attribute if a.name == "stream_ids")
        totals["toc"] += ENTRY_SIZE * len(ids)
        names = [n for n in stream_names(node.op_type, node.input, ids) if n]
        totals["stubs"] += sum(_field(tensors[n]) for n in names if n in tensors)
        if node.op_type == CONSTANT_OP:
            totals["node"] += _field(node)
            totals["saved"] += _record(weights[node.output[0]])
            continue
        replaced = [twins[node.output[0]]]
        if not any(i in weights for i in replaced[0].input):
            # a fused activation (its attribute in the node): the layer is its input's producer
            replaced.append(twins[replaced[0].input[0]])
        totals["node"] += _field(node) - sum(_field(t) for t in replaced)
        totals["saved"] += _record(next(weights[i] for i in replaced[-1].input if i in weights))
    per_layer = (totals["node"] + totals["stubs"] + totals["toc"] - totals["saved"]) / layers
    return {
        "version": format_version(header.raw_data),
        "layers": layers,
        "streams": toc_n,
        **{k: v / layers for k, v in totals.items()},
        "per_layer": per_layer,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    args = parser.parse_args()
    print("| model | version | layers | node | stubs | toc | saved | per layer |")
    print("|---|---|---|---|---|---|---|---|")
    for path in args.models:
        m = measure(path)
        print(
            f"| {path.parent.name}/{path.name} | {m['version']} | {m['layers']} | "
            f"{m['node']:.0f} | {m['stubs']:.0f} | {m['toc']:.0f} | {m['saved']:.0f} | "
            f"{m['per_layer']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
