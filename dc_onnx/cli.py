"""The `dc-onnx` command line: parses arguments and calls the library; nothing more."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dc_onnx.budget.calibration import parse_input_shapes
from dc_onnx.budget.plot import plot_sensitivity
from dc_onnx.compiler import DEFAULT_MAX_ERROR, DEFAULT_QUALITY, CompileOptions, compile
from dc_onnx.errors import DcOnnxError, InputError
from dc_onnx.recipes import RECIPES
from dc_onnx.tools.analyze import analyze_model
from dc_onnx.tools.bench import bench
from dc_onnx.tools.evaluate import evaluate
from dc_onnx.tools.verify import load_inputs, verify
from dc_onnx.training.trainer import TrainOptions

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_OVER_BUDGET = 0, 1, 2, 3


def _sparsity_map(text: str) -> dict[str, float]:
    """GLOB=S,GLOB=S -> {glob: s}."""
    result = {}
    for item in filter(None, text.split(",")):
        glob, sep, value = item.rpartition("=")
        try:
            result[glob] = float(value)
        except ValueError:
            sep = ""
        if not sep or not glob:
            raise argparse.ArgumentTypeError(f"expected GLOB=SPARSITY, got '{item}'")
    return result


def _bits(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(f"bits must be in 1..8, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dc-onnx", description="Deep Compression for ONNX models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="compress a model")
    c.add_argument("input", type=Path, help="model to compress (.onnx)")
    c.add_argument("-o", "--output", type=Path, help="compiled model (default: IN.dc.onnx)")
    c.add_argument("--sparsity", type=float, help="fraction of weights pruned in every layer")
    c.add_argument(
        "--sparsity-per-layer",
        type=_sparsity_map,
        default={},
        metavar="GLOB=S,...",
        help="per-layer sparsity by glob on node or weight names (first match wins)",
    )
    c.add_argument(
        "--quality", type=float,
        help=f"prune |w| < quality * std(W) where no sparsity is set (manual mode: default "
        f"{DEFAULT_QUALITY}; 0 disables)",
    )  # fmt: skip
    c.add_argument("--bits-conv", type=_bits, help="weight bits, conv (manual mode: 8)")
    c.add_argument("--bits-fc", type=_bits, help="weight bits, fc (manual mode: 5)")
    c.add_argument("--index-bits-conv", type=_bits, help="index bits, conv (manual mode: 8)")
    c.add_argument("--index-bits-fc", type=_bits, help="index bits, fc (manual mode: 5)")
    c.add_argument(
        "--init", choices=["linear", "density", "random"], default="linear",
        help="k-means centroid initialisation (default linear)",
    )  # fmt: skip
    c.add_argument("--simplify", action="store_true", help="run onnx-simplifier first")
    c.add_argument("--single-file", action="store_true", help="embed the streams in the .onnx")
    _add_budget_arguments(c, compile_command=True)
    c.add_argument("--report", type=Path, help="write the report as JSON")
    c.add_argument("--quiet", action="store_true", help="print nothing but errors")
    _add_training_arguments(c)
    c.set_defaults(run=_compile)

    a = sub.add_parser("analyze", help="per-layer sensitivity curves (error vs sparsity, bits)")
    a.add_argument("input", type=Path, help="model to analyse (.onnx)")
    _add_budget_arguments(a, compile_command=False)
    a.add_argument("--plot", type=Path, metavar="PNG", help="draw the curves (needs [plot])")
    a.add_argument("--json", action="store_true", help="print the analysis as JSON")
    a.add_argument("--quiet", action="store_true", help="no progress lines")
    a.set_defaults(run=_analyze)

    v = sub.add_parser("verify", help="compare a compiled model with its original")
    v.add_argument("original", type=Path)
    v.add_argument("compiled", type=Path)
    v.add_argument("--inputs", type=Path, help=".npz with one array per input (+ `labels`)")
    v.add_argument("--batch", type=int, default=8, help="batch of random inputs (default 8)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(run=_verify)

    b = sub.add_parser("bench", help="time a compiled model against its original in ORT")
    b.add_argument("original", type=Path)
    b.add_argument("compiled", type=Path)
    b.add_argument(
        "--batch", type=_batches, default=[1, 8, 64], metavar="B,B,...",
        help="batch sizes of the random inputs (default 1,8,64)",
    )  # fmt: skip
    b.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (default 1)")
    b.add_argument("--repeat", type=int, default=20, help="timed runs per model and batch")
    b.add_argument("--max-seconds", type=float, default=20.0, help="time budget per batch")
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.set_defaults(run=_bench)
    e = sub.add_parser("eval", help="top-1 / top-5 accuracy of a model (dense or compiled)")
    e.add_argument("model", type=Path)
    e.add_argument("--data", type=Path, required=True, help=".npz (or directory) with labels")
    e.add_argument("--labels", default="labels", help="key of the labels (default: labels)")
    e.add_argument("--batch", type=int, default=1000, help="batch size (default 1000)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(run=_eval)
    return parser


def _batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive batch sizes like 1,8,64, got '{text}'")
    return values


def _add_budget_arguments(c: argparse.ArgumentParser, compile_command: bool) -> None:
    g = c.add_argument_group("output-error budget")
    if compile_command:
        g.add_argument(
            "--max-error", type=float,
            help=f"budget: relative L2 error of the worst output against the original on the "
            f"calibration inputs (default {DEFAULT_MAX_ERROR}). Without explicit sparsity or "
            "bits, per-layer settings are chosen to stay within it; given explicitly, a "
            "compiled model over it exits with status 3",
        )  # fmt: skip
    g.add_argument(
        "--calibration", type=Path, metavar="DATA.npz|DIR",
        help="inputs the error is measured on (one array per model input; labels optional);"
        " default: --val or --data if given, else synthesized from the input specs",
    )  # fmt: skip
    g.add_argument(
        "--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
        help="shape of a synthesized input with symbolic dims (repeatable)",
    )  # fmt: skip


def _add_training_arguments(c: argparse.ArgumentParser) -> None:
    t = c.add_argument_group("retraining (needs the 'train' extra)")
    t.add_argument(
        "--recipe", choices=list(RECIPES),
        help="pass list (default: deep-compression with --data, else data-free)",
    )  # fmt: skip
    t.add_argument("--data", type=Path, help="training .npz or directory of .npz shards")
    t.add_argument("--val", type=Path, help="validation .npz: the best epoch is kept")
    t.add_argument("--labels", default="labels", help="key of the labels (default: labels)")
    t.add_argument(
        "--loss", choices=["auto", "cross-entropy", "distill", "distill-mse"], default="auto",
        help="auto: cross-entropy with labels, else distill (the original model's softened "
        "class probabilities as targets); distill-mse matches its raw outputs",
    )  # fmt: skip
    t.add_argument(
        "--temperature", type=float, default=4.0, help="distill: softening temperature (4)"
    )
    t.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    t.add_argument("--prune-rounds", type=int, default=1, help="prune -> retrain cycles (1)")
    t.add_argument("--epochs", type=int, default=2, help="epochs per pruning round (2)")
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate, weights (1e-3)")
    t.add_argument("--centroid-epochs", type=int, default=2, help="epochs, centroids (2)")
    t.add_argument("--centroid-lr", type=float, default=1e-4, help="learning rate, centroids")
    t.add_argument("--batch-size", type=int, default=64, help="(default 64)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="AdamW decoupled decay (0)")
    t.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0)")


def _compile(args: argparse.Namespace) -> int:
    output = args.output or args.input.with_name(args.input.stem + ".dc.onnx")
    options = CompileOptions(
        sparsity=args.sparsity,
        sparsity_per_layer=args.sparsity_per_layer,
        quality=args.quality,
        bits_conv=args.bits_conv,
        bits_fc=args.bits_fc,
        index_bits_conv=args.index_bits_conv,
        index_bits_fc=args.index_bits_fc,
        init=args.init,
        max_error=DEFAULT_MAX_ERROR if args.max_error is None else args.max_error,
        calibration=args.calibration,
        input_shapes=parse_input_shapes(args.input_shape),
        simplify=args.simplify,
        single_file=args.single_file,
        recipe=args.recipe,
        data=args.data,
        val=args.val,
        labels=args.labels,
        prune_rounds=args.prune_rounds,
        retrain=_train_options(args, args.epochs, args.lr),
        retrain_centroids=_train_options(args, args.centroid_epochs, args.centroid_lr),
    )
    result = compile(args.input, output, options)
    if args.report:
        args.report.write_text(json.dumps(result.report.to_json(), indent=2) + "\n")
    if not args.quiet:
        print(result.report.format_table())
        print(f"wrote {output}")
    # The budget mode promises the budget; in manual mode only an explicit one is a demand.
    demanded = result.report.mode == "budget" or args.max_error is not None
    if result.report.within_budget is False and demanded:
        return EXIT_OVER_BUDGET
    return EXIT_OK


def _analyze(args: argparse.Namespace) -> int:
    analysis = analyze_model(args.input, args.calibration, parse_input_shapes(args.input_shape))
    if args.plot:
        plot_sensitivity(analysis, args.plot)
    if args.json:
        print(json.dumps(analysis.to_json(), indent=2))
    else:
        print(analysis.format_table())
        if args.plot:
            print(f"wrote {args.plot}")
    return EXIT_OK


def _train_options(args: argparse.Namespace, epochs: int, lr: float) -> TrainOptions:
    try:
        return TrainOptions(
            epochs=epochs,
            lr=lr,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            loss=args.loss,
            temperature=args.temperature,
            seed=args.seed,
        )
    except ValueError as e:
        raise InputError(str(e)) from None


def _eval(args: argparse.Namespace) -> int:
    result = evaluate(args.model, args.data, args.labels, args.batch)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return EXIT_OK
    top5 = "" if result.top5 is None else f", top-5 {result.top5:.2%}"
    print(f"{args.model}: {result.samples} samples, top-1 {result.top1:.2%}{top5}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    inputs = load_inputs(args.inputs) if args.inputs else None
    result = verify(args.original, args.compiled, inputs, batch=args.batch, seed=args.seed)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return EXIT_OK
    print(f"{result.samples} samples")
    for out in result.outputs:
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


def _bench(args: argparse.Namespace) -> int:
    result = bench(
        args.original, args.compiled, args.batch, threads=args.threads, repeat=args.repeat,
        max_seconds=args.max_seconds,
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
    except KeyboardInterrupt:
        print("dc-onnx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
