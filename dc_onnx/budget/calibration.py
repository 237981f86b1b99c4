"""Calibration inputs: the samples on which output error is measured.

Either read from the user's data (`--calibration`: the `.npz` format of `--data`, labels
optional; or one run's inputs as given, in one `.npz` or one per file in a directory, for
models whose inputs share no sample axis) or synthesized from the model's input specs:

- float inputs: standard-normal values;
- integer inputs the graph reads as an index or a code (reached directly or through Cast /
  Unsqueeze / Squeeze / Reshape / Flatten / Identity / Expand, or through ops that select
  their elements: Gather / Slice / Split / Transpose / Tile of the input itself): uniform
  in [0, rows) for a Gather on a constant table, in [0, depth) for a OneHot, drawn from
  the constant values an Equal compares them with (a one-hot built by comparison, a
  sample rate);
- other integer inputs, and those named like a mask: ones, the value that keeps every
  position of an attention mask (with a warning when the name does not say mask), unless
  the mask is a padding mask (below);
- bool inputs: True;
- a padding mask, an integer or bool input whose true values remove a position (every
  use sets a score to a large negative value where it is true, `Where(mask, -1e9,
  scores)` or `mask * -1e9` added to them, or multiplies data by `Not(mask)`): zeros,
  which keep every position.

Symbolic dims take the value given with `--input-shape NAME=d0,d1,...`; batch-like dims
(any symbolic dim on axis 0, and those named `batch`, `N`, `batch_size`, ...) default to
the batch size; any other symbolic dim is an error that asks for `--input-shape`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir

from dc_onnx.data import Dataset, as_input_dtype, read_npz
from dc_onnx.errors import InputError

logger = logging.getLogger(__name__)

# Samples synthesized when a batch dim is free; samples read from a file at most (error
# compensation wants several input vectors per weight column: a speech model that sees one
# vector per chunk in its last convolutions needs hundreds of chunks).
SYNTHETIC_SAMPLES = 8
MAX_FILE_SAMPLES = 1024
FILE_BATCH = 16
_BATCH_NAMES = re.compile(r"^(n|b|bs|batch|batch_?size|batches|num_?samples|unk__\d+)$", re.I)
_INDEX_PASS_THROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand"}
# Ops that select or rearrange the elements of their first input (the data, not the
# indices): the last token of a prefix, Gather(prefix, -1, axis=1), keeps its values.
_INDEX_SELECTING = {"Gather", "GatherElements", "GatherND", "Slice", "Split", "Transpose", "Tile"}


@dataclasses.dataclass
class Calibration:
    """Batches of model inputs (each a feed dict) and a sentence saying what they are."""

    batches: list[dict[str, np.ndarray]]
    source: str  # "file" or "synthetic"
    description: str

    @property
    def samples(self) -> int:
        return sum(_batch_size(b) for b in self.batches)

    def head(self, max_samples: int) -> Calibration:
        """The first whole batches holding at least `max_samples` samples (or all)."""
        kept: list[dict[str, np.ndarray]] = []
        n = 0
        for batch in self.batches:
            if kept and n >= max_samples:
                break
            kept.append(batch)
            n += _batch_size(batch)
        return Calibration(kept, self.source, self.description)

    def summary(self) -> str:
        return f"{self.description} ({self.samples} samples)"

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each input in the first batch."""
        return {} if not self.batches else {k: v.shape for k, v in self.batches[0].items()}

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "description": self.description, "samples": self.samples}


def _batch_size(batch: dict[str, np.ndarray]) -> int:
    first = next(iter(batch.values()), None)
    return 0 if first is None or first.ndim == 0 else int(first.shape[0])


def model_inputs(graph: ir.Graph) -> list[ir.Value]:
    """Graph inputs that are real inputs (not initializers listed as inputs, IR < 4)."""
    return [v for v in graph.inputs if not v.is_initializer()]


def _constant_values(value: ir.Value | None) -> np.ndarray | None:
    """The values of a constant integer tensor (or a float one holding whole numbers)."""
    tensor = None if value is None else value.const_value
    if tensor is None:
        return None
    array = np.asarray(tensor.numpy())
    if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
        return None
    return np.unique(array).astype(np.int64) if array.dtype.kind in "fiu" else None


# Ops whose output has the shape of their first input, as they appear between an integer
# table and the Gather that reads it (an int8 table dequantized on the fly).
_SHAPE_KEEPING = {"Cast", "Identity", "Mul", "Div", "Add", "Sub", "DequantizeLinear"}


