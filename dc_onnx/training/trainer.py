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
from dc_onnx.options import Loss, RetrainOptions, TrainOptions
from dc_onnx.progress import Progress
from dc_onnx.training.graph import TrainableModel
from dc_onnx.training.losses import soft_target_loss, softened
from dc_onnx.training.ort_training import OrtTrainingUnavailableError, load_training_api

logger = logging.getLogger(__name__)

__all__ = ["EpochRecord", "TrainOptions", "TrainingData", "resolve_loss", "train"]

_NO_GRADIENT = re.compile(r"gradient builder has not been registered: (\S+) for node (\S*)")


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


def _lr_at(options: RetrainOptions, step: int, total: int) -> float:
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


def _generate(training: Any, trainable: TrainableModel, loss: str, options: RetrainOptions,
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


class _TrainingLoop:
    """One training run: the ORT module and optimizer, the step counter, the best epoch."""

    def __init__(
        self, api: Any, directory: Path, trainable: TrainableModel, data: TrainingData,
        options: RetrainOptions, loss: str, label: str,
    ) -> None:  # fmt: skip
        import onnxruntime as ort

        self.trainable = trainable
        self.data = data
        self.options = options
        self.loss = loss
        self.label = label
        self.names = _input_names(trainable)
        self.dtypes = {
            i.name: _numpy_dtype(i.type.tensor_type.elem_type)
            for i in trainable.proto.graph.input
            if i.name in self.names
        }
        self.teacher = (
            None if loss == "cross-entropy" else _Teacher(data.teacher or b"", trainable.output)
        )
        self.state = api.CheckpointState.load_checkpoint(str(directory / "checkpoint"))
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        self.module = api.Module(
            str(directory / "training_model.onnx"), self.state,
            str(directory / "eval_model.onnx"), session_options=session_options,
        )  # fmt: skip
        self.optimizer = api.Optimizer(str(directory / "optimizer_model.onnx"), self.module)
        self.step = 0
        batches = sum(1 for _ in data.train.batches(self.names, options.batch_size))
        self.total_steps = options.epochs * batches
        self.history: list[EpochRecord] = []
        self.best = self.params()
        self.best_score: float | None = None
        self.kept_epoch = 0

    def params(self) -> dict[str, np.ndarray]:
        return {n: np.array(self.state.parameters[n].data) for n in self.trainable.params}

    def _step_args(self, batch: Batch) -> list[np.ndarray]:
        feeds, labels = batch
        if self.loss == "cross-entropy":
            assert labels is not None
            target = np.asarray(labels).astype(np.int64).reshape(-1)
        else:
            assert self.teacher is not None
            target = self.teacher(feeds)
            if self.loss == "distill":
                target = softened(target, self.options.temperature)
        return [*(feeds[n] for n in self.names), target]

    def _run_epoch(
        self, source: Iterator[Batch], learn: bool, progress: Progress | None = None
    ) -> tuple[float, float | None]:
        total_loss, seen, correct, labelled = 0.0, 0, 0, 0
        for batch in source:
            args = self._step_args(batch)
            if learn:
                self.optimizer.set_learning_rate(_lr_at(self.options, self.step, self.total_steps))
                self.step += 1
            value, logits = self.module(*args)
            if learn:
                self.optimizer.step()
                self.module.lazy_reset_grad()
            n = len(args[0])
            total_loss += float(value) * n
            seen += n
            labels = batch[1]
            if labels is not None:
                predicted = np.asarray(logits).reshape(n, -1).argmax(1)
                correct += int(np.sum(predicted == labels.reshape(-1)))
                labelled += n
            if progress is not None:
                throughput = seen / progress.elapsed()
                progress.update(loss=total_loss / seen, **{"samples/s": round(throughput)})
        if seen == 0:
            raise InputError("the data set has no samples")
        return total_loss / seen, (correct / labelled if labelled else None)

    def epoch(self, epoch: int, rng: np.random.Generator) -> None:
        """Train one epoch, validate it, and keep its parameters if it is the best so far."""
        options, data = self.options, self.data
        start = time.perf_counter()
        self.module.train()
        batches = data.train.batches(self.names, options.batch_size, rng, self.dtypes)
        steps = self.total_steps // max(options.epochs, 1)
        label = f"{self.label} epoch {epoch}/{options.epochs}"
        with Progress(steps, label, "step") as progress:
            loss_value, accuracy = self._run_epoch(batches, learn=True, progress=progress)
        val_loss = val_accuracy = None
        if data.val is not None:
            self.module.eval()
            val_batches = data.val.batches(
                self.names, max(options.batch_size, 256), None, self.dtypes
            )
            val_loss, val_accuracy = self._run_epoch(val_batches, learn=False)
        record = EpochRecord(
            epoch, loss_value, accuracy, val_loss, val_accuracy, time.perf_counter() - start
        )
        self.history.append(record)
        logger.info("%s epoch %d/%d: %s", self.label, epoch, options.epochs, _describe(record))
        # Without validation the last epoch is kept; with it, the best (ties: earliest).
        score = 0.0 if val_loss is None else -val_loss if val_accuracy is None else val_accuracy
        if val_loss is None or self.best_score is None or score > self.best_score:
            self.best_score, self.best, self.kept_epoch = score, self.params(), epoch


def _numpy_dtype(elem_type: int) -> np.dtype:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError):  # an undefined type: the inputs are fed as float32
        return np.dtype(np.float32)


def _input_names(trainable: TrainableModel) -> list[str]:
    """The graph inputs that the data feeds (the others are initializers)."""
    graph = trainable.proto.graph
    initializers = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def _check_data(trainable: TrainableModel, data: TrainingData, loss: str) -> None:
    names = _input_names(trainable)
    data.train.check_inputs(names)
    if data.val is not None:
        data.val.check_inputs(names)
        if loss == "cross-entropy" and not data.val.has_labels:
            raise InputError(f"{data.val.path} has no '{data.val.labels_key}' array")
    if loss != "cross-entropy" and data.teacher is None:
        raise InputError("distillation needs the original model as the teacher")


def train(
    trainable: TrainableModel, data: TrainingData, options: RetrainOptions, label: str = "retrain"
) -> tuple[dict[str, np.ndarray], list[EpochRecord], int]:
    """Train the parameters of `trainable`: (kept values, epoch history, kept epoch)."""
    training = _training_api()
    loss = resolve_loss(options.loss, data)
    _check_data(trainable, data, loss)
    rng = np.random.default_rng(options.seed)
    with tempfile.TemporaryDirectory(prefix="dc_onnx_train_") as tmp:
        directory = Path(tmp)
        _generate(training, trainable, loss, options, directory)
        loop = _TrainingLoop(training.api, directory, trainable, data, options, loss, label)
        for epoch in range(1, options.epochs + 1):
            loop.epoch(epoch, rng)
        if data.val is not None and loop.history:
            logger.info("%s: keeping epoch %d (best on the validation set)", label, loop.kept_epoch)
    return loop.best, loop.history, loop.kept_epoch


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
