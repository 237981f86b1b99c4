"""Errors a user can act on. The CLI prints their message and exits non-zero."""


class DcOnnxError(Exception):
    """Base class of every error dc-onnx reports to its user."""


class InputError(DcOnnxError):
    """The input model, file or option is unusable."""


class OutputError(DcOnnxError):
    """An output cannot be written (bad path, no space, no permission); nothing was replaced."""


class CompileError(DcOnnxError):
    """A compiler pass failed; the message names it and the passes that ran before it."""
