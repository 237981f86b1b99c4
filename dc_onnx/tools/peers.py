"""ONNX Runtime's own compressed forms of a model, for `dc-onnx bench --peers`: what a user
would pick instead of dc-onnx, built from the same original with ORT's quantizers.

- `ort-int8`: `onnxruntime.quantization.quantize_dynamic` with its default settings (int8
  weights, activations quantized at run time).
- `ort-4bit`: ORT's block-wise 4-bit weight quantizer (MatMulNBits nodes), block 32,
  symmetric: `matmul_nbits_quantizer.MatMulNBitsQuantizer` in newer onnxruntime,
  `matmul_4bits_quantizer.MatMul4BitsQuantizer` in older ones.

Neither quantizer takes Gemm (quantize_dynamic skips it; the 4-bit one only takes MatMul),
so both start from a copy where each Gemm with a constant 2-D weight and default alpha,
beta and transA is rewritten as the same product, MatMul (+ Add of the bias); the forms'
note says so. Without it, fully-connected layers exported as Gemm would stay in float.

Each builder uses whatever onnxruntime is installed and returns a `PeerBuild`: the written
model, or the reason it could not be built (a missing quantizer, a quantizer failure).
`python -m dc_onnx.tools.peers ORIGINAL OUT_DIR` builds both and prints them as JSON:
`bench` runs that in a child process, so the quantizers' memory does not pollute the
resident-set figures of the sessions it measures, and a quantizer crash cannot end it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)

INT8, FOUR_BIT = "ort-int8", "ort-4bit"
PEERS = (INT8, FOUR_BIT)
BLOCK_SIZE = 32
_REASON_CHARS = 300


@dataclasses.dataclass(frozen=True)
class PeerBuild:
    name: str
    path: str | None  # the written model, None when it could not be built
    reason: str | None = None  # why it could not be built
    note: str | None = None  # what was done to the model besides ORT's quantizer


def one_line(error: BaseException | str) -> str:
    """An error message on one line, cut to a table cell's worth."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:_REASON_CHARS]


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "none"
    return str(onnxruntime.__version__)


def quantize_int8(prepared: Path, out: Path) -> None:
    """ORT's dynamic int8 quantization with its default settings."""
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(prepared), str(out))
    ops = {n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node}
    if not ops & {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}:
        raise ValueError("quantize_dynamic left every weight in float (no MatMul or Conv weight)")


def _four_bit_quantizer() -> Callable[..., Any]:
    """The 4-bit MatMul quantizer class of the installed onnxruntime (newer name first)."""
    errors = []
    for module, name in (
        ("onnxruntime.quantization.matmul_nbits_quantizer", "MatMulNBitsQuantizer"),
        ("onnxruntime.quantization.matmul_4bits_quantizer", "MatMul4BitsQuantizer"),
    ):
        try:
            imported = __import__(module, fromlist=[name])
            quantizer: Callable[..., Any] = getattr(imported, name)
        except (ImportError, AttributeError) as e:
            errors.append(f"{module.rsplit('.', 1)[1]}: {one_line(e)[:80]}")
            continue
        return quantizer
    raise ImportError(
        f"onnxruntime {_ort_version()} has no usable 4-bit MatMul quantizer ({'; '.join(errors)})"
    )


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrites, in place, each Gemm of the main graph whose weight is a 2-D initializer and
    whose alpha, beta and transA are defaults as MatMul (+ Add of the bias); returns how many."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    rewritten, nodes = 0, []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = inits.get(node.input[1]) if node.op_type == "Gemm" else None
        if (
            weight is None
            or len(weight.dims) != 2
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
            or attrs.get("transA", 0) != 0
        ):
            nodes.append(node)
            continue
        w_name = weight.name
        if attrs.get("transB", 0):
            array = np.ascontiguousarray(numpy_helper.to_array(weight).T)
            w_name = f"{node.name or node.output[0]}_W_kn"
            graph.initializer.append(numpy_helper.from_array(array, w_name))
            readers[weight.name] -= 1
        has_bias = len(node.input) > 2 and node.input[2] != ""
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [product], node.name))
        if has_bias:
            nodes.append(
                helper.make_node(
                    "Add", [product, node.input[2]], [node.output[0]], f"{node.name}_bias"
                )
            )
        rewritten += 1
    unread = [t for t in graph.initializer if readers.get(t.name, 1) == 0]
    for tensor in unread:
        graph.initializer.remove(tensor)
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def quantize_4bit(prepared: Path, out: Path) -> None:
    """ORT's 4-bit block-wise MatMul quantizer, block 32, symmetric."""
    quantizer_class = _four_bit_quantizer()
    model = onnx.load(str(prepared))
    if not any(n.op_type == "MatMul" for n in model.graph.node):
        raise ValueError("no MatMul (or Gemm) with a constant weight: nothing for it to quantize")
    quantizer = quantizer_class(model, block_size=BLOCK_SIZE, is_symmetric=True)
    quantizer.process()
    quantized = quantizer.model.model
    if not any(n.op_type == "MatMulNBits" for n in quantized.graph.node):
        raise ValueError("the quantizer replaced no MatMul (their weights are not constants)")
    onnx.save(quantized, str(out))


