"""The deployment commands of the `dc-onnx` CLI: `inspect` and `decompress`.

Kept apart from `dc_onnx.cli` (which adds them with `add_commands`) so that the commands
that read compiled models live beside each other; like the rest of the CLI, they only
parse arguments and call the library.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from dc_onnx.errors import InputError

logger = logging.getLogger(__name__)

EXIT_OK = 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("inspect", help="list what a compiled model holds, checking its streams")
    i.add_argument("model", type=Path, help="compiled model (.dc.onnx)")
    i.add_argument("--json", action="store_true", help="print the result as JSON")
    i.add_argument("--plot", type=Path, metavar="DIR", help="write the paper-style figures here")
    i.set_defaults(run=_inspect)

    d = sub.add_parser("decompress", help="write a compiled model back as a plain dense model")
    d.add_argument("model", type=Path, help="compiled model (.dc.onnx)")
    d.add_argument("-o", "--output", type=Path, required=True, help="dense model to write")
    d.add_argument("--quiet", action="store_true", help="print nothing but errors")
    d.set_defaults(run=_decompress)


def add_compile_plot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plot", type=Path, metavar="DIR", help="write the paper-style figures (PNG) here"
    )


def check_compile_plot(args: argparse.Namespace) -> None:
    """Before compiling: refuse --plot that cannot be drawn (no matplotlib, portable form)."""
    if args.plot is None:
        return
    from dc_onnx.tools.plots import require_matplotlib

    require_matplotlib()
    if getattr(args, "options.target", "ort") == "portable":
        args.parser.error("--plot draws the custom-op form; it does not apply to --target portable")


def plot_compiled(args: argparse.Namespace, output: Path) -> None:
    """compile --plot: the figures of the written model, with the weights before compression."""
    if args.plot is None:
        return
    from dc_onnx.io import load_model
    from dc_onnx.layers import find_weight_groups
    from dc_onnx.tools.inspect import inspect
    from dc_onnx.tools.plots import plot_layers

    originals = {
        layer.name: group.array()
        for group in find_weight_groups(load_model(args.input).graph)
        for layer in group.layers
    }
    for path in plot_layers(inspect(output).layers, args.plot, originals):
        logger.info("wrote %s", path)


def _inspect(args: argparse.Namespace) -> int:
    from dc_onnx.tools.inspect import inspect

    if args.plot:
        from dc_onnx.tools.plots import require_matplotlib

        require_matplotlib()
    result = inspect(args.model)
    print(json.dumps(result.to_json(), indent=2) if args.json else result.format_table())
    if args.plot and not result.problems:
        from dc_onnx.tools.plots import plot_layers

        for path in plot_layers(result.layers, args.plot):
            logger.info("wrote %s", path)
    if result.problems:
        raise InputError(f"{args.model}: " + "; ".join(result.problems))
    return EXIT_OK


def _decompress(args: argparse.Namespace) -> int:
    from dc_onnx.tools.decompress import decompress

    result = decompress(args.model, args.output)
    if not args.quiet:
        print(f"wrote {', '.join(map(str, result.files))} ({result.bytes:,} bytes)")
    return EXIT_OK
