"""correct-bias: empirical bias correction of the compressed layers (manual mode).

Rounding a layer's weights shifts the mean of its outputs, channel by channel, and in a
deep network those shifts add up layer after layer. Here each layer's bias absorbs the
shift it and every layer before it left: its outputs' mean per channel on the
calibration inputs is made that of the original model again (the empirical form of
Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
Correction", section 4.2). Layers are corrected in waves: a layer waits for every
corrected layer upstream of it, so each wave costs one run over the inputs and the
result is that of correcting them one at a time in order.

Two passes share a `BiasCorrection`: `RecordMeansPass` (before prune, on the model as
it came) records the reference means, `CorrectBiasPass` (after cluster, weights as
compressed) corrects. Targets, in the main graph:
- Conv, ConvTranspose: its bias (one is added when it has none);
- Gemm with a constant B: C (added when absent; scaled by 1 / beta);
- MatMul X @ W: the constant 1-D addend of the one Add that reads it, when nothing else
  reads that constant.
Anything else (W @ X, a bias shared with other nodes, a bias of another dtype or shape,
layers inside If / Loop / Scan bodies) is left as it is.

Only in manual mode: the budget's allocation predicts the compiled model's error by
simulating each weight's rounding (dc_onnx.budget.simulate), and a correction after it
would make the prediction wrong. Only on the user's own inputs (`--compensate auto`), as
error compensation: a correction fits the inputs it sees.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from dc_onnx.budget import sequential
from dc_onnx.budget.calibration import Calibration
from dc_onnx.budget.simulate import (
    initializers_as_inputs,
    plain_session,
    self_contained,
    with_outputs,
)
from dc_onnx.errors import InputError
from dc_onnx.layers import add_initializer, find_weight_groups
from dc_onnx.pipeline import CompilerPass

logger = logging.getLogger(__name__)

# Samples of the calibration set the means are taken over: a mean per channel needs few,
# and each wave runs over all of them.
MAX_SAMPLES = 64
# A layer is corrected when its means are over this many values per channel, or over
# MIN_SAMPLES inputs and MIN_SAMPLE_VALUES values: a mean of fewer fits the inputs it
# was taken on. On ppocr-v4-rec, calibrated on one text line and checked on 12 others
# (docs/budget.md, "Bias correction"): with a bound of 32 values its head (40 time steps
# x 6,625 classes) and attention layers were corrected too, and the held-out error rose
# from 3.61% to 4.73%; with 1024 only its convolutions are. Calibrated on 64 chunks of
# speech, silero-vad-sequence's layers (fewer values each) gain on held-out chunks too.
MIN_VALUES_PER_CHANNEL = 1024
MIN_SAMPLES = 32
MIN_SAMPLE_VALUES = 32


@dataclasses.dataclass
class Target:
    """A layer whose bias can absorb its outputs' mean shift."""

    output: str  # the layer's output value (MatMul: the Add's, with the bias)
    node: str  # the layer node's name (for the report)
    channel_axis: int  # of the output: 1 for Conv / ConvTranspose, -1 for Gemm / MatMul
    bias: str | None  # the constant added per channel; None: one is added (Conv, Gemm)
    channels: int  # output channels: the bias's length
    scale: float  # the bias's factor in the output (Gemm's beta, else 1)
    reference: np.ndarray | None = None  # the original model's mean per channel


def _sole_reader(value: ir.Value, node: ir.Node) -> bool:
    return all(user is node for user, _ in value.uses())


def _float_vector(value: ir.Value | None, channels: int, graph: ir.Graph) -> bool:
    """A float32 initializer of the main graph holding one value per channel."""
    if value is None or value.name not in graph.initializers or value.const_value is None:
        return False
    shape = tuple(int(d) for d in value.const_value.shape.numpy())
    return value.const_value.dtype == ir.DataType.FLOAT and shape in ((channels,), (1, channels))


_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _out_channels(node: ir.Node, shape: Sequence[int]) -> int:
    """Output channels of a layer by its weight's shape."""
    if node.op_type == "Conv":
        return shape[0]
    if node.op_type == "ConvTranspose":  # [Cin, Cout / group, ...]
        return shape[1] * node.attributes.get_int("group", 1)
    trans_b: int = node.attributes.get_int("transB", 0)
    return shape[0] if node.op_type == "Gemm" and trans_b else shape[-1]


