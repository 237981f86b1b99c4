"""Would row scales help a large embedding table? Weight-space error of one codebook
against row scales times a shared codebook (dc_onnx.quantize.share_rows), on a sample of
the table's rows.

Weights over one block (16 MiB) are clustered block by block with one codebook and no row
scales (dc_onnx/large_weights.py); minilm-l3-fp32's word table (30522 x 384, 47 MB) is
one. This measures what row scales would gain there before anyone builds them.

    python models/table_row_scales.py [--model minilm-l3-fp32] [--rows 4000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from dc_onnx.quantize import share_rows, share_values

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # a sibling script, not a package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l3-fp32", help="a zoo model")
    parser.add_argument("--rows", type=int, default=4000, help="rows sampled (seeded)")
    parser.add_argument("--cache", help="zoo cache (default $DC_ONNX_ZOO_CACHE or build/zoo-cache)")
    args = parser.parse_args(argv)
    (model,) = zoo.select(args.model)
    proto = onnx.load(str(zoo.model_path(model, zoo.cache_dir(args.cache))))
    tables = [numpy_helper.to_array(t) for t in proto.graph.initializer if len(t.dims) == 2]
    table = max(tables, key=lambda t: t.size).astype(np.float32)
    rng = np.random.default_rng(0)
    rows = table[rng.choice(table.shape[0], min(args.rows, table.shape[0]), replace=False)]
    norm = float(np.linalg.norm(rows))
    print(f"{args.model}: largest table {table.shape}, {rows.shape[0]} rows sampled")
    print("| bits | one codebook | row scales |")
    print("|---|---|---|")
    mask = rows != 0
    for bits in (6, 5, 4):
        k = (1 << bits) - 1
        one = rows.copy()
        one[mask], _ = share_values(rows[mask], k, "mse", np.dtype(np.float32), None, 0, None)
        scaled = share_rows(rows, k, "mse")
        assert scaled is not None
        errors = [float(np.linalg.norm(v - rows)) / norm for v in (one, scaled.values)]
        print(f"| {bits} | {errors[0]:.2%} | {errors[1]:.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
