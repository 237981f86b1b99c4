"""Output error of a model, and simulated compression in plain ONNX Runtime.

`OutputError` is the budget's metric: per model output, the relative L2 error against the
original over the whole calibration set, ||y - y0|| / ||y0||; the worst output counts.
Classifier outputs (2-D float, more than one class) also get top-1 agreement.

`Simulator` runs the uncompressed model with some weights replaced by their simulated
(pruned, quantized, dense, in the weight's dtype) arrays. Every analysed weight that is a
main-graph initializer becomes a graph input once, so one session serves every candidate:
layer weights and storage-form weights alike (canonicalize lifts the weights of If/Loop
bodies to the main graph, where the bodies read them as outer-scope values, and those
can be graph inputs as well). A bfloat16 weight, which ORT's Python API cannot feed, is
swapped by rebuilding the session instead.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from dc_onnx.budget.calibration import Calibration
from dc_onnx.errors import InputError
from dc_onnx.layers import AnalysedWeight

Outputs = list[list[np.ndarray]]  # per calibration batch, per model output


@dataclasses.dataclass(frozen=True)
class OutputComparison:
    name: str
    relative_l2: float
    top1_agreement: float | None


@dataclasses.dataclass(frozen=True)
class OutputError:
    outputs: list[OutputComparison]

    @property
    def worst(self) -> float:
        return max((o.relative_l2 for o in self.outputs), default=0.0)

    @property
    def top1_agreement(self) -> float | None:
        values = [o.top1_agreement for o in self.outputs if o.top1_agreement is not None]
        return min(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return {
            "relative_l2": self.worst,
            "top1_agreement": self.top1_agreement,
            "outputs": [dataclasses.asdict(o) for o in self.outputs],
        }


def compare(names: Sequence[str], reference: Outputs, actual: Outputs) -> OutputError:
    """Relative L2 error of each output over all batches (inf where a finite one broke)."""
    outputs = []
    for i, name in enumerate(names):
        if not all(is_numeric(batch[i]) for batch in reference):
            refs, outs = [batch[i] for batch in reference], [batch[i] for batch in actual]
            outputs.append(OutputComparison(name, non_numeric_error(refs, outs), None))
            continue
        ref = [np.asarray(batch[i]) for batch in reference]
        out = [np.asarray(batch[i]) for batch in actual]
        diff = ref_sq = 0.0
        agree, total = 0, 0
        for a, b in zip(ref, out, strict=True):
            if a.shape != b.shape:
                # The weights decide this output's shape (a speech model's predicted
                # durations set its length): no distance measures that change.
                diff, agree, total = math.inf, 0, 0
                break
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            # Entries the original leaves non-finite are not compared; a finite one that
            # the compressed model turns non-finite makes the error infinite.
            finite = np.isfinite(a64)
            diff += float(np.sum((a64[finite] - b64[finite]) ** 2))
            ref_sq += float(np.sum(a64[finite] ** 2))
            if a.ndim == 2 and a.shape[1] > 1 and a.dtype.kind == "f":
                agree += int(np.sum(a64.argmax(1) == b64.argmax(1)))
                total += a.shape[0]
        error = _relative(diff, ref_sq)
        outputs.append(OutputComparison(name, error, agree / total if total else None))
    return OutputError(outputs)


def is_numeric(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in "fiub"


def non_numeric_error(reference: list[Any], actual: list[Any]) -> float:
    """The error of an output that is not a numeric tensor. Its leaves are taken in order
    (a sequence's items): where the two differ in structure (a length, a shape), inf;
    numbers, the relative L2 error; strings (a label from a LabelEncoder), the share that
    differ, so a label changed in 1 sample of 100 costs 1%. (Maps never get here: onnx-ir
    cannot load a model with one.)"""
    ref: list[Any] = []
    out: list[Any] = []
    for a, b in zip(reference, actual, strict=True):
        if not _leaves(a, b, ref, out):
            return math.inf
    if not ref:
        return 0.0
    if all(isinstance(x, int | float | np.number) for x in [*ref, *out]):
        r, o = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        finite = np.isfinite(r)
        return _relative(float(np.sum((r[finite] - o[finite]) ** 2)), float(np.sum(r[finite] ** 2)))
    return sum(x != y for x, y in zip(ref, out, strict=True)) / len(ref)


def _leaves(a: Any, b: Any, ref: list[Any], out: list[Any]) -> bool:
    """Appends the leaves of `a` and `b` in order; False where their structures differ."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return False
        return all(_leaves(x, y, ref, out) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        ref.extend(a.reshape(-1).tolist())
        out.extend(b.reshape(-1).tolist())
        return True
    ref.append(a)
    out.append(b)
    return True


def _relative(diff_sq: float, ref_sq: float) -> float:
    if not np.isfinite(diff_sq):
        return float("inf")  # a NaN where the original had a number, or a changed shape
    if ref_sq > 0:
        return float(np.sqrt(diff_sq / ref_sq))
    return 0.0 if diff_sq == 0 else float("inf")  # an all-zero output must stay zero


def _ort() -> Any:
    from dc_onnx.runtime import _onnxruntime

    return _onnxruntime()


def plain_session(model: str | bytes, rewrites: bool = True) -> Any:
    """A plain ORT CPU session (no custom ops) on a model file or serialized model.
    `rewrites=False` turns ORT's graph optimizations off: its fusions can drop an
    intermediate value asked for as an output (a Transpose folded into a Gemm's transA
    returns None)."""
    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = 4  # its errors reach the user once, in our InputError
    # Between two runs the compiler quantizes and encodes in Python: threads left spinning
    # after a run would take the cores that work needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not rewrites:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise InputError(f"ONNX Runtime cannot load the model: {e}") from None


def run_batches(session: Any, calibration: Calibration, extra: Mapping[str, Any]) -> Outputs:
    names = {i.name for i in session.get_inputs()}
    results = []
    for batch in calibration.batches:
        feeds = {k: v for k, v in batch.items() if k in names}
        feeds.update(extra)
        try:
            results.append(session.run(None, feeds))
        except Exception as e:
            hint = ""
            if calibration.source == "synthetic" and any(
                v.ndim and v.shape[0] > 1 for v in batch.values()
            ):  # a symbolic batch dim the export fixed inside (a Reshape to batch 1)
                hint = (
                    "; synthesized inputs take a symbolic batch dim as 8: if the model "
                    "only runs one sample at a time, give --input-shape with 1 there"
                )
            raise InputError(
                f"running the model on the calibration inputs ({calibration.description}) "
                f"failed: {e}{hint}"
            ) from None
    return results


def self_contained(model: ir.Model) -> onnx.ModelProto:
    """The model as a proto with its external data read in: ORT gets it as bytes, where a
    file reference relative to the model's folder cannot be resolved. The model itself
    keeps its tensors external (the output keeps them so too)."""
    proto = ir.to_proto(model)
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            value = model.graph.initializers[tensor.name].const_value
            assert value is not None
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.raw_data = value.tobytes()
    return proto


def with_outputs(proto: onnx.ModelProto, names: Collection[str]) -> onnx.ModelProto:
    """`proto` with the named values (float) added to its outputs, where they are not
    already outputs or inputs: one session returns intermediate values."""
    listed = {o.name for o in proto.graph.output} | {i.name for i in proto.graph.input}
    for name in names:
        if name not in listed:
            proto.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    return proto


def initializers_as_inputs(proto: onnx.ModelProto, names: Collection[str]) -> None:
    """The named initializers become graph inputs, fed at each run: one session serves
    every value they take."""
    moved = [t for t in proto.graph.initializer if t.name in names]
    kept = [t for t in proto.graph.initializer if t.name not in names]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    listed = {i.name for i in proto.graph.input}  # models before IR 4 list initializers
    for tensor in moved:
        if tensor.name not in listed:
            proto.graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            )


class Simulator:
    """The model in plain ORT with chosen weights swapped (see the module docstring)."""

    def __init__(
        self, model: ir.Model, groups: Sequence[AnalysedWeight], calibration: Calibration
    ) -> None:
        self.calibration = calibration
        self.groups = list(groups)
        self._weights = {str(g.weight.name): g for g in self.groups}
        initializers = model.graph.initializers
        self._fed = [
            n for n in self._weights if n in initializers and _feedable(self._weights[n].array())
        ]
        proto = self_contained(model)
        fed = set(self._fed)
        initializers_as_inputs(proto, fed)
        self._session = plain_session(proto.SerializeToString())
        # The rest (bfloat16, which ORT's Python API cannot take) is swapped in a copy of
        # this proto; kept only when needed, since it holds a copy of the weights.
        self._proto = proto if len(fed) < len(self._weights) else None
        self._base = {n: self._weights[n].array() for n in self._fed}
        self.output_names = [o.name for o in self._session.get_outputs()]
        self.reference = self.run({})
        # The original's outputs on other calibration sets (the analysis's subset), kept with
        # the set itself so that its id stays its own: each measured point would otherwise
        # run the original again.
        self._references: dict[int, tuple[Calibration, Outputs]] = {}

    def run(
        self, overrides: Mapping[str, np.ndarray], calibration: Calibration | None = None
    ) -> Outputs:
        """Outputs with the weights named in `overrides` replaced by those arrays."""
        calibration = calibration or self.calibration
        elsewhere = [n for n in overrides if n not in self._base]
        if elsewhere:
            return self._rebuilt(overrides, calibration)
        feeds = {**self._base, **overrides}
        return run_batches(self._session, calibration, feeds)

    def error(
        self, overrides: Mapping[str, np.ndarray], calibration: Calibration | None = None
    ) -> OutputError:
        if calibration is None or calibration is self.calibration:
            reference = self.reference
        else:
            if id(calibration) not in self._references:
                self._references[id(calibration)] = (calibration, self.run({}, calibration))
            reference = self._references[id(calibration)][1]
        return compare(self.output_names, reference, self.run(overrides, calibration))

    def _rebuilt(self, overrides: Mapping[str, np.ndarray], calibration: Calibration) -> Outputs:
        if self._proto is None:
            raise KeyError(f"not an analysed weight: {sorted(set(overrides) - set(self._base))}")
        proto = onnx.ModelProto()
        proto.CopyFrom(self._proto)
        for tensor in proto.graph.initializer:
            if tensor.name in overrides and tensor.name not in self._base:
                array = np.asarray(overrides[tensor.name])
                tensor.CopyFrom(ir.serde.serialize_tensor(ir.Tensor(array, name=tensor.name)))
        session = plain_session(proto.SerializeToString())
        fed = {k: v for k, v in overrides.items() if k in self._base}
        return run_batches(session, calibration, {**self._base, **fed})


def _feedable(array: np.ndarray) -> bool:
    """Whether ORT's Python API takes the array as an input (not bfloat16)."""
    return array.dtype.kind in "fiub"


def reference_outputs(model: str | bytes, calibration: Calibration) -> tuple[list[str], Outputs]:
    """Output names and outputs of the original model (a path or serialized bytes)."""
    session = plain_session(model)
    return [o.name for o in session.get_outputs()], run_batches(session, calibration, {})


def rounding_floor(
    model: str | bytes, names: Sequence[str], reference: Outputs, calibration: Calibration
) -> OutputError:
    """How far the original's own outputs move when ORT only reorders its float arithmetic
    (its graph rewrites off: no BatchNorm or constant folding, no fusions). No compiled
    model can be measured more finely than this on these inputs."""
    session = plain_session(model, rewrites=False)
    return compare(names, reference, run_batches(session, calibration, {}))


def constant_error(
    names: Sequence[str], reference: Outputs, calibration: Calibration
) -> float | None:
    """The worst output's error (as `compare` measures it) of a model that ignores its
    inputs and returns the mean of the original's outputs over the calibration samples.
    A budget above it cannot tell a working compiled model from a broken one. None where
    the samples cannot be told apart: one sample, or an output with no axis of samples."""
    batches = len(reference)
    # Strings, sequences and maps have no mean: only the numeric outputs count here.
    numeric = [i for i in range(len(names)) if all(is_numeric(b[i]) for b in reference)]
    if not numeric:
        return None
    constant: Outputs = [[] for _ in range(batches)]
    for i in numeric:
        arrays = [np.asarray(batch[i]) for batch in reference]
        if batches >= 2 and all(a.shape == arrays[0].shape for a in arrays):
            mean = np.mean([a.astype(np.float64) for a in arrays], axis=0)
            per_batch = [mean] * batches
        elif batches == 1 and arrays[0].ndim and arrays[0].shape[0] == calibration.samples > 1:
            mean = arrays[0].astype(np.float64).mean(axis=0, keepdims=True)
            per_batch = [np.broadcast_to(mean, arrays[0].shape)]
        else:
            return None
        for b in range(batches):
            constant[b].append(per_batch[b])
    kept = [[batch[i] for i in numeric] for batch in reference]
    return compare([names[i] for i in numeric], kept, constant).worst


def measure_compiled(
    path: str | os.PathLike[str],
    names: Sequence[str],
    reference: Outputs,
    calibration: Calibration,
) -> OutputError:
    """Error of a compiled model (run in ORT with the dc-onnx ops) against the reference."""
    from dc_onnx.runtime import open_session

    session = open_session(path)
    return compare(names, reference, run_batches(session, calibration, {}))
