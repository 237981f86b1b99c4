"""Fine-tuning a trainable model with onnxruntime-training's on-device API.

`generate_artifacts` turns the trainable graph into training, eval and optimizer graphs plus
a checkpoint; `Module` / `Optimizer` / `CheckpointState` run them. The losses:

- `cross-entropy` against the labels in the data;
- `distill`: for users who have inputs but no labels, the teacher (the original model)
  labels them: cross-entropy against its class probabilities softened by a temperature
  (`dc_onnx.training.losses`); `distill-mse` matches its raw outputs instead (mean squared error),
  for models whose output is not a vector of class scores.

With a validation set the parameters of the best epoch are kept (highest accuracy with
labels, else lowest loss); without one, those of the last epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from dc_onnx.data import Batch, Dataset
from dc_onnx.errors import InputError
from dc_onnx.training.graph import TrainableModel
from dc_onnx.training.losses import soft_target_loss, softened
from dc_onnx.training.ort_training import OrtTrainingUnavailableError, load_training_api

logger = logging.getLogger(__name__)

Loss = Literal["auto", "cross-entropy", "distill", "distill-mse"]
Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["cosine", "constant"]

_NO_GRADIENT = re.compile(r"gradient builder has not been registered: (\S+) for node (\S*)")
_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
}


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: Optimizer = "adamw"
    weight_decay: float = 0.0  # AdamW's decoupled decay; SGD has none in ORT
    schedule: Schedule = "cosine"  # cosine decay to zero over all steps, or constant
    loss: Loss = "auto"  # cross-entropy when the data has labels, else distill
    temperature: float = 4.0  # distill: softening of the teacher's probabilities
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What retraining reads: the training set, an optional validation set, the teacher."""

    train: Dataset
    val: Dataset | None = None
    teacher: bytes | None = None  # the original model, serialized, for distillation


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    seconds: float


def resolve_loss(
    loss: Loss, data: TrainingData
) -> Literal["cross-entropy", "distill", "distill-mse"]:
    if loss == "auto":
        return "cross-entropy" if data.train.has_labels else "distill"
    if loss == "cross-entropy" and not data.train.has_labels:
        raise InputError(
            f"{data.train.path} has no '{data.train.labels_key}' array: "
            "pass --labels KEY, or use the distillation loss"
        )
    return loss


def _lr_at(options: TrainOptions, step: int, total: int) -> float:
    if options.schedule == "constant":
        return options.lr
    return 0.5 * options.lr * (1.0 + math.cos(math.pi * step / max(total, 1)))


def _training_api() -> Any:
    try:
        return load_training_api()
    except OrtTrainingUnavailableError as e:
        raise InputError(f"retraining needs onnxruntime-training: {e}") from None


class _Teacher:
    """The original model, run in ORT to give distillation targets."""

    def __init__(self, model: bytes, output: str) -> None:
        import onnxruntime as ort

        from dc_onnx.runtime import session_options

        self.session = ort.InferenceSession(
            model, sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
        self.output = output

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.session.run([self.output], feeds)[0])