def _rows(table: ir.Value | None, axis: int) -> int | None:
    """The static size of a Gather table's axis: a constant, or one reached back through
    shape-keeping ops (the shape is unknown otherwise)."""
    while table is not None:
        shape = table.const_value.shape if table.const_value is not None else table.shape
        if shape is not None and len(shape) >= 1:
            dim = shape[axis % len(shape)]
            if isinstance(dim, int):
                return dim
        node = table.producer()
        if node is None or node.op_type not in _SHAPE_KEEPING or not node.inputs:
            return None
        table = node.inputs[0]
    return None


def _index_values(value: ir.Value, seen: set[int] | None = None) -> tuple[np.ndarray, str] | None:
    """The values an integer input is read as, with how they were found, or None.

    Each use of the input, directly or through Cast / Unsqueeze / Squeeze / Reshape /
    Flatten / Identity / Expand, or ops that select its elements (a Gather or Slice of it,
    ...), may say: a Gather on a constant table ([0, rows)), a
    OneHot of constant depth ([0, depth)), an Equal with a constant (the values it is
    compared with: a one-hot built by comparison, a sample rate). The smallest set wins.
    """
    seen = seen if seen is not None else set()
    if id(value) in seen:
        return None
    seen.add(id(value))
    found: list[tuple[np.ndarray, str]] = []
    for node, index in value.uses():
        op = node.op_type
        if op == "Gather" and index == 1:
            dim = _rows(node.inputs[0], node.attributes.get_int("axis", 0))
            if dim is not None:
                found.append((np.arange(dim), f"uniform integers in [0, {dim})"))
        elif op == "OneHot" and index == 0 and len(node.inputs) > 1:
            depth = _constant_values(node.inputs[1])
            if depth is not None and depth.size == 1 and depth[0] > 0:
                n = int(depth[0])
                found.append((np.arange(n), f"uniform integers in [0, {n}) (a OneHot's depth)"))
        elif op == "Equal" and len(node.inputs) == 2:
            compared = _constant_values(node.inputs[1 - index])
            if compared is not None and compared.size:
                shown = ", ".join(str(v) for v in compared[:4]) + (", ..." * (compared.size > 4))
                found.append(
                    (compared, f"the {compared.size} values it is compared with ({shown})")
                )
        elif (op in _INDEX_PASS_THROUGH or op in _INDEX_SELECTING) and index == 0:
            for out in node.outputs:
                values = _index_values(out, seen)
                if values is not None:
                    found.append(values)
    return min(found, key=lambda f: f[0].size) if found else None


# A score at or below this is a position masked out (-1e9, -10000, -inf in exporters).
_MASKED_SCORE = -1e4


def _masks_out_when_true(value: ir.Value) -> bool:
    """The input is a padding mask, whose true values remove a position: so False (zeros)
    keeps every one. Followed through Cast / Unsqueeze / ... and Not, each use says which
    way the mask reads: a score set to a large negative value where it is true
    (Where(mask, -1e9, scores), or mask * -1e9 added to them) removes; data multiplied by
    it (mean pooling over the positions kept) keeps. Only uses that all say "removes" make
    it a padding mask."""
    readings = _mask_readings(value, flipped=False, seen=set())
    return bool(readings) and all(readings)


def _mask_readings(value: ir.Value, flipped: bool, seen: set[int]) -> list[bool]:
    """For each use that says which way the mask reads: True where a true value removes."""
    if id(value) in seen:
        return []
    seen.add(id(value))
    readings = []
    for node, index in value.uses():
        op = node.op_type
        if op == "Not":
            readings += _mask_readings(node.outputs[0], not flipped, seen)
        elif op in _INDEX_PASS_THROUGH and index == 0:
            for out in node.outputs:
                readings += _mask_readings(out, flipped, seen)
        elif op == "Where" and index == 0 and len(node.inputs) == 3:
            if _masked_score(_constant_array(node.inputs[1])):
                readings.append(not flipped)
            elif _masked_score(_constant_array(node.inputs[2])):
                readings.append(flipped)
        elif op == "Mul" and len(node.inputs) == 2:
            other = node.inputs[1 - index]
            constant = _constant_array(other)
            if _masked_score(constant):
                readings.append(not flipped)
            elif other is not None and not constant.size:  # data times the mask: kept
                readings.append(flipped)
    return readings


