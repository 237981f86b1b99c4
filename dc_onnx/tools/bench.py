"""`dc-onnx bench`: latency, size, memory and output error of an original model against its
compiled form and, with `--peers`, against ONNX Runtime's own compressed forms of the same
model (`dc_onnx.tools.peers`), all in ONNX Runtime in one process with the same threads.

Method. With `--peers`, ORT's quantizers first write their forms to a temporary directory,
in a child process. A throw-away session on a one-node model comes next, so that ORT's
one-time set-up (and loading the custom-op library) is charged to no form. Then the
sessions are created, smallest expected first (compiled, 4-bit, int8, original): each
session's memory is the growth of this process's resident set (RSS) across its creation,
and creating the small sessions first keeps them from reusing heap that a large dense
session freed (which would flatter them).

Isolation. Every session has intra-op and inter-op thread spinning off
(`session.intra_op.allow_spinning` = "0"): otherwise a pool keeps spinning on its cores
after its Run returns and takes them from the next session's threads, which made the
alternating runs wrong at 2 or more threads. Runs alternate between the forms after a
warm-up, with a different form first in each round, so slow drifts in a shared machine's
load hit all alike; medians and 90th percentiles are per batch size.

Caches. In each round every form runs twice in a row. The second Run is the one timed for
its latency (median, p90, speedup): it finds the caches as a loop of that form's own Runs
leaves them, which is what a program serving that model sees, and the same for every
form. The first is reported apart ("after others"): it follows another form's Run, often
a much larger one that streamed its weights through the caches, and pays a fixed cost for
what that evicted. Measured with a 64 MB dense layer before a 384x384 one: 0.171 ms
against 0.030 ms in a row (docs/benchmarks.md, "What the previous form's Run costs the
next"); a cost that weighs most on the fastest form, so timing those Runs alone had
understated the small forms' speedups.

Memory during Run: the peak RSS growth in the first (untimed) warm-up run of each form at
each batch size, which includes the growth of ORT's arena and any scratch space, and in
the last warm-up run, where only what a Run allocates anew each time shows (a kernel that
keeps its scratch space shows about 0). `dc_onnx.tools.memory` says how the peak is read.
With `footprint`, each form is also measured alone in a child process
(`dc_onnx.tools.footprint`): its resident memory after session creation and its peak
during a first Run at the first batch size, both above that process's baseline, so forms
compare without sharing a heap or an arena.
Output error comes from the first warm-up run. The error of a form is the relative L2
distance of its outputs to the original's on the same random inputs, worst output and
batch.

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
from collections.abc import Collection, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dc_onnx.budget.calibration import integer_reads, padding_masks
from dc_onnx.errors import InputError
from dc_onnx.io import load_model
from dc_onnx.runtime import open_session
from dc_onnx.tools import peers as peer_forms
from dc_onnx.tools.bench_sessions import bench_session_options, warm_up_ort
from dc_onnx.tools.footprint import Footprint, footprint_in_child
from dc_onnx.tools.memory import PeakMeter, rss_bytes
from dc_onnx.tools.verify import random_inputs

DECODE_STATS_ENV = "DC_ONNX_DECODE_STATS"
ORIGINAL, COMPILED = "original", "compiled"
ISOLATION = (
    "one process, forms alternating, each run twice in a row and timed on the second "
    "(the first: 'after others'); thread spinning off in every session "
    "(session.intra_op.allow_spinning=0, session.inter_op.allow_spinning=0)"
)


@dataclasses.dataclass(frozen=True)
class SessionStats:
    creation_s: float
    rss_bytes: int | None  # growth of the process's resident set while creating it


@dataclasses.dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    # Peak RSS growth above the RSS just before a Run: the form's first Run at this batch
    # (arena growth included), and its last warm-up Run (None with a single warm-up run).
    first_run_peak_bytes: int | None
    run_peak_bytes: int | None
    # Median of the untimed-for-latency Runs that followed another form's (module docstring).
    after_others_ms: float | None = None


@dataclasses.dataclass(frozen=True)
class BatchTiming:
    batch: int
    runs: int  # per form
    forms: dict[str, Timing]  # by form name; forms that failed to run are missing

    def speedup(self, name: str) -> float:
        """Original median over the form's median: above 1, the form is faster."""
        return self.forms[ORIGINAL].median_ms / self.forms[name].median_ms


