"""Which weight representation keeps a model within 1% at 8-bit codes with no pruning, and
what it costs: each representation is simulated on every weight the compiler would
encode (found by its own canonicalize pass), the model runs in ORT as a plain dense model,
and the worst output's relative L2 error is printed with an estimate of the encoded bytes.

    python models/quant_error.py --representations tensor,rows,outliers,wide1023 [--only ...]
    python models/quant_error.py --per-layer tensor --only ppocr-v4-rec

Representations (k = 2^bits - 1 shared non-zero values):
  tensor      one k-entry codebook per weight (today's `mse` k-means);
  rows        a float32 scale per row of the stored [out, in] matrix (its largest |w|) and
              one k-entry codebook of the normalised values, shared by the rows;
  outliers    tensor, with the 0.1% largest |w| kept exact in a side list;
  rows+outliers, wide1023, wide4095 (a (2^10 - 1)- or (2^12 - 1)-entry codebook),
  rows+wide1023;
  rowbooks    a k-entry codebook per stored row (output channel) with float16 centroids:
              a row of at most k distinct values keeps them to float16 precision;
  fp16, bf16  every weight rounded to that type: no sharing at all, a floor that tells a
              model whose outputs move by more than 1% at 16 bits a weight.
Bytes are an estimate: the codes' empirical entropy (what Huffman approaches), plus the
codebook, 4 bytes per row scale, and 8 bytes per outlier (value and position).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from dc_onnx.layers import DEFAULT_MIN_ELEMENTS, find_stored_weights, find_weight_groups
from dc_onnx.passes.canonicalize import CanonicalizePass
from dc_onnx.quantize import share_values

OUTLIER_SHARE = 0.001


@dataclasses.dataclass
class Simulated:
    matrix: np.ndarray  # the [rows, cols] stored matrix after sharing, float32
    nbytes: float


def _entropy_bytes(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum() / 8)


def _shared(m: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """m's non-zeros sharing k values: the result and the estimated bytes of its codes."""
    out = m.copy()
    mask = m != 0
    if mask.any():
        out[mask] = share_values(m[mask], k, "mse")[0]
    return out, _entropy_bytes(out) + 4 * min(k + 1, np.unique(out).size)


def tensor(m: np.ndarray, k: int) -> Simulated:
    return Simulated(*_shared(m, k))


def rows(m: np.ndarray, k: int) -> Simulated:
    scale = np.abs(m).max(axis=1).astype(np.float32)
    scale[scale == 0] = 1
    normalised, nbytes = _shared((m / scale[:, None]).astype(np.float32), k)
    return Simulated((normalised * scale[:, None]).astype(np.float32), nbytes + 4 * m.shape[0])


def rowbooks(m: np.ndarray, k: int) -> Simulated:
    """Each row its own k-entry mse codebook, centroids rounded to float16 (2 bytes each);
    the bytes are each row's code entropy plus its centroids."""
    out = np.zeros_like(m)
    nbytes = 0.0
    for r, row in enumerate(m):
        mask = row != 0
        if mask.any():
            shared = share_values(row[mask], k, "mse")[0]
            out[r, mask] = shared.astype(np.float16).astype(np.float32)
        nbytes += _entropy_bytes(out[r]) + 2 * np.unique(out[r]).size
    return Simulated(out, nbytes)


def _with_outliers(base: Callable[[np.ndarray, int], Simulated]) -> Callable[..., Simulated]:
    def simulate(m: np.ndarray, k: int) -> Simulated:
        n = max(1, round(OUTLIER_SHARE * m.size))
        flat = m.reshape(-1)
        kept = np.argpartition(np.abs(flat), flat.size - n)[flat.size - n :]
        rest = flat.copy()
        rest[kept] = 0  # the side list holds them; the codes see a zero there
        sim = base(rest.reshape(m.shape), k)
        out = sim.matrix.reshape(-1).copy()
        out[kept] = flat[kept]
        return Simulated(out.reshape(m.shape), sim.nbytes + 8 * n)

    return simulate


def _wide(base: Callable[[np.ndarray, int], Simulated], entries: int) -> Callable[..., Simulated]:
    return lambda m, k: base(m, entries)