def _masked_score(array: np.ndarray) -> bool:
    return bool(array.size and array.dtype.kind == "f" and np.all(array <= _MASKED_SCORE))


def _constant_array(value: ir.Value | None) -> np.ndarray:
    """An initializer's or a Constant node's values (empty if neither)."""
    if value is not None and value.const_value is not None:
        return np.asarray(value.const_value.numpy())
    node = None if value is None else value.producer()
    if node is not None and node.op_type == "Constant" and "value" in node.attributes:
        return np.asarray(node.attributes["value"].as_tensor().numpy())
    return np.asarray([])


def _is_mask(name: str) -> bool:
    """An input named like a mask: ones keep every position, whatever the graph does."""
    return "mask" in name.lower()


def integer_reads(graph: ir.Graph) -> dict[str, tuple[np.ndarray, str]]:
    """The integer model inputs the graph reads as an index or a code (_index_values), with
    the values to draw them from and how those were found. Inputs named like a mask are
    left out: ones keep every position, even where the graph compares them with 0."""
    reads = {}
    for value in model_inputs(graph):
        name = str(value.name)
        if value.dtype is None or _is_mask(name):
            continue
        found = None
        if value.dtype.is_integer():
            found = _index_values(value)
        elif value.dtype.is_floating_point():
            found = _float_index_values(value)
        if found is not None:
            reads[name] = found
    return reads


_INTEGER_TYPES = {int(t) for t in ir.DataType if t.is_integer()}


def _float_index_values(value: ir.Value) -> tuple[np.ndarray, str] | None:
    """The values a float input is read as when every use casts it to integers (tf2onnx
    writes embedding ids so: a float input, Cast to int32, Gather), or None."""
    uses = [node for node, _ in value.uses()]
    casts = [
        node for node in uses
        if node.op_type == "Cast" and node.attributes.get_int("to", 0) in _INTEGER_TYPES
    ]  # fmt: skip
    if not uses or len(casts) != len(uses):
        return None  # read as a float somewhere: its values are not only ids
    found = [f for node in casts if (f := _index_values(node.outputs[0])) is not None]
    if not found:
        return None
    values, how = min(found, key=lambda f: f[0].size)
    return values, f"{how}, as floats (the graph casts them to integers)"


def padding_masks(graph: ir.Graph) -> set[str]:
    """The bool or integer inputs that are padding masks: a true value removes a position,
    so False (zeros) keeps every one (_masks_out_when_true)."""
    return {
        str(v.name)
        for v in model_inputs(graph)
        if v.dtype is not None and not v.dtype.is_floating_point() and _masks_out_when_true(v)
    }


def _named_sizes(inputs: Sequence[ir.Value], given: Mapping[str, list[int]]) -> dict[str, int]:
    """The sizes that --input-shape gives the named symbolic dims: a dim that several
    inputs share (a sequence length, read by the ids and by their mask) is given once."""
    sizes: dict[str, int] = {}
    for value in inputs:
        shape = given.get(str(value.name))
        if shape is None or value.shape is None or len(shape) != len(value.shape):
            continue
        for dim, size in zip(value.shape, shape, strict=True):
            label = getattr(dim, "value", None)
            if not isinstance(dim, int) and label:
                sizes.setdefault(label, int(size))
    return sizes


def _shape(
    value: ir.Value, given: Mapping[str, list[int]], batch: int, named: Mapping[str, int]
) -> list[int]:
    name = str(value.name)
    if name in given:
        return given[name]
    if value.shape is None:
        raise InputError(f"input '{name}' has no shape; give one with --input-shape {name}=...")
    dims: list[int | str] = []
    for axis, dim in enumerate(value.shape):
        label = getattr(dim, "value", None)
        if isinstance(dim, int) and dim > 0:
            dims.append(dim)
        elif label is not None and label in named:
            dims.append(named[label])
        # Exporters name the first dim anything ('DynamicDimension.0', 's6', 'seq_len');
        # it is the batch (or a count of chunks) in the models we met, as verify assumes.
        elif axis == 0 or (label is not None and _BATCH_NAMES.match(label)):
            dims.append(batch)
        else:
            dims.append(f"D{axis}")
    unknown = [(axis, d) for axis, d in enumerate(value.shape) if isinstance(dims[axis], str)]
    if unknown:
        shown = ",".join(str(d) if isinstance(d, int) else str(d.value or "?") for d in value.shape)
        names = ", ".join(f"{axis} ('{getattr(d, 'value', None) or '?'}')" for axis, d in unknown)
        template = ",".join(str(d) for d in dims)
        raise InputError(
            f"input '{name}' has shape [{shown}]: cannot guess dim{'s' * (len(unknown) > 1)} "
            f"{names} (an image size or a sequence length: no size fits every model); give "
            f"{'them' if len(unknown) > 1 else 'it'} with --input-shape {name}={template}, or "
            "real inputs with --calibration"
        )
    return [int(d) for d in dims]


