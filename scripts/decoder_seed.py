"""Writes the C++ decoder test's seed: a small side file and what it must decode to.

`runtime_ops/tests/test_decoder.cc` decodes every layer of `seed.dcw` with the standalone
C++ decoder and compares the weights, bit for bit, with `seed.txt`, which this script
fills from the Python reference decoder (`dc_onnx.tools.decompile`). Rerun it after a format
change: `python scripts/decoder_seed.py runtime_ops/tests/data`.

seed.txt holds, per compressed layer, a line
`layer <name> <rows> <cols> <num_entries> <index_bits> <4 stream ids>` and then the
stored [rows, cols] matrix, row by row, as hexadecimal floats (exact in text).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dc_onnx.cli import main as dc_onnx_main
from dc_onnx.codecs.schema import DOMAIN
from dc_onnx.io import side_file_of
from dc_onnx.tools.decompile import decode_node_weight


def seed_model(row_spread: float = 1.0) -> onnx.ModelProto:
    """A 3x3 Conv and a Gemm head: 72 + 288 weights, so the side file stays small.
    `row_spread` > 1 scales the output channels (rows of the stored matrices) from 1 to
    that factor, orders apart, so the compiler gives them row scales."""
    rng = np.random.default_rng(7)
    conv = rng.standard_normal((4, 2, 3, 3)) * 0.3
    conv *= np.geomspace(1, row_spread, 4)[:, None, None, None]
    fc = rng.standard_normal((36, 8)) * 0.2 * np.geomspace(1, row_spread, 8)[None, :]
    inits = [
        numpy_helper.from_array(conv.astype(np.float32), "C"),
        numpy_helper.from_array(fc.astype(np.float32), "W"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "C"], ["c"], name="conv"),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Gemm", ["f", "W"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "decoder_seed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_seed(out_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "seed.onnx"
        onnx.save(seed_model(), source)
        compiled = Path(tmp) / "seed.dc.onnx"
        # Few index bits: the gap streams hold escapes too.
        args = ["compile", str(source), "-o", str(compiled), "--quiet", "--sparsity", "0.75"]
        args += ["--bits-conv", "4", "--index-bits-conv", "2", "--bits-fc", "3"]
        args += ["--index-bits-fc", "2"]
        if dc_onnx_main(args) != 0:
            raise SystemExit("dc-onnx compile failed")
        model = onnx.load(str(compiled), load_external_data=True)
        tensors = {t.name: t for t in model.graph.initializer}
        lines = []
        for node in model.graph.node:
            if node.domain != DOMAIN:
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            weight = decode_node_weight(node, tensors)
            rows, cols = weight.shape
            ids = " ".join(str(i) for i in attrs["stream_ids"])
            lines.append(
                f"layer {node.name} {rows} {cols} {attrs['num_entries']} "
                f"{attrs['index_bits']} {ids}"
            )
            lines += [" ".join(float(v).hex() for v in row) for row in weight]
        out_dir.mkdir(parents=True, exist_ok=True)
        side = side_file_of(compiled)
        assert side is not None, "a compiled model without --single-file has a side file"
        shutil.copyfile(side, out_dir / "seed.dcw")
        (out_dir / "seed.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="where seed.dcw and seed.txt go")
    write_seed(parser.parse_args().out_dir)