@dataclasses.dataclass(frozen=True)
class Form:
    """One model being compared: the original, the compiled one, or one of ORT's peers."""

    name: str
    path: str | None  # None for the peers: their temporary directory is gone
    bytes: int | None = None  # the model file and every external-data file it names
    session: SessionStats | None = None
    rel_l2_error: float | None = None  # worst output and batch, against the original
    reason: str | None = None  # why it was not measured (then only name, path, note)
    note: str | None = None
    footprint: Footprint | str | None = None  # alone in a child process, or why not


@dataclasses.dataclass(frozen=True)
class DecodeStats:
    layers: int
    symbols: int
    seconds: float
    isa: str | None = None  # the kernel path the library chose (DC_ONNX_ISA lowers it)

    @property
    def mb_per_s(self) -> float:
        """Decoded symbols (one byte each) per second, in MB/s, on one core."""
        return self.symbols / self.seconds / 1e6 if self.seconds > 0 else float("inf")


WALL_CLOCK = "wall clock (time.perf_counter)"
# With one intra-op thread ORT runs every node on the calling thread, so that thread's CPU
# time is the run's compute time, without the time spent waiting for a core: on a shared
# machine it stays comparable when the wall clock does not.
CPU_CLOCK = "CPU time of the calling thread (time.thread_time; --threads 1 only)"


