"""dc-onnx: Deep Compression (pruning, trained quantization, Huffman coding) for ONNX."""

from dc_onnx.compiler import CompileOptions, CompileResult, compile
from dc_onnx.errors import CompileError, DcOnnxError, InputError, OutputError
from dc_onnx.runtime import InferenceSession, ops_library_path, session_options
from dc_onnx.tools.evaluate import EvalResult, evaluate
from dc_onnx.tools.verify import verify
from dc_onnx.training.trainer import TrainOptions

__version__ = "0.1.0"

__all__ = [
    "CompileError",
    "CompileOptions",
    "CompileResult",
    "DcOnnxError",
    "EvalResult",
    "InferenceSession",
    "InputError",
    "OutputError",
    "TrainOptions",
    "compile",
    "evaluate",
    "ops_library_path",
    "session_options",
    "verify",
]
