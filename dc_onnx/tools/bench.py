"""`dc-onnx bench`: latency, session creation and memory of an original model against its
compiled form, both in ONNX Runtime in one process with the same thread count.

Method. A throw-away session on a one-node model comes first, so that ORT's one-time
set-up (and loading the custom-op library) is not charged to either model. Then the
compiled session is created, then the original: each session's memory is the growth of this
process's resident set (RSS) across its creation, and creating the small session first
keeps it from reusing heap that the large dense session freed (which would flatter it).
Runs alternate between the two models after a warm-up, so slow drifts in a shared
machine's load hit both alike; medians and 90th percentiles are per batch size.

The custom-op library reports how fast it Huffman-decoded each layer when the environment
variable DC_ONNX_DECODE_STATS names a file (one JSON line per layer, appended; format in
runtime_ops/README.md); bench points it to a temporary file while the compiled session is
created, then reads the file back and sums the lines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dc_onnx.errors import InputError
from dc_onnx.runtime import _onnxruntime, open_session, session_options
from dc_onnx.tools.verify import random_inputs

DECODE_STATS_ENV = "DC_ONNX_DECODE_STATS"


@dataclasses.dataclass(frozen=True)
class SessionStats:
    path: str
    creation_s: float
    rss_bytes: int | None  # growth of the process's resident set while creating it


@dataclasses.dataclass(frozen=True)
class BatchTiming:
    batch: int
    runs: int  # per model
    original_median_ms: float
    original_p90_ms: float
    compiled_median_ms: float
    compiled_p90_ms: float

    @property
    def speedup(self) -> float:
        """Original median over compiled median: above 1, the compiled model is faster."""
        return self.original_median_ms / self.compiled_median_ms


@dataclasses.dataclass(frozen=True)
class DecodeStats:
    layers: int
    symbols: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        """Decoded symbols (one byte each) per second, in MB/s, on one core."""
        return self.symbols / self.seconds / 1e6 if self.seconds > 0 else float("inf")


@dataclasses.dataclass(frozen=True)
class BenchResult:
    threads: int
    load_average: tuple[float, float, float] | None
    original: SessionStats
    compiled: SessionStats
    batches: list[BatchTiming]
    decode: DecodeStats | None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for timing, row in zip(self.batches, data["batches"], strict=True):
            row["speedup"] = timing.speedup
        if self.decode is not None:
            data["decode"]["mb_per_s"] = self.decode.mb_per_s
        return data

    def format_table(self) -> str:
        lines = [f"threads {self.threads}" + _load_text(self.load_average)]
        for label, s in (("original", self.original), ("compiled", self.compiled)):
            rss = "n/a" if s.rss_bytes is None else f"{s.rss_bytes / 2**20:.1f} MiB"
            lines.append(f"{label}: session created in {s.creation_s:.3f} s, RSS +{rss}")
        if self.original.rss_bytes and self.compiled.rss_bytes is not None:
            lines.append(
                f"memory ratio (compiled/original): "
                f"{self.compiled.rss_bytes / self.original.rss_bytes:.3f}"
            )
        if self.decode is not None:
            lines.append(
                f"huffman decode: {self.decode.symbols:,} symbols in "
                f"{self.decode.seconds * 1e3:.1f} ms over {self.decode.layers} layers, "
                f"{self.decode.mb_per_s:.0f} MB/s per core"
            )
        lines.append(
            f"{'batch':>5} {'runs':>5} {'orig med ms':>12} {'orig p90':>9} "
            f"{'comp med ms':>12} {'comp p90':>9} {'speedup':>8}"
        )
        for t in self.batches:
            lines.append(
                f"{t.batch:>5} {t.runs:>5} {t.original_median_ms:>12.3f} "
                f"{t.original_p90_ms:>9.3f} {t.compiled_median_ms:>12.3f} "
                f"{t.compiled_p90_ms:>9.3f} {t.speedup:>7.2f}x"
            )
        return "\n".join(lines)


def _load_text(load: tuple[float, float, float] | None) -> str:
    return "" if load is None else f", load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def _rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc); None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _create(path: str | os.PathLike[str], threads: int) -> tuple[Any, SessionStats]:
    options = _onnxruntime().SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    before = _rss_bytes()
    start = time.perf_counter()
    session = open_session(path, options)
    elapsed = time.perf_counter() - start
    after = _rss_bytes()
    rss = None if before is None or after is None else after - before
    return session, SessionStats(os.fspath(path), elapsed, rss)


def read_decode_stats(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The library's decode statistics in `path`, one dict per decoded layer (none when
    the file does not exist): layer, rows, cols, nonzeros, symbols, decode_ns."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _create_compiled(
    path: str | os.PathLike[str], threads: int
) -> tuple[Any, SessionStats, DecodeStats | None]:
    """Creates the compiled session with the library's decode statistics on, and sums them."""
    previous = os.environ.get(DECODE_STATS_ENV)
    with tempfile.TemporaryDirectory() as tmp:
        stats_file = Path(tmp) / "decode_stats.jsonl"
        os.environ[DECODE_STATS_ENV] = str(stats_file)
        try:
            session, stats = _create(path, threads)
        finally:
            if previous is None:
                del os.environ[DECODE_STATS_ENV]
            else:
                os.environ[DECODE_STATS_ENV] = previous
        layers = read_decode_stats(stats_file)
    decode = None
    if layers:
        decode = DecodeStats(
            len(layers),
            sum(int(r["symbols"]) for r in layers),
            sum(int(r["decode_ns"]) for r in layers) / 1e9,
        )
    return session, stats, decode