def _rounded(dtype: str) -> Callable[..., Simulated]:
    def simulate(m: np.ndarray, k: int) -> Simulated:
        rounded = m.astype(ml_dtypes.bfloat16 if dtype == "bf16" else np.float16)
        return Simulated(rounded.astype(np.float32), 2.0 * m.size)

    return simulate


REPRESENTATIONS: dict[str, Callable[[np.ndarray, int], Simulated]] = {
    "tensor": tensor,
    "rows": rows,
    "outliers": _with_outliers(tensor),
    "rows+outliers": _with_outliers(rows),
    "wide1023": _wide(tensor, 1023),
    "wide4095": _wide(tensor, 4095),
    "rows+wide1023": _wide(rows, 1023),
    "rowbooks": rowbooks,
    "fp16": _rounded("fp16"),
    "bf16": _rounded("bf16"),
}


Reshape = Callable[[np.ndarray], np.ndarray]


def _tensor(value: ir.Value) -> ir.TensorProtocol:
    assert value.const_value is not None, f"{value.name} is not a constant"
    return value.const_value


def _as_rows(shape: tuple[int, ...]) -> tuple[Reshape, Reshape]:
    """A storage weight as a matrix of its first axis's rows, and back."""
    rows = shape[0] if len(shape) >= 2 else 1
    return (lambda a: a.reshape(rows, -1)), (lambda m: m.reshape(shape))


def _weights(model: ir.Model) -> list[tuple[str, ir.Value, Reshape, Reshape]]:
    """(name, value, to stored matrix, back) of each float32 weight the compiler encodes."""
    found: list[tuple[str, ir.Value, Reshape, Reshape]] = []
    for group in find_weight_groups(model.graph):
        if _tensor(group.weight).dtype == ir.DataType.FLOAT:
            found.append((group.name, group.weight, group.stored_matrix, group.from_stored))
    for s in find_stored_weights(model.graph, DEFAULT_MIN_ELEMENTS):
        if s.kind == "storage" and _tensor(s.weight).dtype == ir.DataType.FLOAT:
            found.append((s.name, s.weight, *_as_rows(s.array().shape)))
    return found


def load(path: Path) -> ir.Model:
    model = ir.load(str(path))
    ir.external_data.load_to_model(model)
    return CanonicalizePass(DEFAULT_MIN_ELEMENTS)(model).model


def run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        ir.save(model, str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return session.run(None, {n: feeds[n] for n in names})


@dataclasses.dataclass
class Comparison:
    """What `simulate` measured on one model."""

    float32_bytes: int  # of the weights the representations replace
    errors: dict[str, tuple[float, float]]  # representation: (worst-output error, bytes)
    per_layer: dict[str, dict[str, float]]  # representation: weight: its error alone


def simulate(
    path: Path, feeds: dict[str, np.ndarray], bits: int, names: list[str], per_layer: bool
) -> Comparison:
    """Each representation applied to every weight at once; with per_layer, also to each
    weight alone."""
    from quant_error import relative_l2

    k = (1 << bits) - 1
    model = load(path)
    reference = run(model, feeds)
    weights = _weights(model)
    originals = {name: _tensor(value).numpy().copy() for name, value, _, _ in weights}
    result = Comparison(sum(a.nbytes for a in originals.values()), {}, {})
    for rep in names:
        total = 0.0
        per: dict[str, Simulated] = {}
        for name, _, stored, _ in weights:
            m = np.ascontiguousarray(stored(originals[name]), dtype=np.float32)
            sim = REPRESENTATIONS[rep](m, k)
            per[name] = sim
            total += sim.nbytes
        if per_layer:
            errors: dict[str, float] = {}
            for name, value, _, back in weights:
                value.const_value = ir.tensor(back(per[name].matrix).astype(np.float32))
                errors[name] = relative_l2(reference, run(model, feeds))
                value.const_value = ir.tensor(originals[name])
            result.per_layer[rep] = errors
        for name, value, _, back in weights:
            value.const_value = ir.tensor(back(per[name].matrix).astype(np.float32))
        result.errors[rep] = (relative_l2(reference, run(model, feeds)), total)
        for name, value, _, _ in weights:
            value.const_value = ir.tensor(originals[name])
    return result
