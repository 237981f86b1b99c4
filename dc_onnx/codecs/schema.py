"""The compiled format's names and limits, in one place (docs/format.md describes them).

The encoder (`passes/lower.py`), the reference decoder (`dc_onnx/tools/decompile.py`), the
writer of the side file (`dc_onnx/writer.py`) and the training graph
(`dc_onnx/training/graph.py`) all read this module instead of keeping their own copies.
The C++ kernels (`runtime_ops/`) must agree with it; docs/format.md is their contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from dc_onnx.codecs.container import StreamKind

DOMAIN = "ai.dc_onnx"
OPSET_VERSION = 1
# The initializer holding the side file's header and TOC (format version 3: the whole file).
HEADER_NAME = "dc_onnx.header"
SIDE_FILE_SUFFIX = ".dcw"  # the side file: <model stem>.<hash>.dcw
DATA_FILE_SUFFIX = ".data"  # weights left dense: <model stem>.<hash>.data

# Dense op -> compressed op, and back.
COMPRESSED_OP = {
    "Gemm": "CompressedGemm",
    "MatMul": "CompressedMatMul",
    "Conv": "CompressedConv",
    "Gather": "CompressedGather",  # embeddings: axis 0 of a constant table
}
DENSE_OP = {compressed: dense for dense, compressed in COMPRESSED_OP.items()}

# Attributes of the dense op that the compressed op keeps as they are.
KEPT_ATTRIBUTES = {
    "Gemm": ("alpha", "beta", "transA"),
    "MatMul": (),
    "Conv": ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"),
    "Gather": (),  # axis is 0 (dc_onnx.layers only takes those)
}
# Attributes the compressed ops add (the decoder drops them when it densifies; it re-emits
# a fused activation as its own node after the dense op).
OWN_ATTRIBUTES = (
    "weight_shape", "num_entries", "index_bits", "stream_ids", "layer", "weight_side", "dtype",
    "activation", "activation_params",
)  # fmt: skip
# Format version 3: a CompressedConstant has no codebook input to take its output type
# from, so a codebook other than float32 names its ONNX element type here.
DTYPE_ATTRIBUTE = "dtype"

# The four stream inputs of a compressed op (inputs 2..5), in this order.
STREAM_KINDS = (StreamKind.CODEBOOK, StreamKind.CODES, StreamKind.GAPS, StreamKind.CODE_LENGTHS)
FIRST_STREAM_INPUT = 2
BIAS_INPUT = FIRST_STREAM_INPUT + len(STREAM_KINDS)
# Row scales (format version 2) follow the bias slot, which stays empty when the op has none;
# their TOC index is a fifth `stream_ids` entry.
ROW_SCALES_INPUT = BIAS_INPUT + 1

# The storage-form op: no X, so the header is input 0 and the streams inputs 1..4; it
# outputs the decoded weight in its own dtype (the codebook's).
CONSTANT_OP = "CompressedConstant"


def portable_weights(initializers: Iterable[str]) -> list[str]:
    """The weights a `--target portable` compile stored as uint8 codes and a codebook
    (passes/lower_portable.py names them BASE.codes and BASE.codebook)."""
    names = set(initializers)
    bases = (n.removesuffix(".codebook") for n in names if n.endswith(".codebook"))
    return sorted(b for b in bases if f"{b}.codes" in names)


def not_compiled(path: object, portable: Sequence[str] = ()) -> str:
    """The error for a model without the header; a compile that only stored weights as
    float16 (passes/half.py) writes plain ONNX, with nothing to decode, and so does
    `--target portable` (`portable`: its weights, from `portable_weights`)."""
    if portable:
        return (
            f"{path}: a portable-form model (--target portable): {len(portable)} weight(s) "
            "stored as uint8 codes and a codebook, which standard ONNX ops rebuild when the "
            "model loads; it has no dc-onnx streams to read, and runs as it is in any ONNX "
            "runtime (inspect and decompress read the --target ort form)"
        )
    return (
        f"{path}: not a compiled dc-onnx model (it has no {HEADER_NAME}; a model whose "
        "compile only stored weights as float16 is plain ONNX and runs as it is)"
    )


def header_input(op_type: str) -> int:
    return 0 if op_type == CONSTANT_OP else 1


def stream_inputs(op_type: str) -> slice:
    """Where the four stream inputs of a compressed node sit."""
    first = header_input(op_type) + 1
    return slice(first, first + len(STREAM_KINDS))


def row_scales_input(op_type: str) -> int:
    """Where a compressed node's row scales sit (when its `stream_ids` has a fifth entry)."""
    return stream_inputs(op_type).stop if op_type == CONSTANT_OP else ROW_SCALES_INPUT


def stream_names(op_type: str, inputs: Sequence[str], stream_ids: Sequence[int]) -> list[str]:
    """The input names of a compressed node's streams, in `stream_ids` order: the four of
    STREAM_KINDS, then the row scales if there is a fifth id ("" when that input is missing,
    as every stream input is from format version 3)."""
    names = list(inputs[stream_inputs(op_type)])
    names += [""] * (len(STREAM_KINDS) - len(names))
    if len(stream_ids) > len(STREAM_KINDS):
        at = row_scales_input(op_type)
        names.append(inputs[at] if at < len(inputs) else "")
    return names


def stream_kinds(stream_ids: Sequence[int]) -> tuple[StreamKind, ...]:
    """The kind of each `stream_ids` entry."""
    extra = (StreamKind.ROW_SCALES,) if len(stream_ids) > len(STREAM_KINDS) else ()
    return STREAM_KINDS + extra


# Code 0 is the exact zero, so a codebook holds at most 255 non-zero values (codes are bytes).
MAX_CODEBOOK = 256
MAX_NONZERO_VALUES = MAX_CODEBOOK - 1


class CodebookOverflowError(ValueError):
    """A weight has more distinct non-zero values than a codebook holds."""


def split_codebook(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codebook, codes) of a weight: the codebook is 0 then its distinct non-zero values in
    ascending order (float32), codes index it (uint8, 0 where the weight is zero).

    CodebookOverflowError when the weight holds more than MAX_NONZERO_VALUES of them.
    """
    nonzero = weight != 0
    values = np.unique(weight[nonzero])
    if values.size > MAX_NONZERO_VALUES:
        raise CodebookOverflowError(
            f"{values.size} distinct non-zero weights; at most {MAX_NONZERO_VALUES} fit a "
            "codebook (run the cluster pass first)"
        )
    codebook = np.concatenate([[0.0], values]).astype(np.float32)
    codes = np.zeros(weight.shape, dtype=np.uint8)
    codes[nonzero] = np.searchsorted(values, weight[nonzero]) + 1
    return codebook, codes
