"""dc-onnx: Deep Compression (pruning, trained quantization, Huffman coding) for ONNX."""

from dc_onnx.compiler import CompileResult, compile
from dc_onnx.errors import CompileError, DcOnnxError, InputError, OutputError
from dc_onnx.options import (
    ClusterOptions,
    CompileOptions,
    LowerOptions,
    PruneOptions,
    RetrainOptions,
    TrainOptions,
)
from dc_onnx.runtime import InferenceSession, ops_library_path, session_options
from dc_onnx.tools.evaluate import EvalResult, evaluate
from dc_onnx.tools.verify import verify

__version__ = "0.1.0"

__all__ = [
    "ClusterOptions",
    "CompileError",
    "CompileOptions",
    "CompileResult",
    "DcOnnxError",
    "EvalResult",
    "InferenceSession",
    "InputError",
    "LowerOptions",
    "OutputError",
    "PruneOptions",
    "RetrainOptions",
    "TrainOptions",
    "compile",
    "evaluate",
    "ops_library_path",
    "session_options",
    "verify",
]