def _target(node: ir.Node, weight_side: int, graph: ir.Graph) -> Target | str:
    """The node's bias target, or why it has none."""
    weight = node.inputs[1] if node.op_type != "MatMul" or weight_side == 1 else None
    if weight is None or weight.const_value is None:
        return "the weight is the first operand (W @ X)"
    if weight.const_value.dtype != ir.DataType.FLOAT:
        return "not a float32 layer"  # a float32 bias would not type-check
    shape = [int(d) for d in weight.const_value.shape.numpy()]
    output = node.outputs[0]
    name = node.name or str(output.name)
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    channels = _out_channels(node, shape)
    if node.op_type in ("Conv", "ConvTranspose"):
        if bias is None:
            return Target(str(output.name), name, 1, None, channels, 1.0)
        if _float_vector(bias, channels, graph) and _sole_reader(bias, node):
            return Target(str(output.name), name, 1, str(bias.name), channels, 1.0)
        return "its bias is shared or not a float32 vector"
    if node.op_type == "Gemm":
        beta = node.attributes.get_float("beta", 1.0)
        if bias is None:
            return Target(str(output.name), name, -1, None, channels, beta)
        if beta != 0 and _float_vector(bias, channels, graph) and _sole_reader(bias, node):
            return Target(str(output.name), name, -1, str(bias.name), channels, beta)
        return "its C is shared, scaled by 0 or not a float32 vector"
    uses = list(output.uses())
    if len(uses) != 1 or uses[0][0].op_type != "Add":
        return "no Add of a bias reads its output"
    add = uses[0][0]
    addend = add.inputs[1 - uses[0][1]]
    if addend is not None and _float_vector(addend, channels, graph) and _sole_reader(addend, add):
        # The Add's output: the value the corrected addend moves.
        return Target(str(add.outputs[0].name), name, -1, str(addend.name), channels, 1.0)
    return "the Add after it adds no float32 vector of its own"


def find_targets(model: ir.Model) -> tuple[list[Target], dict[str, str]]:
    """The layers of the main graph whose bias can be corrected, and why the others not."""
    main = set(model.graph)
    targets, left_out = [], {}
    for group in find_weight_groups(model.graph):
        for layer in group.layers:
            if layer.kind == "embedding" or layer.node.op_type not in _OPS:
                continue
            if layer.node not in main:
                left_out[layer.name] = "inside an If / Loop / Scan body"
                continue
            found = _target(layer.node, layer.weight_side, model.graph)
            if isinstance(found, str):
                left_out[layer.name] = found
            else:
                targets.append(found)
    return targets, left_out


