"""How far a model's outputs move when its float inputs get a little Gaussian noise.

    python models/input_noise.py [--only NAME,...] [--cache DIR] [--levels 1e-4,1e-3,1e-2]

For each zoo model (fetched, inputs written: models/zoo.py), every float input of its
first fixed run gets noise of standard deviation `level` (in the input's own units, after
the package's normalisation; seeded), and the worst output's relative L2 error against
the clean run is printed, as `quant_error.py` measures a compressed model's. Where an
output moves by 1% for noise far below one 8-bit grey level, that input sits where the
model hesitates: no weight rounding will keep 1% there, and the error on it says more
about the input than about the compression.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # a sibling script, not a package
from quant_error import relative_l2


def noisy(feeds: dict[str, np.ndarray], level: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, array in feeds.items():
        if array.dtype.kind == "f":
            noise = rng.standard_normal(array.shape) * level
            array = (array + noise).astype(array.dtype)
        out[name] = array
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="zoo model names, comma-separated")
    parser.add_argument("--cache", help="zoo cache folder (default: zoo.py's)")
    parser.add_argument("--levels", default="1e-4,1e-3,1e-2", help="noise std devs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    levels = [float(v) for v in args.levels.split(",")]
    cache = zoo.cache_dir(args.cache)
    print("| model | " + " | ".join(f"noise {v:g}" for v in levels) + " |")
    print("|---|" + "---|" * len(levels))
    for model in zoo.select(args.only):
        path, inputs = zoo.model_path(model, cache), zoo.inputs_path(model, cache)
        if not (path.is_file() and inputs.exists()):
            print(f"| {model.name} | not fetched (models/zoo.py fetch, inputs) |")
            continue
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        feeds = {n: v for n, v in zoo.read_runs(inputs)[0].items() if n in names}
        clean = session.run(None, feeds)
        errors = [relative_l2(clean, session.run(None, noisy(feeds, v, args.seed))) for v in levels]
        print(f"| {model.name} | " + " | ".join(f"{e:.3%}" for e in errors) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