def _warm_up_ort(threads: int) -> None:
    """Creates and runs a session on a one-node model (ORT's global set-up happens here)."""
    from onnx import TensorProto, helper

    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "warm_up",
        [info("x", TensorProto.FLOAT, [1])],
        [info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = _onnxruntime().SessionOptions()
    options.intra_op_num_threads = threads
    session = _onnxruntime().InferenceSession(
        model.SerializeToString(), session_options(options), providers=["CPUExecutionProvider"]
    )
    session.run(None, {"x": np.zeros(1, np.float32)})


def _time_one(session: Any, feeds: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    session.run(None, feeds)
    return (time.perf_counter() - start) * 1e3


def bench(
    original: str | os.PathLike[str],
    compiled: str | os.PathLike[str],
    batches: Sequence[int] = (1, 8, 64),
    threads: int = 1,
    warmup: int = 2,
    repeat: int = 20,
    max_seconds: float = 20.0,
    seed: int = 0,
) -> BenchResult:
    """Times both models on the same random inputs, alternating runs, per batch size.

    Each batch size runs `warmup` untimed runs per model, then up to `repeat` timed runs
    per model, stopping early (after at least 3) once `max_seconds` have passed.
    """
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    if not batches or min(batches) < 1:
        raise InputError(f"batch sizes must be >= 1, got {list(batches)}")
    _warm_up_ort(threads)
    comp_session, comp_stats, decode = _create_compiled(compiled, threads)
    orig_session, orig_stats = _create(original, threads)
    names = [i.name for i in orig_session.get_inputs()]
    if names != [i.name for i in comp_session.get_inputs()]:
        raise InputError("the two models have different inputs")
    timings = []
    for batch in batches:
        feeds = random_inputs(orig_session, batch, seed)
        for _ in range(warmup):
            orig_session.run(None, feeds)
            comp_session.run(None, feeds)
        orig_ms: list[float] = []
        comp_ms: list[float] = []
        start = time.perf_counter()
        while len(orig_ms) < repeat and (
            len(orig_ms) < 3 or time.perf_counter() - start < max_seconds
        ):
            # Alternate which model goes first, so neither always runs on a warmer cache.
            if len(orig_ms) % 2 == 0:
                orig_ms.append(_time_one(orig_session, feeds))
                comp_ms.append(_time_one(comp_session, feeds))
            else:
                comp_ms.append(_time_one(comp_session, feeds))
                orig_ms.append(_time_one(orig_session, feeds))
        timings.append(
            BatchTiming(
                batch,
                len(orig_ms),
                float(np.median(orig_ms)),
                float(np.percentile(orig_ms, 90)),
                float(np.median(comp_ms)),
                float(np.percentile(comp_ms, 90)),
            )
        )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return BenchResult(threads, load, orig_stats, comp_stats, timings, decode)