@dataclasses.dataclass(frozen=True)
class BenchResult:
    threads: int
    load_average: tuple[float, float, float] | None
    isolation: str
    memory_method: str
    forms: list[Form]
    batches: list[BatchTiming]
    decode: DecodeStats | None
    clock: str = WALL_CLOCK

    def form(self, name: str) -> Form:
        return next(f for f in self.forms if f.name == name)

    def size_ratio(self, name: str) -> float | None:
        """Original bytes over the form's bytes: how many times smaller it is."""
        dense, form = self.form(ORIGINAL).bytes, self.form(name).bytes
        return dense / form if dense and form else None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for form, row in zip(self.forms, data["forms"], strict=True):
            row["size_ratio"] = self.size_ratio(form.name)
        for timing, row in zip(self.batches, data["batches"], strict=True):
            for name, form_row in row["forms"].items():
                form_row["speedup"] = timing.speedup(name)
        if self.decode is not None:
            data["decode"]["mb_per_s"] = self.decode.mb_per_s
        return data

    def format_table(self) -> str:
        lines = [
            f"threads {self.threads}" + _load_text(self.load_average),
            f"isolation: {self.isolation}",
            f"clock: {self.clock}",
            f"peak RSS during Run: {self.memory_method}",
            f"{'form':<9} {'bytes':>12} {'smaller':>8} {'session s':>9} {'RSS MiB':>8} "
            f"{'rel L2 err':>10}",
        ]
        for f in self.forms:
            if f.reason is not None:
                lines.append(f"{f.name:<9} not measured: {f.reason}")
                continue
            ratio = self.size_ratio(f.name)
            creation = None if f.session is None else f.session.creation_s
            rss = None if f.session is None else f.session.rss_bytes
            lines.append(
                f"{f.name:<9} {_num(f.bytes, '{:,}'):>12} {_num(ratio, '{:.2f}x'):>8} "
                f"{_num(creation, '{:.3f}'):>9} {_mib(rss):>8} "
                f"{_num(f.rel_l2_error, '{:.2e}'):>10}"
            )
        notes: dict[str, list[str]] = {}
        for f in self.forms:
            if f.note and f.reason is None:
                notes.setdefault(f.note, []).append(f.name)
        lines.extend(f"{', '.join(names)}: {note}" for note, names in notes.items())
        if self.decode is not None:
            lines.append(
                f"huffman decode: {self.decode.symbols:,} symbols in "
                f"{self.decode.seconds * 1e3:.1f} ms over {self.decode.layers} layers, "
                f"{self.decode.mb_per_s:.0f} MB/s per core"
            )
            if self.decode.isa is not None:
                forced = os.environ.get("DC_ONNX_ISA")
                lines.append(
                    f"kernel path: {self.decode.isa}"
                    + (f" (DC_ONNX_ISA={forced})" if forced else " (the CPU's widest)")
                )
        lines.extend(self._footprint_lines())
        lines.append(
            f"{'batch':>5} {'runs':>5} {'form':<9} {'median ms':>10} {'p90 ms':>9} "
            f"{'speedup':>8} {'after others':>12} {'1st Run MiB':>11} {'Run MiB':>8}"
        )
        for t in self.batches:
            for name, timing in t.forms.items():
                lines.append(
                    f"{t.batch:>5} {t.runs:>5} {name:<9} {timing.median_ms:>10.3f} "
                    f"{timing.p90_ms:>9.3f} {t.speedup(name):>7.2f}x "
                    f"{_num(timing.after_others_ms, '{:.3f}'):>12} "
                    f"{_mib(timing.first_run_peak_bytes):>11} {_mib(timing.run_peak_bytes):>8}"
                )
        return "\n".join(lines)

    def _footprint_lines(self) -> list[str]:
        measured = [f for f in self.forms if f.footprint is not None]
        done = [f.footprint for f in measured if isinstance(f.footprint, Footprint)]
        if not measured:
            return []
        lines = [
            "memory of each form alone in a child process, above its baseline (ORT set up),"
            + (f" batch {done[0].batch}, peak: {done[0].method}" if done else ""),
            f"{'form':<9} {'session MiB':>11} {'peak Run MiB':>12}",
        ]
        for f in measured:
            if isinstance(f.footprint, str):
                lines.append(f"{f.name:<9} not measured: {f.footprint}")
                continue
            assert f.footprint is not None
            lines.append(
                f"{f.name:<9} {_mib(f.footprint.session_bytes):>11} "
                f"{_mib(f.footprint.peak_bytes):>12}"
            )
        return lines


def _num(value: float | int | None, spec: str) -> str:
    return "n/a" if value is None else spec.format(value)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def _load_text(load: tuple[float, float, float] | None) -> str:
    return "" if load is None else f", load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def _create(path: str | os.PathLike[str], threads: int) -> tuple[Any, SessionStats]:
    options = bench_session_options(threads)
    before = rss_bytes()
    start = time.perf_counter()
    session = open_session(path, options)
    elapsed = time.perf_counter() - start
    after = rss_bytes()
    rss = None if before is None or after is None else after - before
    return session, SessionStats(elapsed, rss)


def read_decode_stats(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The library's decode statistics in `path`, one dict per decoded layer (none when
    the file does not exist): layer, rows, cols, nonzeros, symbols, decode_ns, isa."""
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
            layers[0].get("isa"),
        )
    return session, stats, decode


def model_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a model: its file plus each external-data file it names once."""
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    locations = set()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            locations.add(entries.get("location", ""))
    base = Path(path).parent
    return Path(path).stat().st_size + sum((base / loc).stat().st_size for loc in locations if loc)


def _time_one(session: Any, feeds: dict[str, np.ndarray], clock: Any) -> float:
    start = clock()
    session.run(None, feeds)
    return (clock() - start) * 1e3


def _rel_l2(expected: list[Any], actual: list[Any]) -> float:
    """Worst relative L2 distance over the outputs (absolute where an output is all 0)."""
    worst = 0.0
    for a, b in zip(expected, actual, strict=True):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a64.shape != b64.shape:
            return float("inf")
        norm = float(np.linalg.norm(a64))
        dist = float(np.linalg.norm(a64 - b64))
        worst = max(worst, dist / norm if norm else dist)
    return worst


