"""Train the reference LeNet models on MNIST with onnxruntime-training (no PyTorch).

The inference graphs are written by hand with ``onnx.helper`` (opset 17, IR version 8, so
ONNX Runtime 1.19 and every newer release load them). Training uses onnxruntime-training's
on-device API: ``generate_artifacts`` adds a cross-entropy loss, the gradient graph and an
AdamW optimizer graph; ``Module``/``Optimizer``/``CheckpointState`` run them. The trained
parameters are copied back into the hand-written inference graph, which is evaluated with a
plain ``onnxruntime.InferenceSession`` and saved with all weights embedded.

Usage (from the repository root, in an environment with the ``train`` extra)::

    python models/train_lenet.py --model all --seed 0

Results go to ``models/<name>.onnx`` and ``models/metrics.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parent.parent

if TYPE_CHECKING:
    from dc_onnx.training.ort_training import TrainingAPI


def _ort_training() -> ModuleType:
    """``dc_onnx.training.ort_training``, from the installed package or from this checkout.

    In a checkout the package may not be importable as a whole (``dc_onnx.passes`` only
    exists once installed), so fall back to loading the stdlib-only module file directly.
    """
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        return importlib.import_module("dc_onnx.training.ort_training")
    except ImportError:
        path = REPO_ROOT / "dc_onnx" / "training" / "ort_training.py"
        spec = importlib.util.spec_from_file_location("_dc_onnx_ort_training", path)
        if spec is None or spec.loader is None:
            raise
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


OPSET = 17
IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "N"
NUM_CLASSES = 10


# --------------------------------------------------------------------------- graphs


def _he_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """Kaiming/He uniform initialisation for ReLU networks: U(-sqrt(6/fan_in), +sqrt(6/fan_in))."""
    bound = math.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _io() -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, 1, 28, 28])
    y = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, NUM_CLASSES])
    return x, y


def _finish(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="dc-onnx models/train_lenet.py",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _gemm(name: str, x: str, out: str) -> onnx.NodeProto:
    return helper.make_node(
        "Gemm", [x, f"{name}.weight", f"{name}.bias"], [out], name=name, transB=1
    )


def _maxpool2(name: str, x: str, out: str) -> onnx.NodeProto:
    return helper.make_node("MaxPool", [x], [out], name=name, kernel_shape=[2, 2], strides=[2, 2])


def _fc_params(
    rng: np.random.Generator, name: str, fan_in: int, fan_out: int
) -> list[onnx.TensorProto]:
    weight = _he_uniform(rng, (fan_out, fan_in), fan_in)
    bias = np.zeros(fan_out, dtype=np.float32)
    return [
        numpy_helper.from_array(weight, f"{name}.weight"),
        numpy_helper.from_array(bias, f"{name}.bias"),
    ]


def _conv_params(
    rng: np.random.Generator, name: str, c_in: int, c_out: int, k: int
) -> list[onnx.TensorProto]:
    fan_in = c_in * k * k
    weight = _he_uniform(rng, (c_out, c_in, k, k), fan_in)
    bias = np.zeros(c_out, dtype=np.float32)
    return [
        numpy_helper.from_array(weight, f"{name}.weight"),
        numpy_helper.from_array(bias, f"{name}.bias"),
    ]


def build_lenet_300_100(rng: np.random.Generator) -> onnx.ModelProto:
    """784-300-100-10 multilayer perceptron with ReLU (Caffe's LeNet-300-100)."""
    nodes = [
        helper.make_node("Flatten", [INPUT_NAME], ["flat"], name="flatten", axis=1),
        _gemm("ip1", "flat", "ip1_out"),
        helper.make_node("Relu", ["ip1_out"], ["relu1_out"], name="relu1"),
        _gemm("ip2", "relu1_out", "ip2_out"),
        helper.make_node("Relu", ["ip2_out"], ["relu2_out"], name="relu2"),
        _gemm("ip3", "relu2_out", OUTPUT_NAME),
    ]
    inits = [
        *_fc_params(rng, "ip1", 784, 300),
        *_fc_params(rng, "ip2", 300, 100),
        *_fc_params(rng, "ip3", 100, NUM_CLASSES),
    ]
    x, y = _io()
    graph = helper.make_graph(nodes, "lenet_300_100", [x], [y], initializer=inits)
    return _finish(graph, "LeNet-300-100 MNIST classifier; input: pixels/255, output: logits")


def build_lenet5(rng: np.random.Generator) -> onnx.ModelProto:
    """Caffe's LeNet-5 variant: conv20-pool-conv50-pool-fc500-relu-fc10 (no conv ReLUs)."""
    nodes = [
        helper.make_node(
            "Conv",
            [INPUT_NAME, "conv1.weight", "conv1.bias"],
            ["conv1_out"],
            name="conv1",
            kernel_shape=[5, 5],
        ),
        _maxpool2("pool1", "conv1_out", "pool1_out"),
        helper.make_node(
            "Conv",
            ["pool1_out", "conv2.weight", "conv2.bias"],
            ["conv2_out"],
            name="conv2",
            kernel_shape=[5, 5],
        ),
        _maxpool2("pool2", "conv2_out", "pool2_out"),
        helper.make_node("Flatten", ["pool2_out"], ["flat"], name="flatten", axis=1),
        _gemm("ip1", "flat", "ip1_out"),
        helper.make_node("Relu", ["ip1_out"], ["relu1_out"], name="relu1"),
        _gemm("ip2", "relu1_out", OUTPUT_NAME),
    ]
    inits = [
        *_conv_params(rng, "conv1", 1, 20, 5),
        *_conv_params(rng, "conv2", 20, 50, 5),
        *_fc_params(rng, "ip1", 800, 500),
        *_fc_params(rng, "ip2", 500, NUM_CLASSES),
    ]
    x, y = _io()
    graph = helper.make_graph(nodes, "lenet5", [x], [y], initializer=inits)
    return _finish(graph, "LeNet-5 (Caffe variant) MNIST classifier; input: pixels/255")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[np.random.Generator], onnx.ModelProto]
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float


