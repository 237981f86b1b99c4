"""Does the compiled model hold the weights the budget's allocation simulated?

Compiles a model in budget mode, decodes the compiled model back to dense weights
(dc_onnx.tools.decompile) and compares each analysed weight with the array the allocation
simulated for it (`Allocator.array`), then prints the simulated and the measured output
error. A weight whose decoded values differ from the simulation, or a weight that changed
although the allocation kept it exact, is what makes a compiled model land over the
error the allocation promised.

    python models/budget_fidelity.py MODEL.onnx --calibration INPUTS.npz [--max-error E]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from onnx import numpy_helper

import dc_onnx
from dc_onnx import compiler
from dc_onnx.layers import WeightGroup
from dc_onnx.passes.allocate import AllocatePass
from dc_onnx.tools.decompile import decode_model


def _decoded_arrays(path: Path) -> dict[str, np.ndarray]:
    model = decode_model(path)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--calibration", required=True)
    parser.add_argument("--max-error", type=float, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    captured: list[AllocatePass] = []
    build = compiler.build_passes

    def spy(*a: Any, **k: Any) -> Any:
        passes = build(*a, **k)
        captured.extend(p for p in passes if isinstance(p, AllocatePass))
        return passes

    compiler.build_passes = spy
    options = dc_onnx.CompileOptions(calibration=args.calibration, max_error=args.max_error)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.dc.onnx"
        report = dc_onnx.compile(args.model, out, options).report
        decoded = _decoded_arrays(out)
    allocate = captured[0]
    assert allocate.allocator is not None and allocate.allocation is not None
    allocator, settings = allocate.allocator, allocate.allocation.settings
    print(f"{'weight':<48} {'kind':<9} {'setting':<18} {'max |decoded - simulated|':>26}")
    for layer in allocator.analysis.layers:
        setting = settings[layer.weight]
        original = layer.sizes.array
        expected = original if setting.keep else allocator.array(layer, setting)
        group = layer.group
        if isinstance(group, WeightGroup) and not (setting.keep or setting.float16):
            key = f"{group.layers[0].name}.decoded_weight"
            node = group.layers[0].node
            if node.op_type == "Gemm":
                expected = group.stored_matrix(expected)
        else:
            key = layer.weight
        got = decoded.get(key)
        if got is None:
            diff = "missing"
        elif got.shape != expected.shape:
            diff = f"shape {got.shape} vs {expected.shape}"
        else:
            scale = float(np.max(np.abs(original))) or 1.0
            delta = np.abs(got.astype(np.float64) - expected.astype(np.float64))
            diff = f"{float(delta.max()) / scale:.3g} of max|w|"
        print(f"{layer.weight[:48]:<48} {group.kind:<9} {setting.label():<18} {diff:>26}")
    simulated = allocate.allocation.simulated
    print(f"simulated error: {simulated.worst if simulated else 0.0:.4g}")
    print(f"measured error:  {(report.error or {}).get('relative_l2')}")
    print(f"ratio: {report.ratio:.2f}x, kept exact by the safety net: {list(report.kept_exact)}")


if __name__ == "__main__":
    main()