@dataclasses.dataclass
class _Live:
    """A form being measured: its session and what has been gathered so far."""

    form: Form
    session: Any
    error: float = 0.0
    failed: str | None = None


def bench(
    original: str | os.PathLike[str],
    compiled: str | os.PathLike[str],
    batches: Sequence[int] = (1, 8, 64),
    threads: int = 1,
    warmup: int = 2,
    repeat: int = 20,
    max_seconds: float = 20.0,
    seed: int = 0,
    peers: bool = False,
    cpu_time: bool = False,
    footprint: bool = False,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> BenchResult:
    """Times the models on the same random inputs, alternating runs, per batch size.

    Each batch size runs `warmup` untimed runs per form (at least one: it measures memory
    and error), then up to `repeat` rounds, stopping early (after at least 3) once
    `max_seconds` have passed; in a round each form runs twice in a row, and the second
    Run gives its latency (the first: `Timing.after_others_ms`). With `peers`, ORT's int8
    and 4-bit forms of `original` are measured as well; a peer that cannot be built or run
    is a form with a reason.
    With `cpu_time`, each run is timed by the calling thread's CPU time (CPU_CLOCK).
    With `footprint`, each form's memory is also measured alone (dc_onnx.tools.footprint).
    `input_shapes` gives the symbolic dims of the random inputs other than the batch.
    """
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    if cpu_time and threads != 1:
        raise InputError("--cpu-time needs --threads 1 (other threads' work is not counted)")
    if not batches or min(batches) < 1:
        raise InputError(f"batch sizes must be >= 1, got {list(batches)}")
    for path in (original, compiled):
        if not Path(path).is_file():
            raise InputError(f"{path}: no such file")
    with tempfile.TemporaryDirectory(prefix="dc-onnx-peers-") as tmp:
        builds = peer_forms.build_peers_in_child(original, tmp) if peers else []
        clock = time.thread_time if cpu_time else time.perf_counter
        result = _bench(
            original, compiled, builds, batches, threads, warmup, repeat, max_seconds, seed,
            clock, input_shapes or {},
        )  # fmt: skip
        if footprint:  # while the peers' files still exist
            paths = {ORIGINAL: original, COMPILED: compiled}
            paths |= {b.name: b.path for b in builds if b.path is not None}
            forms = [
                f if f.reason is not None else dataclasses.replace(
                    f, footprint=footprint_in_child(
                        paths[f.name], batches[0], threads, seed, input_shapes
                    )
                )
                for f in result.forms
            ]  # fmt: skip
            result = dataclasses.replace(result, forms=forms)
        return dataclasses.replace(result, clock=CPU_CLOCK if cpu_time else WALL_CLOCK)


def _bench(
    original: str | os.PathLike[str],
    compiled: str | os.PathLike[str],
    builds: list[peer_forms.PeerBuild],
    batches: Sequence[int],
    threads: int,
    warmup: int,
    repeat: int,
    max_seconds: float,
    seed: int,
    clock: Any,
    shapes: Mapping[str, Sequence[int]],
) -> BenchResult:
    # Integer inputs drawn as compile and verify draw them; read before any session exists,
    # so the graph held meanwhile is not counted in a session's memory.
    graph = load_model(Path(original)).graph
    integers, masks = integer_reads(graph), padding_masks(graph)
    warm_up_ort(threads)
    comp_session, comp_stats, decode = _create_compiled(compiled, threads)
    live = [_Live(Form(COMPILED, os.fspath(compiled), session=comp_stats), comp_session)]
    skipped = []
    for build in sorted(builds, key=lambda b: b.name != peer_forms.FOUR_BIT):
        if build.path is None:
            skipped.append(Form(build.name, None, reason=build.reason, note=build.note))
            continue
        try:
            session, stats = _create(build.path, threads)
        except InputError as e:
            reason = peer_forms.one_line(e).removeprefix(f"{build.path}: ")  # a temporary path
            skipped.append(Form(build.name, None, reason=reason, note=build.note))
            continue
        live.append(_Live(Form(build.name, build.path, session=stats, note=build.note), session))
    orig_session, orig_stats = _create(original, threads)
    live.insert(0, _Live(Form(ORIGINAL, os.fspath(original), session=orig_stats), orig_session))
    order = [ORIGINAL, COMPILED, *peer_forms.PEERS]
    live.sort(key=lambda item: order.index(item.form.name))  # rows in a fixed order
    names = [i.name for i in orig_session.get_inputs()]
    if names != [i.name for i in comp_session.get_inputs()]:
        raise InputError("the two models have different inputs")
    meter = PeakMeter()
    timings = [
        _time_batch(
            live, batch, meter, warmup, repeat, max_seconds, seed, clock, shapes, integers, masks
        )
        for batch in batches
    ]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    forms = []
    for item in live:
        path = item.form.path or ""
        kept = path if item.form.name in (ORIGINAL, COMPILED) else None  # peers: removed
        if item.failed is not None:
            forms.append(
                dataclasses.replace(item.form, path=kept, reason=item.failed, session=None)
            )
            continue
        forms.append(
            dataclasses.replace(
                item.form, path=kept, bytes=model_bytes(path), rel_l2_error=item.error
            )
        )
    forms.extend(skipped)
    forms.sort(key=lambda f: order.index(f.name))
    return BenchResult(threads, load, ISOLATION, meter.method, forms, timings, decode)


def _time_batch(
    live: list[_Live],
    batch: int,
    meter: PeakMeter,
    warmup: int,
    repeat: int,
    max_seconds: float,
    seed: int,
    clock: Any,
    shapes: Mapping[str, Sequence[int]],
    integers: Mapping[str, tuple[np.ndarray, str]],
    masks: Collection[str],
) -> BatchTiming:
    feeds = random_inputs(live[0].session, batch, seed, shapes, integers, masks)
    peaks: dict[str, tuple[int | None, int | None]] = {}
    reference = None
    for item in live:
        if item.failed is not None:
            continue
        try:
            run = partial(item.session.run, None, feeds)
            outputs, first = meter.measure(run)
            steady = None
            for _ in range(warmup - 1):
                _, steady = meter.measure(run)
            peaks[item.form.name] = (first, steady)
        except Exception as e:  # ORT's own exception types; the form becomes a row with why
            if item.form.name in (ORIGINAL, COMPILED):
                raise InputError(
                    f"{item.form.path}: running it failed: {peer_forms.one_line(e)}"
                ) from None
            item.failed = f"ONNX Runtime cannot run it at batch {batch}: {peer_forms.one_line(e)}"
            continue
        if reference is None:
            reference = outputs
        item.error = max(item.error, _rel_l2(reference, outputs))
    running = [item for item in live if item.failed is None]
    times: dict[str, list[float]] = {item.form.name: [] for item in running}
    after_others: dict[str, list[float]] = {item.form.name: [] for item in running}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeat and (rounds < 3 or time.perf_counter() - start < max_seconds):
        # A different form goes first each round, so slow drifts hit all alike; each form
        # runs twice in a row and the second Run is its latency (module docstring).
        shift = rounds % len(running)
        for item in running[shift:] + running[:shift]:
            after_others[item.form.name].append(_time_one(item.session, feeds, clock))
            times[item.form.name].append(_time_one(item.session, feeds, clock))
        rounds += 1
    return BatchTiming(
        batch,
        rounds,
        {
            name: Timing(
                float(np.median(ms)),
                float(np.percentile(ms, 90)),
                *peaks[name],
                after_others_ms=float(np.median(after_others[name])),
            )
            for name, ms in times.items()
        },
    )
