"""requantize: fewer distinct values in already-quantized (int8 / uint8) weights.

The allocate pass may choose a sparsity and k-means bits for an integer weight, as for a
float one; this pass applies them with `dc_onnx.requantize` (the math the budget
simulated): the weights of least magnitude go to the zero point, the others share at most
2^bits - 1 integers of the dtype. The graph around the weight is untouched (same ops, same
scales and zero points, the same dtype decoded), and the lower pass then codes the fewer
values losslessly. A weight without such a choice (manual mode, or "left as it is") keeps
its values, so its coding stays lossless.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from dc_onnx.layers import DEFAULT_MIN_ELEMENTS, StoredWeight, find_stored_weights
from dc_onnx.pipeline import CompilerPass
from dc_onnx.qparams import QuantParams, read_params
from dc_onnx.requantize import energy_of, entropy_bits, requantize

logger = logging.getLogger(__name__)


def _relative_error(before: np.ndarray, after: np.ndarray, params: QuantParams) -> float:
    """||dW|| / ||W|| in dequantized units (the zero point taken as 0 where unknown)."""
    step = after.astype(np.int64) - before.astype(np.int64)
    scale = np.broadcast_to(params.scale, before.shape)
    energy = energy_of(before, params)
    return float(np.linalg.norm(step * scale)) / energy**0.5 if energy else 0.0


class RequantizePass(CompilerPass):
    name = "requantize"

    def __init__(self, min_weight_elements: int = DEFAULT_MIN_ELEMENTS) -> None:
        super().__init__()
        self.min_weight_elements = min_weight_elements

    def weights(self, model: ir.Model) -> list[StoredWeight]:
        """The integer weights the allocate pass chose a setting for."""
        stored = find_stored_weights(model.graph, self.min_weight_elements)
        return [s for s in stored if s.kind == "integer" and s.annotation("bits") is not None]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        layers = {}
        self._entropy: dict[str, float] = {}  # of each weight pruned, not yet shared
        for weight in self.weights(model):
            bits, sparsity = int(weight.annotation("bits") or 0), weight.annotation("sparsity")
            params = read_params(weight.weight)
            before = weight.array()
            after = requantize(before, params, bits, sparsity or 0.0)
            pruned = requantize(before, params, None, sparsity or 0.0)
            self._entropy[weight.name] = entropy_bits(pruned)
            changed = not np.array_equal(after, before)
            if changed:
                weight.set_array(after)
                modified = True
            values = int(np.unique(before).size), int(np.unique(after).size)
            layers[weight.name] = {
                "bits": bits,
                "sparsity": sparsity or 0.0,
                "values": list(values),
                "zero_point": params.source if params.zero_point is not None else None,
                "relative_error": _relative_error(before, after, params) if changed else 0.0,
            }
            logger.info(
                "requantize %s: %d -> %d values (bits %d, sparsity %g)",
                weight.name, *values, bits, sparsity or 0.0,
            )  # fmt: skip
        self.stats = {"layers": layers}
        return ir.passes.PassResult(model, modified)

    def ensures(self, model: ir.Model) -> None:
        for weight in self.weights(model):
            before = self._entropy.get(weight.name)
            after = entropy_bits(weight.array())
            if before is not None and after > before * (1 + 1e-9):
                raise AssertionError(f"{weight.name}: entropy up from {before:.0f} to {after:.0f}")