def _channel_sums(value: np.ndarray, axis: int) -> tuple[np.ndarray, int]:
    moved = np.moveaxis(np.asarray(value, dtype=np.float64), axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    return flat.sum(axis=0), flat.shape[0]


class BiasCorrection:
    """The targets and their reference means (recorded once), then the correction."""

    def __init__(self, calibration: Calibration, shifted: set[str] | None = None) -> None:
        self.calibration = calibration.head(MAX_SAMPLES)
        # Nodes whose layer kept sequential compensation's shift (filled by then): left out.
        self.shifted = set() if shifted is None else shifted
        self.targets: list[Target] = []
        self.left_out: dict[str, str] = {}
        self.few_samples: list[str] = []  # left out for want of calibration samples

    def _means(
        self, proto: onnx.ModelProto, targets: Sequence[Target], feeds: dict[str, np.ndarray]
    ) -> Iterator[tuple[Target, np.ndarray, int]]:
        """Each target's output mean per channel over the calibration inputs, and the
        number of values each mean is over."""
        session = plain_session(proto.SerializeToString(), rewrites=False)
        names = {i.name for i in session.get_inputs()}
        wanted = [t.output for t in targets]
        sums: list[np.ndarray | None] = [None] * len(targets)
        counts = [0] * len(targets)
        for batch in self.calibration.batches:
            given = {k: v for k, v in batch.items() if k in names}
            try:
                values = session.run(wanted, {**given, **feeds})
            except Exception as e:
                raise InputError(f"bias correction: running the model failed: {e}") from None
            for i, (target, value) in enumerate(zip(targets, values, strict=True)):
                total, n = _channel_sums(value, target.channel_axis)
                before = sums[i]
                sums[i] = total if before is None else before + total
                counts[i] += n
        for target, summed, n in zip(targets, sums, counts, strict=True):
            assert summed is not None
            yield target, summed / max(n, 1), n

    def record(self, model: ir.Model) -> None:
        """The targets of the model as it came, and their outputs' means."""
        self.targets = []
        self.few_samples = []
        targets, self.left_out = find_targets(model)
        if not targets:
            return
        proto = with_outputs(self_contained(model), [t.output for t in targets])
        for target, mean, n in self._means(proto, targets, {}):
            many_inputs = self.calibration.samples >= MIN_SAMPLES and n >= MIN_SAMPLE_VALUES
            if n < MIN_VALUES_PER_CHANNEL and not many_inputs:
                samples = self.calibration.samples
                self.left_out[target.node] = f"{n} output values per channel, {samples} samples"
                if samples < MIN_SAMPLES:
                    self.few_samples.append(target.node)
                continue
            target.reference = mean
            self.targets.append(target)

    def correct(self, model: ir.Model) -> dict[str, object]:
        """Adds each target's mean shift to its bias, wave by wave (module docstring)."""
        start = time.perf_counter()
        graph = model.graph
        present = {str(v.name) for node in graph for v in node.outputs}
        left_out = dict(self.left_out)
        targets = []
        for t in self.targets:
            if t.node in self.shifted:
                left_out[t.node] = "its sequential compensation fitted the original outputs"
            elif t.output in present:
                targets.append(t)
        biases = {t.output: _bias_of(graph, t) for t in targets}
        graph.sort()  # the waves walk the nodes in topological order
        order = sequential.waves(graph, [t.output for t in targets])
        proto = with_outputs(self_contained(model), [t.output for t in targets])
        initializers_as_inputs(proto, {str(b.name) for b in biases.values()})
        current = {str(b.name): _array(b) for b in biases.values()}
        for wave in order:
            in_wave = [t for t in targets if t.output in wave]
            for target, mean, _ in self._means(proto, in_wave, current):
                assert target.reference is not None
                name = str(biases[target.output].name)
                shift = (target.reference - mean) / target.scale
                current[name] = (current[name] + shift.reshape(current[name].shape)).astype(
                    np.float32
                )
        for b in biases.values():
            b.const_value = ir.tensor(current[str(b.name)], name=str(b.name))
        return {
            "corrected": sorted(t.node for t in targets),
            "left_out": left_out,
            "waves": len(order),
            "samples": self.calibration.samples,
            "seconds": round(time.perf_counter() - start, 3),
        }


def _array(value: ir.Value) -> np.ndarray:
    assert value.const_value is not None
    return np.asarray(value.const_value.numpy(), dtype=np.float32).copy()


def _bias_of(graph: ir.Graph, target: Target) -> ir.Value:
    """The target's bias initializer; a zero one is added to a Conv / Gemm without one."""
    if target.bias is not None:
        return graph.initializers[target.bias]
    node = next(n for n in graph if any(str(o.name) == target.output for o in n.outputs))
    bias = add_initializer(graph, f"{target.output}.bias", np.zeros(target.channels, np.float32))
    if len(node.inputs) < 3:
        node.resize_inputs(3)
    node.replace_input_with(2, bias)
    return bias


class RecordMeansPass(CompilerPass):
    """Records the reference means of the layers to correct (before any weight changes)."""

    name = "record-means"

    def __init__(self, correction: BiasCorrection) -> None:
        super().__init__()
        self.correction = correction

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        try:
            self.correction.record(model)
        except InputError as e:  # the compile goes on, as it would without the correction
            logger.warning("warning: no bias correction: %s", e)
            self.correction.targets = []
        self.stats = {"targets": len(self.correction.targets)}
        return ir.passes.PassResult(model, modified=False)


class CorrectBiasPass(CompilerPass):
    """Adds each corrected layer's mean shift to its bias (module docstring)."""

    name = "correct-bias"

    def __init__(self, correction: BiasCorrection) -> None:
        super().__init__()
        self.correction = correction

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        few = self.correction.few_samples
        if few:  # the one thing a user can change about it: say so once
            logger.info(
                "correct-bias: %d layers left as they were: each channel's mean rests on few "
                "values, and %d calibration samples are too few to trust them (%d or more "
                "are enough; docs/budget.md, \"Bias correction\")",
                len(few), self.correction.calibration.samples, MIN_SAMPLES,
            )  # fmt: skip
        if not self.correction.targets:
            self.stats = {"corrected": [], "left_out": dict(self.correction.left_out)}
            return ir.passes.PassResult(model, modified=False)
        try:
            self.stats = self.correction.correct(model)
        except InputError as e:  # biases as they were (an added one is still all zeros)
            logger.warning("warning: no bias correction: %s", e)
            self.stats = {"corrected": [], "left_out": dict(self.correction.left_out)}
            return ir.passes.PassResult(model, modified=True)
        logger.info(
            "correct-bias: %d layers in %d waves on %d samples, %.1f s",
            len(self.stats["corrected"]), self.stats["waves"], self.stats["samples"],
            self.stats["seconds"],
        )  # fmt: skip
        return ir.passes.PassResult(model, modified=True)
