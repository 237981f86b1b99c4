"""What the zoo's CTC text recognizer reads, next to its relative output error.

The zoo measures ppocr-v4-rec by the relative L2 error of its output: CTC probabilities
over 6,625 classes at 40 positions along the line. This script also reads the text back
(greedy CTC decoding with the model's own character list) on text lines drawn like the
zoo's input (seed 0 is the zoo's own line), for:

- each compiled form that `make zoo` left in the work folder;
- the original with every weight rounded to float16 or to bfloat16 (8 significant bits);
- the original with every weight w given a random relative error, w * (1 + s * N(0, 1)).

    python models/ctc_readout.py [--lines 20] [--cache DIR] [--work DIR]

It needs Pillow (the training venv has it) and, for the compiled forms, dc_onnx.
Per form: the median and largest relative L2 error over the lines, how many lines read
the same text, and the characters that differ (edit distance, summed over the lines).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

import dc_onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # a sibling script, not a package
from quant_error import relative_l2

MODEL = "ppocr-v4-rec"
FORMS = ("default", "max-error-0.05", "lossless-8bit")  # zoo_measure's file names
WEIGHT_MIN_ELEMENTS = 256


def decode(probabilities: np.ndarray, characters: list[str]) -> str:
    """Greedy CTC: the best class per position, repeats merged, blanks (class 0) dropped."""
    best = probabilities.argmax(-1)
    kept = [i for j, i in enumerate(best) if i and (j == 0 or best[j - 1] != i)]
    return "".join(label(i, characters) for i in kept)


def label(i: int, characters: list[str]) -> str:
    return "<blank>" if i == 0 else characters[i - 1] if i - 1 < len(characters) else " "


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def bfloat16(w: np.ndarray) -> np.ndarray:
    """Round to nearest even at bfloat16's 8 significant bits, kept as float32."""
    bits = w.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def with_weights(proto: onnx.ModelProto, change: Callable[[np.ndarray], np.ndarray]) -> bytes:
    """The model with every float32 constant of WEIGHT_MIN_ELEMENTS or more changed."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
                if a.name == "value"]  # fmt: skip
    for tensor in tensors:
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32 and array.size >= WEIGHT_MIN_ELEMENTS:
            changed = change(array).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(changed, tensor.name))
    return model.SerializeToString()


def runner(session: Any, name: str) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: session.run(None, {name: x})[0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=20, help="text lines, seeds 0 .. N-1")
    p.add_argument("--cache", help="zoo cache (default $DC_ONNX_ZOO_CACHE or build/zoo-cache)")
    p.add_argument("--work", default=str(zoo.REPO / "build" / "zoo-work"))
    args = p.parse_args()
    spec = zoo.BY_NAME[MODEL]
    path = zoo.model_path(spec, zoo.cache_dir(args.cache))
    if not path.exists():
        print(f"{path}: not fetched; run `make zoo` (or models/zoo.py fetch) first")
        return 1
    proto = onnx.load(str(path))
    original = ort.InferenceSession(str(path))
    characters = original.get_modelmeta().custom_metadata_map["character"].splitlines()
    name = original.get_inputs()[0].name
    lines = [zoo.synth_inputs(proto, spec.inputs, seed)[name] for seed in range(args.lines)]

    forms: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for form in FORMS:
        compiled = Path(args.work) / MODEL / f"{form}.dc.onnx"
        if compiled.exists():
            forms[f"compiled {form}"] = runner(dc_onnx.InferenceSession(str(compiled)), name)
        else:
            print(f"(no {compiled}: run `make zoo` for the compiled forms)")
    rng = np.random.default_rng(0)

    def noise(scale: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda w: w * (1 + scale * rng.standard_normal(w.shape))

    changes: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "float16 rounding": lambda w: w.astype(np.float16).astype(np.float32),
        "bfloat16 rounding": bfloat16,
        "noise 0.0001": noise(1e-4),
        "noise 0.001": noise(1e-3),
    }
    for kind, change in changes.items():
        forms[kind] = runner(ort.InferenceSession(with_weights(proto, change)), name)

    references = [original.run(None, {name: x})[0] for x in lines]
    texts = [decode(y[0], characters) for y in references]
    print(f"{MODEL}: {len(lines)} text lines; seed 0 reads {texts[0]!r}")
    first = references[0][0]
    ties = [
        f"position {t}: " + " / ".join(f"{label(i, characters)!r} {first[t, i]:.2f}"
                                       for i in np.argsort(first[t])[::-1][:2])
        for t in range(first.shape[0]) if first[t].max() < 0.7
    ]  # fmt: skip
    print("seed 0, positions whose best class has under 70%:", "; ".join(ties) or "none")
    print(
        f"{'form':<28} {'median err':>10} {'max err':>8} {'same text':>10} {'chars off':>10}"
        f" {'seed 0 err':>10}  seed 0 reads"
    )
    for form, run in forms.items():
        errors, same, off, first_read = [], 0, 0, ""
        for x, y_ref, text in zip(lines, references, texts, strict=True):
            y = run(x)
            errors.append(relative_l2([y_ref], [y]))
            read = decode(y[0], characters)
            same += read == text
            off += edit_distance(read, text)
            if len(errors) == 1:
                first_read = read
        total = sum(len(t) for t in texts)
        print(
            f"{form:<28} {100 * float(np.median(errors)):>9.2f}% {100 * max(errors):>7.2f}%"
            f" {same:>5} / {len(lines):<3} {off:>4} / {total} {100 * errors[0]:>9.2f}%"
            f"  {first_read!r}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
