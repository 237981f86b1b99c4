"""The compile report: the paper's per-layer table (Han et al. 2016, Table 2) and totals."""

from __future__ import annotations

import dataclasses
import io
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dc_onnx.layers import Skipped
from dc_onnx.passes.canonicalize import CanonicalizeStats
from dc_onnx.passes.lower import LayerStats, LowerStats
from dc_onnx.pipeline import PassRecord, stats_of

FLOAT_BITS = 32


@dataclasses.dataclass(frozen=True)
class LayerReport:
    name: str
    op: str
    weights: int
    density: float  # fraction of weights kept (non-zero)
    entries: int  # relative indices, escapes included
    codebook_size: int
    weight_bits: int  # per stored weight after quantization (P+Q)
    weight_bits_huffman: float  # per stored weight after Huffman (P+Q+H)
    index_bits: int
    index_bits_huffman: float  # per stored weight, escapes' share included
    rate_pq: float  # compression rate of pruning + quantization
    rate_pqh: float  # ... plus Huffman coding
    original_bytes: int  # the weight in the original model, in its own dtype
    readers: int = 1  # nodes reading the weight; `name` joins theirs with commas

    @property
    def label(self) -> str:
        """The name for a table: the first reader's, and how many more there are."""
        if self.readers == 1:
            return self.name
        return f"{self.name.split(',')[0]} (and {self.readers - 1} more readers)"

    @classmethod
    def from_lower_stats(cls, name: str, s: LayerStats) -> LayerReport:
        k, m, n, stored = s.codebook_size, s.entries, s.weights, s.stored
        weight_bits = max(1, math.ceil(math.log2(k)))
        codebook_bits = s.dtype_bits * k
        pq_bits = stored * weight_bits + m * s.index_bits + codebook_bits
        lengths_bits = 8 * (k + (1 << s.index_bits))
        pqh_bits = 8 * (s.codes_bytes + s.gaps_bytes) + codebook_bits + lengths_bits
        return cls(
            name=name,
            op=s.op,
            weights=n,
            density=s.nonzeros / max(n, 1),
            entries=m,
            codebook_size=k,
            weight_bits=weight_bits,
            weight_bits_huffman=8 * s.codes_bytes / max(stored, 1),
            index_bits=s.index_bits,
            index_bits_huffman=8 * s.gaps_bytes / max(stored, 1),
            rate_pq=s.dtype_bits * n / pq_bits,
            rate_pqh=s.dtype_bits * n / pqh_bits,
            original_bytes=s.dtype_bits * n // 8,
            readers=s.readers,
        )