def synthesize(
    graph: ir.Graph, input_shapes: Mapping[str, list[int]] | None = None, seed: int = 0
) -> Calibration:
    """Inputs made up from the model's input specs (see the module docstring)."""
    given = dict(input_shapes or {})
    inputs = model_inputs(graph)
    unknown = sorted(set(given) - {str(v.name) for v in inputs})
    if unknown:
        names = ", ".join(str(v.name) for v in inputs)
        raise InputError(f"--input-shape names {', '.join(unknown)}; model inputs: {names}")
    rng = np.random.default_rng(seed)
    named = _named_sizes(inputs, given)
    shapes, unknown_dims = {}, []
    for value in inputs:  # every input's missing dims in one message, not one per run
        try:
            shapes[str(value.name)] = _shape(value, given, SYNTHETIC_SAMPLES, named)
        except InputError as e:
            unknown_dims.append(str(e))
    if unknown_dims:
        raise InputError("; and ".join(unknown_dims))
    # A fixed batch dim (often 1) gets several batches, so the error is not one sample's.
    first = [s[0] for s in shapes.values() if s]
    count = 1 if not first else max(1, -(-SYNTHETIC_SAMPLES // max(first)))
    batches: list[dict[str, np.ndarray]] = [{} for _ in range(count)]
    kinds = []
    reads = integer_reads(graph)
    masks = padding_masks(graph)
    for value in inputs:
        name, dtype = str(value.name), value.dtype
        shape = shapes[name]
        if dtype is None:
            raise InputError(f"input '{name}' has no element type")
        np_dtype = dtype.numpy()
        read_as = reads.get(name)
        masks_out = name in masks
        if dtype.is_floating_point() and read_as is None:
            kinds.append(f"{name}: standard normal")
        elif masks_out:
            kinds.append(f"{name}: {'False' if dtype == ir.DataType.BOOL else 'zeros'} (a "
                         "padding mask: a true value removes a position)")  # fmt: skip
        elif dtype == ir.DataType.BOOL:
            kinds.append(f"{name}: True")
        elif read_as is not None:
            kinds.append(f"{name}: {read_as[1]}")
        elif dtype.is_integer():
            kinds.append(f"{name}: ones")
            if not _is_mask(name):
                logger.warning(
                    "warning: integer input '%s' is not read as a table index, a one-hot or a "
                    "compared value: synthesized as ones, as for an attention mask. If it is "
                    "something else, the error is measured on inputs unlike real ones: pass "
                    "real inputs with --calibration", name,
                )  # fmt: skip
        else:
            raise InputError(f"input '{name}' is {dtype}: pass real inputs with --calibration")
        for feeds in batches:
            if dtype.is_floating_point() and read_as is None:
                feeds[name] = rng.standard_normal(shape).astype(np_dtype)
            elif masks_out:
                feeds[name] = np.zeros(shape, dtype=np_dtype)
            elif read_as is not None:
                feeds[name] = rng.choice(read_as[0], size=shape).astype(np_dtype)
            else:
                feeds[name] = np.ones(shape, dtype=np_dtype)
    return Calibration(batches, "synthetic", "synthesized: " + "; ".join(kinds))


def load(path: str | os.PathLike[str], graph: ir.Graph, labels: str = "labels") -> Calibration:
    """Up to MAX_FILE_SAMPLES samples of a `.npz` file or directory of shards."""
    inputs = model_inputs(graph)
    names = [str(v.name) for v in inputs]
    dtypes = {str(v.name): v.dtype.numpy() for v in inputs if v.dtype is not None}
    # A model with a fixed batch dim takes the samples in batches of that size.
    fixed = {d for v in inputs if v.shape is not None and len(v.shape) > 0 for d in v.shape[:1]}
    batch_size = next((d for d in fixed if isinstance(d, int) and d > 0), FILE_BATCH)
    given = _one_batch_as_given(path, names, dtypes)
    if given is not None:
        _check_named_dims(given, inputs, str(path))
        return Calibration([given], "file", f"{path} (one batch, as given)")
    runs = _runs_as_given(path, names, dtypes)
    if runs is not None:
        for i, run in enumerate(runs, 1):
            _check_named_dims(run, inputs, f"{path} (run {i})")
        return Calibration(runs, "file", f"{path} ({len(runs)} runs, each as given)")
    dataset = Dataset(path, labels)
    batches, n = [], 0
    for feeds, _ in dataset.batches(names, batch_size, dtypes=dtypes):
        if any(len(a) != batch_size for a in feeds.values()) and batch_size != FILE_BATCH:
            break  # a short last batch does not fit a fixed batch dim
        batches.append(feeds)
        n += _batch_size(feeds)
        if n >= MAX_FILE_SAMPLES:
            break
    if not batches:
        raise InputError(f"{path}: no samples")
    return Calibration(batches, "file", str(path))


def _check_named_dims(
    feeds: Mapping[str, np.ndarray], inputs: Sequence[ir.Value], where: str
) -> None:
    """Inputs that share a named dim in the model (a batch 'N', a sequence length) must
    agree on it: ORT would fail deep inside the model, or broadcast them silently."""
    seen: dict[str, tuple[str, int]] = {}
    for value in inputs:
        array = feeds.get(str(value.name))
        if array is None or value.shape is None or len(value.shape) != array.ndim:
            continue
        for axis, dim in enumerate(value.shape):
            if not isinstance(dim, ir.SymbolicDim) or dim.value is None:
                continue
            size = int(array.shape[axis])
            first = seen.setdefault(dim.value, (str(value.name), size))
            if first[1] != size:
                raise InputError(
                    f"{where}: inputs '{first[0]}' and '{value.name}' share the dim "
                    f"'{dim.value}' in the model, but the arrays give it {first[1]} and "
                    f"{size}"
                )


def _one_batch_as_given(
    path: str | os.PathLike[str], names: list[str], dtypes: Mapping[str, np.dtype]
) -> dict[str, np.ndarray] | None:
    """A single `.npz` whose arrays share no sample axis (a scalar such as a sample rate, a
    recurrent state batched on another axis) is one run's inputs: fed as they are."""
    if not Path(path).is_file():
        return None
    arrays = read_npz(Path(path))
    if any(n not in arrays for n in names):
        return None  # Dataset names what is missing
    firsts = {arrays[n].shape[0] if arrays[n].ndim else None for n in names}
    if len(firsts) == 1 and None not in firsts:
        return None  # a sample axis: Dataset splits it into batches
    return {n: as_input_dtype(n, arrays[n], dtypes.get(n)) for n in names}


def _runs_as_given(
    path: str | os.PathLike[str], names: list[str], dtypes: Mapping[str, np.dtype]
) -> list[dict[str, np.ndarray]] | None:
    """A directory whose `.npz` files are each one run's inputs as given (see
    `_one_batch_as_given`): a batch per file, in name order, up to MAX_FILE_SAMPLES
    samples. Runs of different shapes are fine (e.g. an 8 kHz and a 16 kHz chunk)."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.npz"))
    if not files:
        return None  # Dataset says the folder holds no .npz files
    runs: list[dict[str, np.ndarray]] = []
    n = 0
    for file in files:
        run = _one_batch_as_given(file, names, dtypes)
        if run is None and not runs:
            return None  # shards with a sample axis: Dataset reads them
        if run is None:
            missing = [name for name in names if name not in read_npz(file)]
            raise InputError(
                f"{file} lacks {', '.join(repr(name) for name in missing)} (model inputs: "
                f"{', '.join(names)})"
                if missing
                else f"{file}: not one run's inputs as given, unlike {files[0].name} "
                "(a directory holds either runs or shards with a sample axis, not both)"
            )
        runs.append(run)
        n += max(1, _batch_size(run))
        if n >= MAX_FILE_SAMPLES:
            break
    return runs


def calibration_for(
    graph: ir.Graph,
    path: str | os.PathLike[str] | None,
    input_shapes: Mapping[str, list[int]] | None = None,
    labels: str = "labels",
) -> Calibration:
    """The user's file when given, else synthesized inputs."""
    if path is not None:
        return load(path, graph, labels)
    return synthesize(graph, input_shapes)
