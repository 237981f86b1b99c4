"""`dc_onnx.compile`: the data-free Deep Compression pipeline as one function call."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import onnx
import onnx_ir as ir

from dc_onnx.errors import InputError
from dc_onnx.io import load_model, save_compiled, side_file_path
from dc_onnx.passes.canonicalize import CanonicalizePass
from dc_onnx.passes.cluster import ClusterOptions, ClusterPass, Init
from dc_onnx.passes.lower import LowerOptions, LowerPass
from dc_onnx.passes.prune import PrunePass, PrunePolicy
from dc_onnx.passes.simplify import SimplifyPass
from dc_onnx.pipeline import run_passes
from dc_onnx.report import LayerReport, Report

# Without data there is no retraining, so the default pruning is mild: on LeNet-300-100
# it costs 0.1 points of accuracy (docs/results.md); a --sparsity target overrides it.
DEFAULT_QUALITY = 0.5


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """What `dc-onnx compile` does; the bits default to the paper's (conv 8/8, fc 5/5)."""

    sparsity: float | None = None
    sparsity_per_layer: dict[str, float] = dataclasses.field(default_factory=dict)
    quality: float | None = DEFAULT_QUALITY
    bits_conv: int = 8
    bits_fc: int = 5
    index_bits_conv: int = 8
    index_bits_fc: int = 5
    init: Init = "linear"
    simplify: bool = False
    single_file: bool = False

    def passes(self) -> list[ir.passes.PassBase]:
        """The data-free recipe: canonicalize, prune, cluster, lower (encode)."""
        prune = PrunePolicy(self.sparsity, dict(self.sparsity_per_layer), self.quality)
        cluster = ClusterOptions(self.bits_conv, self.bits_fc, self.init)
        lower = LowerOptions(self.index_bits_conv, self.index_bits_fc)
        front: list[ir.passes.PassBase] = [SimplifyPass()] if self.simplify else []
        return [
            *front,
            CanonicalizePass(),
            PrunePass(prune),
            ClusterPass(cluster),
            LowerPass(lower),
        ]


@dataclasses.dataclass
class CompileResult:
    model: ir.Model
    report: Report


def _file_bytes(path: Path) -> int:
    """Size of an ONNX file plus the external data files it names."""
    total = path.stat().st_size
    proto = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in proto.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return total + sum((path.parent / loc).stat().st_size for loc in locations)


def compile(
    model: ir.Model | str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    options: CompileOptions | None = None,
) -> CompileResult:
    """Compress a model; with `output`, also write it (plus its side file) and size it."""
    options = options or CompileOptions()
    try:
        passes = options.passes()
    except ValueError as e:
        raise InputError(str(e)) from None
    if isinstance(model, ir.Model):
        source = model
        original_bytes = ir.to_proto(model).ByteSize()
    else:
        in_path = Path(model)
        if output is not None and in_path.resolve() in (
            Path(output).resolve(),
            side_file_path(output).resolve(),
        ):
            raise InputError(f"refusing to overwrite the input {in_path}")
        source = load_model(in_path)
        original_bytes = _file_bytes(in_path)
    compiled, records = run_passes(source, passes)
    lower_stats = records[-1].stats["layers"]
    if not lower_stats:
        raise InputError(
            "nothing to compress: no Gemm, MatMul or Conv reads a constant float32 weight"
        )
    report = Report(
        layers=[LayerReport.from_lower_stats(name, s) for name, s in lower_stats.items()],
        passes=[dataclasses.asdict(r) for r in records],
        original_bytes=original_bytes,
    )
    if output is not None:
        files = save_compiled(compiled, output, single_file=options.single_file)
        report.compressed_bytes = sum(f.stat().st_size for f in files)
        report.files = [f.name for f in files]
    return CompileResult(compiled, report)
