"""What the original zoo models answer on the zoo's fixed inputs.

An output error is only as telling as the outputs it is measured on: a voice detector
that calls every chunk silence, or a recognizer unsure of every other character, makes
a relative error of near-zero values or of near-ties. For each model and output this
prints quantiles of the values over all runs and, for an output whose last axis holds
probabilities (every row non-negative, summing to 1), quantiles of each row's largest
one and how many rows fall under 0.9.

    python models/zoo_outputs.py [--only NAME,...] [--cache DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # a sibling script, not a package

QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)
CONFIDENT = 0.9  # a top probability under this is a row near a tie


def is_probability_rows(values: np.ndarray) -> bool:
    """Whether each row along the last axis (of 2 or more entries) is a distribution."""
    if values.ndim == 0 or values.shape[-1] < 2 or not np.isfinite(values).all():
        return False
    sums = values.sum(axis=-1)
    return bool((values >= 0).all() and np.allclose(sums, 1.0, atol=1e-3))


def describe(name: str, outputs: list[np.ndarray]) -> list[str]:
    """Lines for one output, gathered over every run."""
    flat = np.concatenate([np.asarray(o, np.float64).ravel() for o in outputs])
    quantiles = ", ".join(f"{v:.4g}" for v in np.quantile(flat, QUANTILES))
    lines = [f"  {name}: {flat.size} values, quantiles 0/10/50/90/100%: {quantiles}"]
    if all(is_probability_rows(np.asarray(o)) for o in outputs):
        top = np.concatenate([np.asarray(o).max(axis=-1).ravel() for o in outputs])
        top_q = ", ".join(f"{v:.3f}" for v in np.quantile(top, QUANTILES))
        lines.append(
            f"    top probability per row, quantiles: {top_q}; "
            f"{int((top < CONFIDENT).sum())} of {top.size} rows under {CONFIDENT}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="zoo models, comma-separated (default: all)")
    parser.add_argument("--cache", help="zoo cache (default $DC_ONNX_ZOO_CACHE or build/zoo-cache)")
    args = parser.parse_args(argv)
    cache = zoo.cache_dir(args.cache)
    for m in zoo.select(args.only):
        source, inputs = zoo.model_path(m, cache), zoo.inputs_path(m, cache)
        if not (source.is_file() and inputs.exists()):
            print(f"{m.name}: not fetched (models/zoo.py fetch, inputs)")
            continue
        session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        runs = zoo.read_runs(inputs)
        results = [session.run(None, feeds) for feeds in runs]
        print(f"{m.name}: {len(runs)} run(s)")
        for i, name in enumerate(names):
            print("\n".join(describe(name, [r[i] for r in results])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