def _prepare(original: Path, out_dir: Path) -> tuple[Path, str | None]:
    """The model both quantizers start from: the original, or, when it has Gemm layers that
    neither quantizer takes (quantize_dynamic skips Gemm, the 4-bit one only takes MatMul),
    a copy with them rewritten as MatMul (+ Add). Returns it and a note saying so."""
    model = onnx.load(str(original))
    rewritten = gemm_to_matmul(model)
    if not rewritten:
        return original, None
    prepared = out_dir / "gemm-as-matmul.onnx"
    onnx.save(model, str(prepared))
    return prepared, f"{rewritten} Gemm rewritten as MatMul (+ Add) for ORT's quantizer"


_BUILDERS: dict[str, Callable[[Path, Path], None]] = {
    INT8: quantize_int8,
    FOUR_BIT: quantize_4bit,
}


def build_peers(
    original: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> list[PeerBuild]:
    """Builds every peer of `original` into `out_dir`; one PeerBuild each, never raises for a
    quantizer that is missing or fails (the reason is in the PeerBuild)."""
    try:
        prepared, note = _prepare(Path(original), Path(out_dir))
    except Exception as e:  # an unreadable model: every peer says why
        return [PeerBuild(n, None, f"{type(e).__name__}: {one_line(e)}") for n in PEERS]
    builds = []
    for name, builder in _BUILDERS.items():
        out = Path(out_dir) / f"{name}.onnx"
        try:
            builder(prepared, out)
        except Exception as e:  # any quantizer failure becomes a row with its reason
            logger.debug("%s failed", name, exc_info=True)
            builds.append(PeerBuild(name, None, f"{type(e).__name__}: {one_line(e)}", note))
            continue
        builds.append(PeerBuild(name, str(out), None, note))
    return builds


def build_peers_in_child(
    original: str | os.PathLike[str], out_dir: str | os.PathLike[str], timeout_s: float = 1800
) -> list[PeerBuild]:
    """`build_peers` in a child Python process (see the module docstring)."""
    command = [sys.executable, "-m", "dc_onnx.tools.peers", os.fspath(original), os.fspath(out_dir)]
    try:
        # PYTHONSAFEPATH: the child imports the installed dc_onnx, not a source tree in cwd.
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False,
            env={**os.environ, "PYTHONSAFEPATH": "1"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return [
            PeerBuild(n, None, f"quantizers did not finish in {timeout_s:.0f} s") for n in PEERS
        ]
    try:
        rows = json.loads(done.stdout.strip().splitlines()[-1])
        return [PeerBuild(**row) for row in rows]
    except (IndexError, ValueError, TypeError):
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return [PeerBuild(n, None, f"quantizer process failed: {one_line(tail[0])}") for n in PEERS]


def main(argv: Sequence[str]) -> int:
    original, out_dir = argv
    builds = build_peers(original, out_dir)
    print(json.dumps([dataclasses.asdict(b) for b in builds]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