@contextlib.contextmanager
def _native_stderr_to_debug_log() -> Iterator[None]:
    """Capture what C++ writes to fd 2 and log it at DEBUG.

    The gradient graph builder of onnxruntime-training logs every graph transformer at
    INFO through a logger that no Python setting reaches; errors still arrive as exceptions.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace").strip()
            if text:
                logger.debug("onnxruntime-training:\n%s", text)


def _generate(training: Any, trainable: TrainableModel, loss: str, options: TrainOptions,
              directory: Path) -> None:  # fmt: skip
    artifacts = training.artifacts
    if options.optimizer == "adamw":
        optimizer = artifacts.onnxblock.optim.AdamW(weight_decay=options.weight_decay)
    else:
        optimizer = artifacts.OptimType.SGD
    loss_type = {
        "cross-entropy": artifacts.LossType.CrossEntropyLoss,
        "distill-mse": artifacts.LossType.MSELoss,
    }.get(loss) or soft_target_loss(artifacts.onnxblock, options.temperature)
    try:
        with _native_stderr_to_debug_log():
            artifacts.generate_artifacts(
                trainable.proto,
                requires_grad=trainable.params,
                loss=loss_type,
                optimizer=optimizer,
                artifact_directory=directory,
                additional_output_names=[trainable.output],
            )
    except Exception as e:
        found = _NO_GRADIENT.search(str(e))
        if found:
            op, node = found.groups()
            raise InputError(
                f"op '{op}' (node '{node}') has no gradient in onnxruntime-training, so this "
                "model cannot be retrained; use the data-free recipe (--recipe data-free)"
            ) from None
        raise


def train(
    trainable: TrainableModel, data: TrainingData, options: TrainOptions, label: str = "retrain"
) -> tuple[dict[str, np.ndarray], list[EpochRecord], int]:
    """Train the parameters of `trainable`: (kept values, epoch history, kept epoch)."""
    training = _training_api()
    import onnxruntime as ort

    loss = resolve_loss(options.loss, data)
    graph = trainable.proto.graph
    initializers = {t.name for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    dtypes = {
        i.name: np.dtype(_NUMPY.get(i.type.tensor_type.elem_type, np.float32))
        for i in graph.input
        if i.name in names
    }
    data.train.check_inputs(names)
    if data.val is not None:
        data.val.check_inputs(names)
        if loss == "cross-entropy" and not data.val.has_labels:
            raise InputError(f"{data.val.path} has no '{data.val.labels_key}' array")
    teacher = None
    if loss != "cross-entropy":
        if data.teacher is None:
            raise InputError("distillation needs the original model as the teacher")
        teacher = _Teacher(data.teacher, trainable.output)

    rng = np.random.default_rng(options.seed)
    with tempfile.TemporaryDirectory(prefix="dc_onnx_train_") as tmp:
        directory = Path(tmp)
        _generate(training, trainable, loss, options, directory)
        api = training.api
        state = api.CheckpointState.load_checkpoint(str(directory / "checkpoint"))
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        module = api.Module(
            str(directory / "training_model.onnx"),
            state,
            str(directory / "eval_model.onnx"),
            session_options=session_options,
        )
        optimizer = api.Optimizer(str(directory / "optimizer_model.onnx"), module)

        def params() -> dict[str, np.ndarray]:
            return {n: np.array(state.parameters[n].data) for n in trainable.params}

        def step_args(batch: Batch) -> tuple[list[np.ndarray], np.ndarray | None]:
            feeds, labels = batch
            if loss == "cross-entropy":
                assert labels is not None
                target = np.asarray(labels).astype(np.int64).reshape(-1)
            else:
                assert teacher is not None
                target = teacher(feeds)
                if loss == "distill":
                    target = softened(target, options.temperature)
            ordered = [feeds[n] for n in names]
            return [*ordered, target], labels

        def run_epoch(source: Iterator[Batch], learn: bool) -> tuple[float, float | None]:
            total_loss, seen, correct, labelled = 0.0, 0, 0, 0
            for batch in source:
                args, labels = step_args(batch)
                if learn:
                    optimizer.set_learning_rate(_lr_at(options, step[0], total_steps))
                    step[0] += 1
                value, logits = module(*args)
                if learn:
                    optimizer.step()
                    module.lazy_reset_grad()
                n = len(args[0])
                total_loss += float(value) * n
                seen += n
                if labels is not None:
                    logits = np.asarray(logits)
                    correct += int(np.sum(logits.reshape(n, -1).argmax(1) == labels.reshape(-1)))
                    labelled += n
            if seen == 0:
                raise InputError("the data set has no samples")
            return total_loss / seen, (correct / labelled if labelled else None)

        batches_per_epoch = sum(1 for _ in data.train.batches(names, options.batch_size))
        total_steps = options.epochs * batches_per_epoch
        step = [0]
        history: list[EpochRecord] = []
        best = params()
        best_score: float | None = None
        kept_epoch = 0
        for epoch in range(1, options.epochs + 1):
            start = time.perf_counter()
            module.train()
            train_batches = data.train.batches(names, options.batch_size, rng, dtypes)
            loss_value, accuracy = run_epoch(train_batches, learn=True)
            val_loss = val_accuracy = None
            if data.val is not None:
                module.eval()
                val_batches = data.val.batches(names, max(options.batch_size, 256), None, dtypes)
                val_loss, val_accuracy = run_epoch(val_batches, learn=False)
            record = EpochRecord(
                epoch, loss_value, accuracy, val_loss, val_accuracy, time.perf_counter() - start
            )
            history.append(record)
            logger.info("%s epoch %d/%d: %s", label, epoch, options.epochs, _describe(record))
            # Without validation the last epoch is kept; with it, the best (ties: earliest).
            score = 0.0 if val_loss is None else -val_loss if val_accuracy is None else val_accuracy
            if val_loss is None or best_score is None or score > best_score:
                best_score, best, kept_epoch = score, params(), epoch
        if data.val is not None and history:
            logger.info("%s: keeping epoch %d (best on the validation set)", label, kept_epoch)
    return best, history, kept_epoch


def _describe(r: EpochRecord) -> str:
    parts = [f"loss {r.loss:.4f}"]
    if r.accuracy is not None:
        parts.append(f"acc {r.accuracy:.2%}")
    if r.val_loss is not None:
        parts.append(f"val loss {r.val_loss:.4f}")
    if r.val_accuracy is not None:
        parts.append(f"val acc {r.val_accuracy:.2%}")
    parts.append(f"({r.seconds:.1f} s)")
    return ", ".join(parts)