@dataclasses.dataclass
class Report:
    layers: list[LayerReport]
    passes: list[PassRecord]
    original_bytes: int
    compressed_bytes: int | None = None  # real files; None until the model is saved
    files: list[str] = dataclasses.field(default_factory=list)
    # Every weight found (name, kind, dtype, elements, readers), and those at or above the
    # size threshold left uncompressed, each with its reason (dc_onnx.layers.survey).
    weights: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    left: list[Skipped] = dataclasses.field(default_factory=list)
    zipped_bytes: int | None = None  # the portable target: the files in a deflated .zip
    # "budget": settings chosen by the allocation and the budget enforced; "budget targets":
    # chosen by it, then retrained (measured only); "manual": the user's settings
    mode: str = "manual"
    max_error: float | None = None  # the output-error budget
    error: dict[str, Any] | None = None  # measured on the compiled model (OutputError json)
    calibration: dict[str, Any] | None = None  # what the error was measured on
    kept_dense: list[str] = dataclasses.field(default_factory=list)
    # Weights the budget stored as float16 instead of coding them (passes/half.py).
    stored_float16: list[str] = dataclasses.field(default_factory=list)
    # Weight -> why the budget's safety net kept it exact (dc_onnx/budget/safety.py).
    kept_exact: dict[str, str] = dataclasses.field(default_factory=dict)
    # Layers whose rounding compensated errors through their calibration inputs
    # (dc_onnx.compensate), as the cluster pass reports them.
    compensated: list[str] = dataclasses.field(default_factory=list)

    def set_error(self, error: Any, max_error: float | None, calibration: dict[str, Any]) -> None:
        """`max_error` None: measured, with no budget to hold it to."""
        self.error, self.max_error, self.calibration = error.to_json(), max_error, calibration

    @property
    def within_budget(self) -> bool | None:
        """None when the error was not measured."""
        if self.error is None or self.max_error is None:
            return None
        return bool(self.error["relative_l2"] <= self.max_error)

    @classmethod
    def from_records(
        cls, records: Sequence[PassRecord], lowered: LowerStats, original_bytes: int
    ) -> Report:
        """The report of a run whose lowering produced `lowered` (see pipeline.stats_of)."""
        layers = [LayerReport.from_lower_stats(name, s) for name, s in lowered.layers.items()]
        found = stats_of(records, CanonicalizeStats)
        weights = [] if found is None else found.survey.weights
        left = ([] if found is None else found.survey.left) + lowered.left
        compensated = [
            name
            for record in records
            if record.name == "cluster" and isinstance(record.stats, dict)
            for name, layer in record.stats.get("layers", {}).items()
            if layer.get("compensated")
        ]
        return cls(
            layers, list(records), original_bytes, weights=weights, left=left,
            compensated=compensated,
        )  # fmt: skip

    @property
    def ratio(self) -> float | None:
        if not self.compressed_bytes:
            return None
        return self.original_bytes / self.compressed_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "original_bytes": self.original_bytes,
            "compressed_bytes": self.compressed_bytes,
            "ratio": self.ratio,
            "files": self.files,
            "zipped_bytes": self.zipped_bytes,
            "mode": self.mode,
            "max_error": self.max_error,
            "error": self.error,
            "within_budget": self.within_budget,
            "calibration": self.calibration,
            "kept_dense": self.kept_dense,
            "stored_float16": self.stored_float16,
            "kept_exact": self.kept_exact,
            "compensated": self.compensated,
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "passes": [record.to_json() for record in self.passes],
            "weights": self.weights,
            "left_uncompressed": [dataclasses.asdict(s) for s in self.left],
        }

    def format_table(self) -> str:
        head = (
            "layer", "op", "weights", "density", "w bits", "w bits H", "idx bits",
            "idx bits H", "rate P+Q", "rate P+Q+H",
        )  # fmt: skip
        rows = [head]
        for r in self.layers:
            rows.append((
                r.label, r.op, f"{r.weights:,}", f"{100 * r.density:.1f}%", str(r.weight_bits),
                f"{r.weight_bits_huffman:.2f}", str(r.index_bits), f"{r.index_bits_huffman:.2f}",
                f"{r.rate_pq:.1f}x", f"{r.rate_pqh:.1f}x",
            ))  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        # Names left-aligned, figures right-aligned.
        align = [str.ljust, str.ljust] + [str.rjust] * (len(head) - 2)
        lines = [
            "  ".join(a(c, w) for a, c, w in zip(align, row, widths, strict=True)) for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        kinds: dict[str, int] = {}
        for w in self.weights:
            kinds[w["kind"]] = kinds.get(w["kind"], 0) + 1
        if kinds:
            lines.append(f"weights:    {', '.join(f'{n} {kind}' for kind, n in kinds.items())}")
        for s in self.left:
            lines.append(f"left as is: {s.name} ({s.dtype}, {s.elements:,}): {s.reason}")
        lines.append(f"original:   {self.original_bytes:>12,} bytes")
        if self.compressed_bytes is not None:
            lines.append(
                f"compressed: {self.compressed_bytes:>12,} bytes  ({' + '.join(self.files)})"
            )
            lines.append(f"ratio:      {self.ratio:>12.1f}x")
        if self.zipped_bytes is not None:
            zipped = self.original_bytes / self.zipped_bytes
            lines.append(f"zipped:     {self.zipped_bytes:>12,} bytes  ({zipped:.1f}x)")
            lines.append("portable:   codes and gaps are plain bytes (the H columns), not Huffman")
        if self.kept_dense:
            lines.append(f"left dense: {', '.join(self.kept_dense)}")
        if self.stored_float16:
            lines.append(
                f"float16:    {', '.join(self.stored_float16)} (8-bit codes would cost more "
                "error than the budget allows)"
            )
        if self.kept_exact:
            lines.append(
                f"kept exact: {', '.join(self.kept_exact)} (the safety net: the compiled model "
                "measured over budget with them compressed)"
            )
        if self.compensated:
            lines.append(
                f"compensated: {len(self.compensated)} of {len(self.layers)} layers rounded to "
                "cancel errors on their calibration inputs (--compensate)"
            )
        lines.extend(self._error_lines())
        seconds = sum(p.seconds for p in self.passes)
        timing = ", ".join(f"{p.name} {p.seconds:.2f}s" for p in self.passes)
        lines.append(f"passes:     {seconds:.2f} s ({timing})")
        return "\n".join(lines)

    def _error_lines(self) -> list[str]:
        if self.error is None:
            return ["output error: not measured"]
        top1 = self.error.get("top1_agreement")
        agreement = "" if top1 is None else f", top-1 agreement {100 * top1:.2f}%"
        if self.max_error is None:
            verdict = f"{self.mode} mode, no --max-error given"
        else:
            within = "within" if self.within_budget else "OVER"
            verdict = f"{within} the budget {100 * self.max_error:g}%, {self.mode} mode"
        used = self.calibration or {}
        calibration = f"{used.get('description', '')} ({used.get('samples')} samples)"
        floor = used.get("rounding_floor")
        if floor is not None and floor >= 1e-4:  # shown where it is more than float noise
            calibration += f"; {100 * floor:.3g}% from reordering the float arithmetic alone"
        return [
            f"output error: {100 * self.error['relative_l2']:.3f}% relative L2, worst output"
            f"{agreement} ({verdict})",
            f"calibration: {calibration}",
        ]


def zip_bytes(paths: Sequence[Path]) -> int:
    """Size of a .zip (deflate, level 9) holding the files: what a download would move."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in paths:
            archive.write(path, path.name)
    return buffer.getbuffer().nbytes
