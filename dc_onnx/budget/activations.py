"""The second moments of the inputs each layer weight multiplies, from calibration inputs.

For a layer y = W x (Gemm / MatMul with a constant weight, Conv with x the im2col patches)
the output error of a changed W is tr((W - Q) H (W - Q)^T) with H = sum x x^T over the
calibration inputs: what error compensation (dc_onnx.compensate) needs. H is indexed like
the columns of the weight's stored matrix (docs/format.md: [out, in]; a Conv's in is
Cin/group * kernel, in that order); a grouped Conv gets one H per group, [groups, cols, cols].

A main-graph LSTM / GRU / RNN's weights are storage-form weights stored [directions,
gates * hidden x inputs]: W multiplies the step inputs X_t and R the previous hidden state
h_{t-1}, so each gets one H over its inputs, shared by the rows of every gate (an H of
fewer columns than the stored rows: dc_onnx.compensate). R only for one forward direction
(h_{t-1} is then the initial state and Y one step back) and not for a GRU without
linear_before_reset (its new gate multiplies r * h_{t-1}). The step-by-step error is
compensated as if each step's input were exact: the recurrence feeds it back, and the
budget's simulation measures what that costs.

The layer inputs are added as outputs of one plain ORT session on the model, which runs
each calibration batch once; each batch's activations are reduced to X^T X at once, so
no more than one batch of activations is held; values inside If branches are carried out
to outputs first (dc_onnx.budget.branch_values), and a batch that took the other branch
adds no rows. Storage-form weights whose only reader is a Conv get a Conv layer's H (the
weights of silero-vad's branches are such), and an RNN's W or R reached through ops that
only pick, reorder or stack its rows (Slice / Concat on axis 0, Unsqueeze at 0: the gate
reordering of exported LSTMs) gets the H of its step inputs, summed over every RNN
that reads it. Weights no H is collected for (embedding tables, other storage-form
weights, anything inside a Loop / Scan body, ConvTranspose and 3-D Conv decode forms,
layers whose padding cannot be read, or H larger than MAX_COLUMNS) keep the plain
rounding.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from dc_onnx.budget.branch_values import expose
from dc_onnx.budget.calibration import Calibration
from dc_onnx.budget.simulate import plain_session, self_contained
from dc_onnx.errors import InputError
from dc_onnx.layers import AnalysedWeight, Layer, StoredWeight, WeightGroup

logger = logging.getLogger(__name__)

# Columns of the largest H collected: 4096^2 float64 is 128 MiB.
MAX_COLUMNS = 4096
# Input vectors per column of H below which a weight is not compensated (see collect).
MIN_ROWS_PER_COLUMN = 4
# Rows of activations (patches) reduced per matrix product, to bound the im2col copy.
_CHUNK_ROWS = 1 << 14


@dataclasses.dataclass
class Hessians:
    """H per weight name, and what it was collected on."""

    by_weight: dict[str, np.ndarray]
    rows: dict[str, int]  # weight -> input vectors (rows of X) its H sums
    samples: int
    seconds: float
    left_out: dict[str, str]  # weight -> why it has no H

    def get(self, weight: str) -> np.ndarray | None:
        return self.by_weight.get(weight)


def _shape_of(layer: Layer) -> tuple[int, ...]:
    tensor = layer.weight.const_value
    assert tensor is not None
    return tuple(int(d) for d in tensor.shape.numpy())


def activation_of(layer: Layer) -> ir.Value | None:
    """The value multiplied by the weight: Gemm's A, Conv's X, MatMul's other input."""
    inputs = list(layer.node.inputs)
    if layer.node.op_type == "MatMul":
        return inputs[1 - layer.weight_side]
    return inputs[0]


def _columns(layer: Layer) -> int | None:
    """Columns of the layer's stored matrix, or None where no H is collected."""
    shape = _shape_of(layer)
    if layer.kind == "conv":
        if layer.decoded or layer.node.op_type != "Conv":
            return None
        return math.prod(shape[1:])
    if layer.kind == "fc":
        return shape[0] if layer.transposed else shape[1]
    return None


