"""The `dc-onnx` command line: parses arguments and calls the library; nothing more."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dc_onnx.budget.plot import plot_sensitivity
from dc_onnx.cli_args import (
    add_options,
    input_shapes,
    options_from_args,
    positive_float,
    positive_int,
    positive_ints,
)
from dc_onnx.cli_deploy import add_commands as add_deploy_commands
from dc_onnx.cli_deploy import add_compile_plot, check_compile_plot, plot_compiled
from dc_onnx.compiler import compile, input_files
from dc_onnx.data import read_npz
from dc_onnx.errors import DcOnnxError
from dc_onnx.options import CalibrationOptions, CompileOptions
from dc_onnx.paths import check_report
from dc_onnx.recipes import RECIPES
from dc_onnx.tools.analyze import analyze_model
from dc_onnx.tools.bench import bench
from dc_onnx.tools.evaluate import evaluate
from dc_onnx.tools.verify import verify
from dc_onnx.writer import write_file

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_OVER_BUDGET = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dc-onnx", description="Deep Compression for ONNX models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="compress a model")
    c.add_argument("input", type=Path, help="model to compress (.onnx)")
    c.add_argument("-o", "--output", type=Path, help="compiled model (default: IN.dc.onnx)")
    add_options(c, CompileOptions, choices={"recipe": list(RECIPES)})
    c.add_argument("--report", type=Path, help="write the report as JSON")
    c.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_compile_plot(c)  # --plot DIR (dc_onnx/cli_deploy.py)
    c.set_defaults(run=_compile, parser=c)

    a = sub.add_parser("analyze", help="per-layer sensitivity curves (error vs sparsity, bits)")
    a.add_argument("input", type=Path, help="model to analyse (.onnx)")
    add_options(a, CalibrationOptions)
    a.add_argument("--plot", type=Path, metavar="PNG", help="draw the curves (needs [plot])")
    a.add_argument("--json", action="store_true", help="print the analysis as JSON")
    a.add_argument(
        "--exact",
        action="store_true",
        help="measure every point of every curve (default: two per weight, the rest predicted)",
    )
    a.add_argument("--quiet", action="store_true", help="no progress lines")
    a.set_defaults(run=_analyze)

    v = sub.add_parser("verify", help="compare a compiled model with its original")
    v.add_argument("original", type=Path)
    v.add_argument("compiled", type=Path)
    v.add_argument("--inputs", type=Path, help=".npz with one array per input (+ `labels`)")
    v.add_argument(
        "--batch", type=positive_int, default=8, help="batch of random inputs (default 8)"
    )
    v.add_argument("--seed", type=int, default=0)
    _input_shape_argument(v)
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(run=_verify)

    b = sub.add_parser("bench", help="time a compiled model against its original in ORT")
    b.add_argument("original", type=Path)
    b.add_argument("compiled", type=Path)
    b.add_argument(
        "--batch", type=positive_ints, default=[1, 8, 64], metavar="B,B,...",
        help="batch sizes of the random inputs (default 1,8,64)",
    )  # fmt: skip
    b.add_argument(
        "--threads", type=positive_int, default=1, help="ORT intra-op threads (default 1)"
    )
    b.add_argument(
        "--repeat", type=positive_int, default=20, help="timed runs per model and batch (20)"
    )
    b.add_argument(
        "--max-seconds", type=positive_float, default=20.0, help="time budget per batch (20)"
    )
    b.add_argument(
        "--peers", action="store_true",
        help="also measure ORT's own int8 (quantize_dynamic) and 4-bit (MatMulNBits) forms",
    )  # fmt: skip
    b.add_argument(
        "--cpu-time", action="store_true",
        help="time runs by the thread's CPU time, not the wall clock (a shared machine; "
        "--threads 1 only)",
    )  # fmt: skip
    b.add_argument(
        "--footprint", action="store_true",
        help="also measure each form's memory alone in a child process: after session "
        "creation, and the peak during a Run at the first batch size",
    )  # fmt: skip
    _input_shape_argument(b)
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.set_defaults(run=_bench)
    e = sub.add_parser("eval", help="top-1 / top-5 accuracy of a model (dense or compiled)")
    e.add_argument("model", type=Path)
    e.add_argument("--data", type=Path, required=True, help=".npz (or directory) with labels")
    e.add_argument("--labels", default="labels", help="key of the labels (default: labels)")
    e.add_argument("--batch", type=positive_int, default=1000, help="batch size (default 1000)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(run=_eval)
    add_deploy_commands(sub)  # inspect, decompress (dc_onnx/cli_deploy.py)
    return parser


def _compile(args: argparse.Namespace) -> int:
    output = args.output or args.input.with_name(args.input.stem + ".dc.onnx")
    try:
        options = options_from_args(args, CompileOptions)
    except ValueError as e:  # a rule across options; single values were checked by argparse
        args.parser.error(str(e))
    check_compile_plot(args)
    if args.report:  # a bad report path fails now, before any output is written
        check_report(args.report, output, input_files(args.input))
    result = compile(args.input, output, options)
    plot_compiled(args, output)
    if args.report:
        write_file(args.report, json.dumps(result.report.to_json(), indent=2) + "\n")
    if not args.quiet:
        print(result.report.format_table())
        print(f"wrote {output}")
    # Budget mode promises the budget; in manual mode only an explicit one is a demand.
    demanded = result.report.mode == "budget" or options.budget.max_error is not None
    if result.report.within_budget is False and demanded:
        return EXIT_OVER_BUDGET
    return EXIT_OK


def _analyze(args: argparse.Namespace) -> int:
    options = options_from_args(args, CalibrationOptions)
    analysis = analyze_model(args.input, options, exact=args.exact)
    if args.plot:
        plot_sensitivity(analysis, args.plot)
    if args.json:
        print(json.dumps(analysis.to_json(), indent=2))
    else:
        print(analysis.format_table())
        if args.plot:
            print(f"wrote {args.plot}")
    return EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    result = evaluate(args.model, args.data, args.labels, args.batch)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return EXIT_OK
    top5 = "" if result.top5 is None else f", top-5 {result.top5:.2%}"
    print(f"{args.model}: {result.samples} samples, top-1 {result.top1:.2%}{top5}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    inputs = read_npz(args.inputs) if args.inputs else None
    result = verify(
        args.original, args.compiled, inputs, batch=args.batch, seed=args.seed,
        input_shapes=args.input_shape,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return EXIT_OK
    print(f"{result.samples} samples")
    for out in result.outputs:
        if not out.numeric:  # strings, sequences: the compile's measure of them
            err = out.max_abs_error
            print(f"{out.name}: " + ("identical" if err == 0 else f"different ({err:.3g})"))
            continue
        agree = (
            "" if out.argmax_agreement is None else f"  argmax agreement {out.argmax_agreement:.2%}"
        )
        print(
            f"{out.name}: max abs error {out.max_abs_error:.3g}, "
            f"max rel error {out.max_rel_error:.3g}{agree}"
        )
    if result.accuracy:
        print(
            f"top-1 accuracy: original {result.accuracy['original']:.2%}, "
            f"compiled {result.accuracy['compiled']:.2%}"
        )
    return EXIT_OK


def _input_shape_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input-shape", type=input_shapes, default={}, metavar="'NAME=D0,D1,... ...'",
        help="dims of the random inputs that the model leaves symbolic, besides the first "
        "(the batch): an image size, a sequence length",
    )  # fmt: skip


def _bench(args: argparse.Namespace) -> int:
    result = bench(
        args.original, args.compiled, args.batch, threads=args.threads, repeat=args.repeat,
        max_seconds=args.max_seconds, peers=args.peers, cpu_time=args.cpu_time,
        footprint=args.footprint, input_shapes=args.input_shape,
    )  # fmt: skip
    print(json.dumps(result.to_json(), indent=2) if args.json else result.format_table())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING, format="dc-onnx: %(message)s", stream=sys.stderr)
    logging.getLogger("dc_onnx").setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        code: int = args.run(args)
        return code
    except DcOnnxError as e:
        print(f"dc-onnx: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # a file that vanished, a full disk, a permission: say which file
        where = f"{e.filename}: " if e.filename else ""
        print(f"dc-onnx: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("dc-onnx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
