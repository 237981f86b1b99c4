"""cluster: per-weight 1-D k-means weight sharing (Han et al. 2016, section 3).

The surviving (non-zero) weights of each layer share `2**bits - 1` values; code 0 is the
exact zero, so pruned weights stay pruned. Bits come per kind (conv / fc) unless a
per-weight mapping names the weight. The math lives in `dc_onnx.quantize`; this pass walks
the weights, picks their bits and records what it did.

Storage-form float weights are clustered with the allocate pass's bits, else `bits_other`;
fp16/bf16 centroids are rounded to the weight's dtype, so the codebook holds values that
dtype represents exactly.
Integer weights (already quantized) are not clustered here: the requantize pass gives
them fewer integers where the budget chose to, and they are coded losslessly.

With error compensation (dc_onnx.compensate), a layer weight keeps its k-means codebook
but each weight takes the codebook value that compensates the rounding errors of the
earlier columns through H (dc_onnx.budget.activations), as the budget simulated. With
`--compensate sequential` (manual mode) the layers it can take are rounded in waves
instead, each against its inputs in the model rounded so far (dc_onnx.budget.sequential).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from dc_onnx import scratch
from dc_onnx.budget.activations import LayerInputs
from dc_onnx.budget.sequential import SequentialCompensation, layer_error
from dc_onnx.errors import CompileError
from dc_onnx.large_weights import cluster_large, distinct_values, is_large
from dc_onnx.layers import (
    DEFAULT_MIN_ELEMENTS,
    StoredWeight,
    WeightGroup,
    annotate_rows,
    clear_row_annotation,
    find_stored_weights,
    find_weight_groups,
    from_stored_matrix,
    refuse_unmatched,
    row_annotation,
    stored_matrix_of,
)
from dc_onnx.options import ClusterOptions
from dc_onnx.pipeline import CompilerPass
from dc_onnx.progress import track
from dc_onnx.quantize import Init, SharedLayer, compensable, kmeans_1d, share_layer

__all__ = ["ClusterOptions", "ClusterPass", "Init", "kmeans_1d"]

logger = logging.getLogger(__name__)


def bits_of(options: ClusterOptions, group: WeightGroup | StoredWeight) -> int:
    """The group's bits: its weight's name in `bits_per_layer`, else the first glob there
    that matches a weight or node name, else the allocate pass's choice, else the kind's
    default."""
    per_layer = options.bits_per_layer
    name = str(group.weight.name)
    if name in per_layer:
        return per_layer[name]
    for pattern, bits in per_layer.items():
        if group.matches(pattern):
            return bits
    allocated = group.annotation("bits")
    return options.bits(group.kind) if allocated is None else int(allocated)


def _relative_error(before: np.ndarray, after: np.ndarray) -> float:
    finite = np.isfinite(before)
    b = before[finite].astype(np.float64)
    norm = float(np.linalg.norm(b))
    return float(np.linalg.norm(after[finite].astype(np.float64) - b)) / norm if norm else 0.0


class ClusterPass(CompilerPass):
    name = "cluster"

    def __init__(
        self,
        options: ClusterOptions,
        min_weight_elements: int = DEFAULT_MIN_ELEMENTS,
        default_init: Init = "mse",
        row_scales: bool = True,
        layer_inputs: LayerInputs | None = None,
        sequential: SequentialCompensation | None = None,
    ) -> None:
        super().__init__()
        self.sequential = sequential  # with layer_inputs: layers rounded in waves
        self.options = options
        self.layer_inputs = layer_inputs  # error compensation's H (None: nearest values)
        self.row_scales = row_scales
        self.min_weight_elements = min_weight_elements
        self.init: Init = options.init or default_init

    def weights(self, model: ir.Model) -> list[WeightGroup | StoredWeight]:
        """Layer weights, then storage-form float weights (integer ones are left alone)."""
        stored = find_stored_weights(model.graph, self.min_weight_elements)
        return [*find_weight_groups(model.graph), *(s for s in stored if s.kind == "storage")]

    def requires(self, model: ir.Model) -> None:
        refuse_unmatched("--bits-per-layer", self.options.bits_per_layer, self.weights(model))

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        layers: dict[str, dict[str, object]] = {}
        modified: list[bool] = []
        groups = self.weights(model)
        sequential = None
        if self.layer_inputs is not None:
            self.layer_inputs.collect(model, groups)  # collected already unless cluster is first
            if self.sequential is not None:
                inputs = self.layer_inputs
                taken = [
                    g
                    for g in groups
                    if isinstance(g, WeightGroup)
                    and not is_large(g)
                    and self.sequential.takes(g, model.graph, inputs)
                ]

                def round_group(group: WeightGroup, shifted: np.ndarray, h_q: np.ndarray) -> bool:
                    hessian = inputs.get(str(group.weight.name))
                    layers[group.name], changed = self._share(group, hessian, (shifted, h_q))
                    modified.append(changed)
                    return bool(layers[group.name]["sequential"])

                sequential = self.sequential.run(model, taken, inputs, round_group)
        for group in track([g for g in groups if g.name not in layers], "cluster"):
            hessian = None
            if self.layer_inputs is not None:  # layers, and recurrent storage weights
                hessian = self.layer_inputs.get(str(group.weight.name))
            layers[group.name], changed = self._share(group, hessian)
            modified.append(changed)
        self.stats = {"layers": layers}
        if self.layer_inputs is not None:
            compensation = self.layer_inputs.to_json()
            if sequential is not None:
                compensation["sequential"] = sequential
            self.stats["compensation"] = compensation
        return ir.passes.PassResult(model, any(modified))

    def _share(
        self,
        group: WeightGroup | StoredWeight,
        hessian: np.ndarray | None,
        sequential: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[dict[str, object], bool]:
        """Clusters one weight; returns its stats and whether its values changed. With
        `sequential` (the shifted matrix W* and H_q, dc_onnx.budget.sequential), W* is
        rounded through H_q as well, and the one of the two roundings whose outputs on the
        rounded inputs are nearer the original's is kept."""
        bits = bits_of(self.options, group)
        if isinstance(group, WeightGroup) and is_large(group):  # never copied whole
            o = self.options
            large = cluster_large(group, (1 << bits) - 1, self.init, o.max_iterations, o.seed)
            return {"bits": bits, **large}, True
        w = group.array()
        mask = w != 0  # NaN too: a non-finite weight is kept, never pruned
        stored = np.ascontiguousarray(stored_matrix_of(group, w))
        layer = self._shared(group.name, bits, stored, hessian)
        took_shift = False
        if sequential is not None:
            target, h_q = sequential
            alternative = self._shared(group.name, bits, target, h_q, stored != 0)
            errors = [layer_error(target, h_q, v) for v in (layer.values, alternative.values)]
            took_shift = errors[1] < errors[0]
            if took_shift:
                layer = alternative
        shared = from_stored_matrix(group, w, layer.values)
        clear_row_annotation(group.weight)
        if layer.rows is not None:
            annotate_rows(group.weight, layer.rows.scales, layer.rows.codebook)
        changed = not np.array_equal(shared, w, equal_nan=True)
        if changed:
            group.set_array(shared)
        clusters = layer.rows.codebook.size if layer.rows else np.unique(shared[mask]).size
        stats: dict[str, object] = {
            "bits": bits,
            "clusters": int(clusters),
            "row_scales": layer.rows is not None,
            "iterations": layer.iterations,
            "nonfinite": int(np.count_nonzero(~np.isfinite(w))),
            "relative_error": _relative_error(w, shared),
            "compensated": compensable(stored, hessian),
        }
        if sequential is not None:
            stats["sequential"] = took_shift
        del w, shared, layer, stored
        scratch.release(group.weight.const_value)  # one weight at a time in memory
        logger.info(
            "cluster %s: %d weights -> %d values at %d bits (%d iterations, relative error %.2e)",
            group.name, int(mask.sum()), stats["clusters"], bits, stats["iterations"],
            stats["relative_error"],
        )  # fmt: skip
        return stats, changed

    def _shared(
        self,
        name: str,
        bits: int,
        matrix: np.ndarray,
        h: np.ndarray | None,
        mask: np.ndarray | None = None,
    ) -> SharedLayer:
        try:
            return share_layer(
                matrix,
                (1 << bits) - 1,
                self.init,
                seed=self.options.seed,
                max_iterations=self.options.max_iterations,
                row_scales=self.row_scales,
                hessian=h,
                mask=mask,
            )
        except ValueError as e:
            raise CompileError(f"layer '{name}': {e}") from None

    def ensures(self, model: ir.Model) -> None:
        for group in self.weights(model):
            limit = 1 << bits_of(self.options, group)
            rows = row_annotation(group.weight)
            if rows is not None:
                distinct = rows[1].size + 1  # the shared codebook, and zero
            elif isinstance(group, WeightGroup) and is_large(group):
                distinct = distinct_values(group, limit)
            else:
                distinct = np.unique(group.array()).size
                scratch.release(group.weight.const_value)
            if distinct > limit:
                raise AssertionError(f"{group.name}: {distinct} distinct values after clustering")