def _gemm_rows(layer: Layer, x: np.ndarray) -> np.ndarray:
    """The inputs of a Gemm / MatMul as rows of [samples, cols]."""
    if layer.node.op_type == "Gemm":
        return x.T if layer.node.attributes.get_int("transA", 0) else x
    if layer.weight_side == 0:  # W @ X: the columns of X are the inputs
        x = np.swapaxes(x, -1, -2) if x.ndim >= 2 else x
    return x.reshape(-1, x.shape[-1])


def _conv_pads(layer: Layer, spatial: Sequence[int], kernel: Sequence[int]) -> list[int] | None:
    attrs = layer.node.attributes
    nd = len(kernel)
    strides = list(attrs.get_ints("strides", [1] * nd))
    dilations = list(attrs.get_ints("dilations", [1] * nd))
    auto_pad = attrs.get_string("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        return list(attrs.get_ints("pads", [0] * (2 * nd)))
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        first = small if auto_pad == "SAME_UPPER" else total - small
        begin.append(first)
        end.append(total - first)
    return begin + end


def _conv_patches(layer: Layer, x: np.ndarray) -> Iterator[np.ndarray]:
    """im2col patches of a Conv input [N, C, *spatial], as [rows, groups, cols] chunks whose
    columns follow the weight's (c, *kernel) order within each group."""
    shape = _shape_of(layer)
    kernel = shape[2:]
    nd = len(kernel)
    attrs = layer.node.attributes
    groups = attrs.get_int("group", 1)
    strides = list(attrs.get_ints("strides", [1] * nd))
    dilations = list(attrs.get_ints("dilations", [1] * nd))
    pads = _conv_pads(layer, x.shape[2:], kernel)
    if pads is None or x.ndim != nd + 2:
        raise ValueError("unsupported padding or input rank")
    channels = x.shape[1]
    per_group = channels // groups
    cols = per_group * math.prod(kernel)
    width = [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)]
    padded = np.pad(x, width)
    window = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    axes = tuple(range(2, nd + 2))
    view = np.lib.stride_tricks.sliding_window_view(padded, window, axis=axes)
    step = (slice(None), slice(None))
    step += tuple(slice(None, None, s) for s in strides)
    step += tuple(slice(None, None, d) for d in dilations)
    view = view[step]  # [N, C, *out, *kernel]
    out_shape = view.shape[2 : nd + 2]
    per_row = max(1, math.prod(out_shape[1:]))  # positions per step of the first out axis
    rows_per_chunk = max(1, _CHUNK_ROWS // per_row)
    for n in range(x.shape[0]):
        sample = np.moveaxis(view[n], 0, nd)  # [*out, C, *kernel]
        for start in range(0, out_shape[0], rows_per_chunk):
            chunk = np.ascontiguousarray(sample[start : start + rows_per_chunk], np.float32)
            yield chunk.reshape(-1, groups, cols)


def input_rows(layer: Layer, x: np.ndarray) -> Iterator[np.ndarray]:
    """The input vectors `layer` multiplies in `x`, its activation for one batch: chunks
    of [groups, rows, cols] (groups 1 but for a grouped Conv), columns as in H."""
    if layer.kind == "conv":
        for patches in _conv_patches(layer, x):
            yield np.transpose(patches, (1, 0, 2))
        return
    rows = _gemm_rows(layer, x).astype(np.float32)
    for start in range(0, rows.shape[0], _CHUNK_ROWS):
        yield rows[None, start : start + _CHUNK_ROWS]


def _accumulate(layer: Layer, x: np.ndarray, h: np.ndarray) -> int:
    """Add X^T X of this batch's input of `layer` to `h` ([cols, cols] or [groups, ...]);
    returns the rows of X (input vectors) added."""
    count = 0
    for part in input_rows(layer, x):
        count += part.shape[1]
        if h.ndim == 2:
            h += (part[0].T @ part[0]).astype(np.float64)
        else:
            h += (np.transpose(part, (0, 2, 1)) @ part).astype(np.float64)
    return count


_RECURRENT_OPS = ("LSTM", "GRU", "RNN")


@dataclasses.dataclass(frozen=True)
class _LayerInput:
    """What a layer weight multiplies: its node's activation (im2col patches for a Conv)."""

    layer: Layer

    def values(self) -> list[ir.Value]:
        value = activation_of(self.layer)
        assert value is not None
        return [value]

    def add(self, values: dict[str, np.ndarray], h: np.ndarray) -> int:
        return _accumulate(self.layer, _read(values, self.values()[0]), h)


@dataclasses.dataclass(frozen=True)
class _RecurrentInput:
    """What a recurrent weight multiplies (see the module docstring): X_t for W (input 1),
    the initial state and Y one step back for R (input 2)."""

    node: ir.Node
    index: int

    def values(self) -> list[ir.Value]:
        if self.index == 1:
            x = self.node.inputs[0]
            assert x is not None
            return [x]
        found = [self.node.outputs[0]]
        if len(self.node.inputs) > 5 and self.node.inputs[5] is not None:
            found.append(self.node.inputs[5])  # initial_h
        return found

    def add(self, values: dict[str, np.ndarray], h: np.ndarray) -> int:
        wanted = self.values()
        first = _read(values, wanted[0])
        if self.index == 1:
            rows = first.reshape(-1, first.shape[-1])
        else:  # Y: [seq, 1, batch, hidden], or [batch, seq, 1, hidden] with layout 1
            batch_first = self.node.attributes.get_int("layout", 0) == 1
            earlier = first[:, :-1] if batch_first else first[:-1]
            parts = [earlier.reshape(-1, first.shape[-1])]
            if len(wanted) > 1:
                start = _read(values, wanted[1])
                parts.append(start.reshape(-1, start.shape[-1]))
            rows = np.concatenate(parts)
        rows = rows.astype(np.float32)
        for begin in range(0, rows.shape[0], _CHUNK_ROWS):
            part = rows[begin : begin + _CHUNK_ROWS]
            h += (part.T @ part).astype(np.float64)
        return int(rows.shape[0])


def _read(values: dict[str, np.ndarray], value: ir.Value) -> np.ndarray:
    x = values.get(str(value.name))
    if x is None:
        raise ValueError(f"ORT returned no value '{value.name}'")
    return np.asarray(x)


def _too_wide(cols: int) -> str:
    return f"{cols} columns (H kept up to {MAX_COLUMNS})"


def _stored_input(weight: StoredWeight) -> tuple[list[Source], np.ndarray] | str:
    """What a storage weight multiplies, and an empty H: the input of its only reader, a
    Conv, or the step inputs of the RNNs that read it as W or R, directly or through ops
    that only pick, reorder or stack its rows (the gate reordering of exported LSTMs).
    Readers may sit in any graph (branch_values reads inside If branches). Else why it
    gets no H."""
    tensor = weight.weight.const_value
    if tensor is None or tensor.dtype != ir.DataType.FLOAT:
        return "storage form"
    uses = list(weight.weight.uses())
    if len(uses) == 1 and uses[0][0].op_type == "Conv" and uses[0][1] == 1:
        layer = Layer(uses[0][0], weight.weight, "conv", transposed=False, weight_side=1)
        cols = _columns(layer)
        assert cols is not None
        if cols > MAX_COLUMNS:  # checked before H is allocated
            return _too_wide(cols)
        return [_LayerInput(layer)], _empty(layer, cols)
    readers = _row_readers(weight.weight)
    if readers is None or len(tensor.shape) < 2:
        return "storage form"
    sources: list[Source] = []
    for node, index in readers:
        found = _recurrent_input(node, index)
        if isinstance(found, str):
            return found
        sources.append(found)
    cols = int(tensor.shape.numpy()[-1])
    if cols > MAX_COLUMNS:
        return _too_wide(cols)
    return sources, np.zeros((cols, cols))


def _ints(node: ir.Node, name: str, index: int) -> list[int] | None:
    """An int list given as attribute `name` or as constant input `index`, else None."""
    attr = node.attributes.get(name)
    if attr is not None:
        return list(attr.as_ints())
    value = node.inputs[index] if len(node.inputs) > index else None
    tensor = None if value is None else ir.convenience.get_const_tensor(value)
    return None if tensor is None else [int(i) for i in tensor.numpy().reshape(-1)]


def _keeps_columns(node: ir.Node, index: int) -> bool:
    """Whether `node` only picks, reorders or stacks the rows of its input `index` (the
    first axis), so each row keeps its columns."""
    if node.op_type == "Identity":
        return True
    if node.op_type == "Concat":
        return node.attributes.get_int("axis", -1) == 0
    if node.op_type == "Unsqueeze" and index == 0:
        return _ints(node, "axes", 1) == [0]
    if node.op_type == "Slice" and index == 0:
        axes = _ints(node, "axes", 3)
        starts = _ints(node, "starts", 1)
        return axes == [0] or (axes is None and starts is not None and len(starts) == 1)
    return False


def _row_readers(weight: ir.Value) -> list[tuple[ir.Node, int]] | None:
    """The RNN nodes and inputs (1: W, 2: R) that read the weight's rows, directly or
    through `_keeps_columns` ops; None if anything else reads it."""
    found: list[tuple[ir.Node, int]] = []
    pending, seen = [weight], {id(weight)}
    while pending:
        for node, index in pending.pop().uses():
            if node.op_type in _RECURRENT_OPS and index in (1, 2):
                found.append((node, index))
                continue
            if not _keeps_columns(node, index) or len(node.outputs) != 1:
                return None
            out = node.outputs[0]
            if id(out) not in seen:
                seen.add(id(out))
                pending.append(out)
    return found or None


def _recurrent_input(node: ir.Node, index: int) -> _RecurrentInput | str:
    """The step input a weight multiplies as an RNN's W (index 1) or R (2); else why it
    gets no H."""
    if index == 2:
        if node.attributes.get_string("direction", "forward") != "forward":
            return "recurrent weight of a reverse or bidirectional RNN"
        if node.op_type == "GRU" and not node.attributes.get_int("linear_before_reset", 0):
            return "GRU recurrent weight (its new gate multiplies r * h, not h)"
        if not node.outputs or not node.outputs[0].name:
            return "recurrent weight of an RNN whose Y output is not produced"
    return _RecurrentInput(node, index)


Source = _LayerInput | _RecurrentInput


def _empty(layer: Layer, cols: int) -> np.ndarray:
    groups = layer.node.attributes.get_int("group", 1) if layer.kind == "conv" else 1
    return np.zeros((groups, cols, cols) if groups > 1 else (cols, cols))


def collect(
    model: ir.Model, weights: Sequence[AnalysedWeight], calibration: Calibration
) -> Hessians:
    """H for every layer weight among `weights` that has one (see the module docstring),
    over all of `calibration`."""
    start = time.perf_counter()
    left_out: dict[str, str] = {}
    wanted: dict[str, tuple[list[Source], np.ndarray]] = {}
    for group in weights:
        name = str(group.weight.name)
        if not isinstance(group, WeightGroup):
            found = _stored_input(group)
            if isinstance(found, str):
                left_out[name] = found
            else:
                wanted[name] = found
            continue
        columns = {_columns(layer) for layer in group.layers}
        if None in columns or len(columns) != 1:
            left_out[name] = f"{group.kind} layer without a column layout"
            continue
        cols = columns.pop()
        assert cols is not None
        if cols > MAX_COLUMNS:
            left_out[name] = _too_wide(cols)
            continue
        groups = {_empty(layer, cols).shape for layer in group.layers}
        if len(groups) != 1:
            left_out[name] = "read by convolutions of different groups"
            continue
        sources: list[Source] = [_LayerInput(layer) for layer in group.layers]
        wanted[name] = (sources, _empty(group.layers[0], cols))
    by_weight: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    if wanted:
        by_weight, rows = _run(model, wanted, calibration, left_out)
    for name, h in list(by_weight.items()):
        # Fewer input vectors than MIN_ROWS_PER_COLUMN per column leave H a poor estimate
        # of the inputs: compensation would fit these few inputs, not the layer's.
        cols = h.shape[-1]
        if rows[name] < MIN_ROWS_PER_COLUMN * cols:
            left_out[name] = f"{rows[name]} input vectors for {cols} columns"
            del by_weight[name]
    seconds = time.perf_counter() - start
    logger.info(
        "activations: H for %d of %d weights on %d samples in %.1f s",
        len(by_weight), len(weights), calibration.samples, seconds,
    )  # fmt: skip
    return Hessians(by_weight, rows, calibration.samples, seconds, left_out)


def _run(
    model: ir.Model,
    wanted: dict[str, tuple[list[Source], np.ndarray]],
    calibration: Calibration,
    left_out: dict[str, str],
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    proto = self_contained(model)
    inputs = {i.name for i in proto.graph.input}
    names = {str(v.name) for sources, _ in wanted.values() for s in sources for v in s.values()}
    carried, refused = expose(proto, sorted(names - inputs))
    for name, (sources, _) in list(wanted.items()):
        why = next(
            (refused[str(v.name)] for s in sources for v in s.values() if str(v.name) in refused),
            None,
        )
        if why is not None:
            left_out[name] = why
            del wanted[name]
    outputs = {o.name for o in proto.graph.output}
    requested: dict[str, str] = {}  # output name -> value name
    for sources, _ in wanted.values():
        for value in (v for source in sources for v in source.values()):
            name = str(value.name)
            if name in inputs or name in requested.values():
                continue
            requested[carried.get(name, name)] = name
            if name not in carried and name not in outputs:
                proto.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
    session = plain_session(proto.SerializeToString(), rewrites=False)
    feeds_names = {i.name for i in session.get_inputs()}
    sums = {name: h for name, (_, h) in wanted.items()}
    counts = dict.fromkeys(sums, 0)
    for batch in calibration.batches:
        feeds = {k: v for k, v in batch.items() if k in feeds_names}
        try:
            outputs = session.run(list(requested), feeds) if requested else []
        except Exception as e:
            raise InputError(f"collecting layer inputs failed: {e}") from None
        values = {requested[k]: v for k, v in zip(requested, outputs, strict=True)}
        # A value of the If branch this batch did not take comes back empty: no rows.
        skipped = {
            requested[k]
            for k, v in zip(requested, outputs, strict=True)
            if k != requested[k] and v.size == 0
        }
        values.update({k: v for k, v in feeds.items() if k not in values})
        for name, (sources, _) in list(wanted.items()):
            try:
                for source in sources:
                    if not skipped.intersection(str(v.name) for v in source.values()):
                        counts[name] += source.add(values, sums[name])
            except ValueError as e:
                left_out[name] = f"inputs not read: {e}"
                del wanted[name], sums[name], counts[name]
        del values
    return sums, counts


class LayerInputs:
    """The H of one compile's layer weights, collected once, by the first pass that asks
    (allocate in budget mode, prune in manual mode), on the canonicalized model. Every
    later pass and every retry of the compile reads the same arrays, so the budget's
    simulation and the passes compensate alike. Inputs the model cannot be run on leave
    every weight without H (plain rounding), with a warning."""

    def __init__(self, calibration: Calibration) -> None:
        self.calibration = calibration
        self.hessians: Hessians | None = None

    def collect(self, model: ir.Model, weights: Sequence[AnalysedWeight]) -> Hessians:
        if self.hessians is None:
            try:
                self.hessians = collect(model, weights, self.calibration)
            except InputError as e:
                logger.warning("warning: no error compensation: %s", e)
                left_out = {str(w.weight.name): str(e) for w in weights}
                self.hessians = Hessians({}, {}, 0, 0.0, left_out)
        return self.hessians

    def get(self, weight: str) -> np.ndarray | None:
        return None if self.hessians is None else self.hessians.get(weight)

    def to_json(self) -> dict[str, object]:
        """For the report: which weights were compensated, and why the others were not."""
        if self.hessians is None:
            return {"weights": [], "left_out": {}}
        return {
            "weights": sorted(self.hessians.by_weight),
            "left_out": dict(self.hessians.left_out),
            "samples": self.hessians.samples,
            "seconds": self.hessians.seconds,
        }
