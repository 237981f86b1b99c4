"""The rounding floor of a model on its calibration inputs (docs/budget.md): how far its
outputs move when ONNX Runtime runs it with its graph optimizations on, then off. The
compiler refuses a budget below four times it.

    python models/rounding_floor.py [--only NAME,...] [--cache DIR]
    python models/rounding_floor.py MODEL.onnx [--calibration X.npz] [--input-shape 'x=...']

Without a model it runs the zoo (`models/zoo.py`, fetched and with inputs written): each
model on its fixed inputs, and on the inputs `dc-onnx compile` would synthesize where it
can make them up. With a model, on `--calibration` or on synthesized inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dc_onnx.budget.calibration import calibration_for
from dc_onnx.budget.simulate import reference_outputs, rounding_floor
from dc_onnx.errors import InputError
from dc_onnx.io import load_model
from dc_onnx.options import parse_input_shapes

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # a sibling script, not a package


def floor_of(model: Path, calibration: Path | None, shapes: dict[str, list[int]]) -> str:
    """The floor as a percentage with what it was measured on, or why it was not."""
    try:
        inputs = calibration_for(load_model(model).graph, calibration, shapes, "labels")
        names, expected = reference_outputs(str(model), inputs)
        floor = rounding_floor(str(model), names, expected, inputs)
    except InputError as e:
        return f"not measured: {e}"
    worst = max(floor.outputs, key=lambda o: o.relative_l2, default=None)
    where = "" if worst is None else f" (output '{worst.name}')"
    return f"{100 * floor.worst:.2g}%{where} on {inputs.summary()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--calibration", type=Path, help="inputs (.npz or folder of runs)")
    parser.add_argument("--input-shape", default="", help="as dc-onnx compile's")
    parser.add_argument("--cache", help="zoo cache folder (default: zoo.py's)")
    parser.add_argument("--only", help="zoo model names, comma-separated")
    args = parser.parse_args()
    if args.model is not None:
        shapes = parse_input_shapes(args.input_shape) if args.input_shape else {}
        print(f"{args.model.name}: {floor_of(args.model, args.calibration, shapes)}")
        return 0
    cache = zoo.cache_dir(args.cache)
    for m in zoo.select(args.only):
        path = zoo.model_path(m, cache)
        print(f"{m.name}: fixed inputs {floor_of(path, zoo.inputs_path(m, cache), {})}")
        print(f"{m.name}: synthesized {floor_of(path, None, {})}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