SPECS: dict[str, ModelSpec] = {
    "lenet-300-100": ModelSpec("lenet-300-100", build_lenet_300_100, 30, 64, 1e-3, 1e-4),
    "lenet5": ModelSpec("lenet5", build_lenet5, 20, 128, 1e-3, 1e-4),
}


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Mnist:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _to_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] -> float32 [N,1,28,28] in [0, 1]."""
    return (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)


def load_mnist(path: Path) -> Mnist:
    with np.load(path) as data:
        return Mnist(
            x_train=_to_input(data["x_train"]),
            y_train=data["y_train"].astype(np.int64),
            x_test=_to_input(data["x_test"]),
            y_test=data["y_test"].astype(np.int64),
        )


# --------------------------------------------------------------------------- training


def lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def _accuracy(predict: Callable[[np.ndarray, np.ndarray], np.ndarray], data: Mnist) -> float:
    correct = 0
    for start in range(0, len(data.x_test), 1000):
        x = data.x_test[start : start + 1000]
        y = data.y_test[start : start + 1000]
        correct += int((predict(x, y).argmax(axis=1) == y).sum())
    return correct / len(data.x_test)


def train(
    spec: ModelSpec, data: Mnist, seed: int, training: TrainingAPI
) -> tuple[onnx.ModelProto, float]:
    """Train ``spec`` and return the inference model with trained weights and the seconds spent."""
    rng = np.random.default_rng(seed)
    model = spec.build(rng)
    param_names = [init.name for init in model.graph.initializer]
    artifacts, api = training.artifacts, training.api
    optimizer_block = artifacts.onnxblock.optim.AdamW(weight_decay=spec.weight_decay)

    with tempfile.TemporaryDirectory(prefix=f"dc_onnx_{spec.name}_") as tmp:
        tmp_dir = Path(tmp)
        artifacts.generate_artifacts(
            model,
            requires_grad=param_names,
            loss=artifacts.LossType.CrossEntropyLoss,
            optimizer=optimizer_block,
            artifact_directory=tmp_dir,
            additional_output_names=[OUTPUT_NAME],
        )
        state = api.CheckpointState.load_checkpoint(str(tmp_dir / "checkpoint"))
        module = api.Module(
            str(tmp_dir / "training_model.onnx"), state, str(tmp_dir / "eval_model.onnx")
        )
        optimizer = api.Optimizer(str(tmp_dir / "optimizer_model.onnx"), module)

        def predict(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            _, logits = module(x, y)
            return np.asarray(logits)

        n = len(data.x_train)
        steps_per_epoch = math.ceil(n / spec.batch_size)
        epochs = spec.epochs
        total = epochs * steps_per_epoch
        warmup = min(steps_per_epoch // 2, total // 10)
        step = 0
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            epoch_start = time.perf_counter()
            module.train()
            order = rng.permutation(n)
            loss_sum = 0.0
            for first in range(0, n, spec.batch_size):
                idx = order[first : first + spec.batch_size]
                optimizer.set_learning_rate(lr_at(step, total, spec.lr, warmup))
                loss, _ = module(data.x_train[idx], data.y_train[idx])
                optimizer.step()
                module.lazy_reset_grad()
                loss_sum += float(loss) * len(idx)
                step += 1
            train_seconds = time.perf_counter() - epoch_start
            module.eval()
            accuracy = _accuracy(predict, data)
            print(
                f"[{spec.name}] epoch {epoch:3d}/{epochs}  loss {loss_sum / n:.4f}  "
                f"test acc {100 * accuracy:.2f}%  ({train_seconds:.1f} s train)",
                flush=True,
            )
        elapsed = time.perf_counter() - start
        trained = {name: np.array(state.parameters[name].data) for name in param_names}

    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(trained[init.name].astype(np.float32), init.name))
    onnx.checker.check_model(model, full_check=True)
    return model, elapsed


def evaluate_onnx(path: Path, data: Mnist) -> float:
    """Test accuracy of a saved model, with a plain InferenceSession."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def predict(x: np.ndarray, _y: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])

    return _accuracy(predict, data)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=(REPO_ROOT / ".." / "shared" / "data" / "mnist.npz").resolve(),
        help="mnist.npz with x_train, y_train, x_test, y_test (default: %(default)s)",
    )
    parser.add_argument("--model", choices=[*SPECS, "all"], default="all")
    parser.add_argument("--epochs", type=int, default=None, help="override the per-model default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None, help="override the default")
    parser.add_argument("--lr", type=float, default=None, help="override the peak learning rate")
    parser.add_argument(
        "--weight-decay", type=float, default=None, help="override AdamW's decoupled weight decay"
    )
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "models")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    training: TrainingAPI = _ort_training().load_training_api()
    import onnxruntime as ort

    # generate_artifacts leaves ORT's default logger at INFO (one line per graph transformer).
    ort.set_default_logger_severity(3)
    data = load_mnist(args.data)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.json"
    metrics: dict[str, Any] = {}
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())

    names = list(SPECS) if args.model == "all" else [args.model]
    for name in names:
        spec = dataclasses.replace(
            SPECS[name],
            **{
                field: getattr(args, field)
                for field in ("epochs", "batch_size", "lr", "weight_decay")
                if getattr(args, field) is not None
            },
        )
        model, seconds = train(spec, data, args.seed, training)
        path = out_dir / f"{name}.onnx"
        onnx.save_model(model, path)
        accuracy = evaluate_onnx(path, data)
        params = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
        metrics[name] = {
            "test_accuracy": round(accuracy, 6),
            "test_error_percent": round(100.0 * (1.0 - accuracy), 4),
            "epochs": spec.epochs,
            "seed": args.seed,
            "params": params,
            "onnx_bytes": path.stat().st_size,
            "batch_size": spec.batch_size,
            "lr": spec.lr,
            "weight_decay": spec.weight_decay,
            "train_seconds": round(seconds, 1),
        }
        print(
            f"[{name}] saved {path} ({path.stat().st_size} bytes, {params} params): "
            f"test accuracy {100 * accuracy:.2f}% (InferenceSession), {seconds:.0f} s",
            flush=True,
        )
        metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
