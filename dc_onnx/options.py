"""Every option of `dc-onnx compile`, defined once: defaults, validation and help text.

Each group is a frozen dataclass whose fields carry their CLI help in their metadata
(`option(...)`), as OnnxSlim's argparser does; `dc_onnx.cli_args` builds the argparse
groups from them, so a default or a help text is never written twice. Validation lives in
the per-field `check` (run by `__post_init__`), so a bad value is refused the same way from
the CLI and from Python: a ValueError that names the option.

Adding a group: a dataclass deriving from `OptionGroup` with `option(...)` fields, and one
field of `CompileOptions` holding it (`group(...)`); the CLI picks it up.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

from dc_onnx.quantize import INITS, Init

Loss = Literal["auto", "cross-entropy", "distill", "distill-mse"]
Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["cosine", "constant"]
Target = Literal["ort", "portable"]
Compensation = Literal["auto", "on", "off", "sequential"]
COMPENSATIONS: tuple[Compensation, ...] = ("auto", "on", "off", "sequential")

Check = Callable[[str, Any], None]

# Manual mode without data: no retraining, so the default pruning is mild (on
# LeNet-300-100 it costs 0.1 points of accuracy, docs/results.md).
DEFAULT_QUALITY = 0.5
# Manual-mode bits (Han et al. 2016): weights conv 8 / fc 5, relative indices the same.
PAPER_BITS = {"conv": 8, "fc": 5}
# Storage-form weights (not the allocation's yet): near-lossless 8-bit codebooks.
OTHER_BITS = 8
# The default output-error budget: relative L2 error of the worst output (docs/budget.md).
DEFAULT_MAX_ERROR = 0.01


# --- the validation rules, each written once -------------------------------------------


def check_bits(name: str, value: int) -> None:
    if not 1 <= value <= 8:
        raise ValueError(f"{name} must be in 1..8, got {value}")


def check_sparsity(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:  # also refuses nan
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def check_sparsity_map(name: str, value: Mapping[str, float]) -> None:
    for glob, s in value.items():
        check_sparsity(f"{name} '{glob}'", s)


def check_bits_map(name: str, value: Mapping[str, int]) -> None:
    for key, bits in value.items():
        check_bits(f"{name} '{key}'", bits)


def check_init(name: str, value: str) -> None:
    if value not in INITS:
        raise ValueError(f"{name} must be one of {', '.join(INITS)}, got '{value}'")


def check_compensation(name: str, value: str) -> None:
    if value not in COMPENSATIONS:
        raise ValueError(f"{name} must be one of {', '.join(COMPENSATIONS)}, got '{value}'")


def check_non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def check_count(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def option(
    default: Any = None,
    help: str | None = None,
    *,
    check: Check | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    per_phase: bool = False,
) -> Any:
    """A dataclass field with its CLI metadata; without `help` it has no CLI flag.

    `flag` overrides the flag name (default: the field name with dashes), `parse` turns
    the CLI text into the value, `per_phase` marks retraining options that each phase sets
    on its own (`--epochs` / `--centroid-epochs`).
    """
    metadata = {
        "help": help, "check": check, "flag": flag, "metavar": metavar, "parse": parse,
        "per_phase": per_phase,
    }  # fmt: skip
    if isinstance(default, Mapping):
        frozen = dict(default)
        return dataclasses.field(default_factory=lambda: dict(frozen), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def group(factory: Callable[[], Any], title: str, **cli: Any) -> Any:
    """A `CompileOptions` field holding an option group, shown under `title` in --help.

    `prefix`, `shares` and `helps` give a second instance of a group flags of its own
    only for its `per_phase` fields (prefixed, with their own help); the others take the
    value of the group named by `shares`.
    """
    return dataclasses.field(default_factory=factory, metadata={"title": title, **cli})


@dataclasses.dataclass(frozen=True)
class OptionGroup:
    """Runs each field's `check` on construction (None means "not set" and is not checked)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check = f.metadata.get("check")
            value = getattr(self, f.name)
            if check is not None and value is not None:
                check(f.name, value)


def _parse_map(text: str, value_type: Callable[[str], Any], form: str) -> dict[str, Any]:
    """KEY=V,KEY=V -> {key: value_type(v)}; ValueError naming `form` on a malformed item."""
    result = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.rpartition("=")
        try:
            result[key] = value_type(value)
        except ValueError:
            sep = ""
        if not sep or not key:
            raise ValueError(f"expected {form}, got '{item}'")
    return result


def parse_sparsity_map(text: str) -> dict[str, float]:
    """GLOB=S,GLOB=S -> {glob: s}."""
    return _parse_map(text, float, "GLOB=SPARSITY")


def parse_bits_map(text: str) -> dict[str, int]:
    """NAME=N,GLOB=N -> {name: n}."""
    return _parse_map(text, int, "NAME=BITS")


@dataclasses.dataclass(frozen=True)
class PruneOptions(OptionGroup):
    """Magnitude pruning (passes/prune.py): a target per layer, else a std threshold."""

    sparsity: float | None = option(
        None, "fraction of weights pruned in every layer", check=check_sparsity
    )
    sparsity_per_layer: Mapping[str, float] = option(
        {}, "per-layer sparsity by glob on node or weight names (first match wins); a glob "
        "that matches no layer is an error",
        check=check_sparsity_map, metavar="GLOB=S,...", parse=parse_sparsity_map,
    )  # fmt: skip
    quality: float | None = option(
        None, "prune |w| < quality * std(W) where no sparsity is set; 0 disables (manual "
        f"mode; default {DEFAULT_QUALITY})",
        check=check_non_negative,
    )  # fmt: skip
    rounds: int = option(
        1, "prune -> retrain cycles (with --data)", check=check_count, flag="--prune-rounds"
    )


@dataclasses.dataclass(frozen=True)
class ClusterOptions(OptionGroup):
    """Per-layer 1-D k-means weight sharing (passes/cluster.py)."""

    bits_conv: int | None = option(
        None, "weight bits, conv (manual mode; default 8)", check=check_bits
    )
    bits_fc: int | None = option(None, "weight bits, fc (manual mode; default 5)", check=check_bits)
    bits_other: int | None = option(
        None, "weight bits, storage-form float weights: LSTM/GRU/RNN, tables, elementwise, "
        f"layers in subgraphs (manual mode; default {OTHER_BITS})", check=check_bits,
    )  # fmt: skip
    bits_per_layer: Mapping[str, int] = option(
        {}, "weight bits by weight name, else by glob on node or weight names (first match);"
        " a name or glob that matches no layer is an error",
        check=check_bits_map, metavar="NAME=N,...", parse=parse_bits_map,
    )  # fmt: skip
    init: Init | None = option(
        None, "k-means start: mse (least squared error: density^(1/3) start, empty clusters"
        " split the worst) or the paper's linear, density, random (default: mse without"
        " retraining, linear with)", check=check_init,
    )  # fmt: skip
    compensate: Compensation = option(
        "auto", "error-compensating rounding of Gemm/MatMul/Conv weights from the layer"
        " inputs of the calibration inputs (GPTQ-style; docs/budget.md): auto: on inputs"
        " from a file (--calibration); on: synthesized inputs too; off: nearest value only;"
        " sequential: as auto, and in manual mode the layers are rounded in sequence, each"
        " against its inputs in the model rounded so far (better on some models, worse on"
        " others: docs/budget.md). Never with retraining", check=check_compensation,
    )  # fmt: skip
    max_iterations: int | None = option(None, check=check_count)  # None: the start's own
    seed: int = 0  # random initialisation only

    def bits(self, kind: str) -> int:
        """The bits of a layer kind; conv and fc unset: the paper's."""
        if kind not in PAPER_BITS:
            return OTHER_BITS if self.bits_other is None else self.bits_other
        bits = self.bits_conv if kind == "conv" else self.bits_fc
        return PAPER_BITS[kind] if bits is None else bits


@dataclasses.dataclass(frozen=True)
class LowerOptions(OptionGroup):
    """Encoding into the compressed ops (passes/lower.py)."""

    index_bits_conv: int | None = option(
        None, "relative-index bits, conv (manual mode; default 8)", check=check_bits
    )
    index_bits_fc: int | None = option(
        None, "relative-index bits, fc (manual mode; default 5)", check=check_bits
    )

    # Storage-form weights are mostly dense: their gaps cost ~1 bit each whatever the width.
    index_bits_other: int = option(5, check=check_bits)

    conv_dense_density: float | None = option(
        None,
        "conv layers with at least this share of non-zero weights run as ORT's own Conv on"
        " the weight decoded at session creation (same file bytes); 0: all, above 1: none;"
        " default: by the layer's output size, 35%% from 150 positions (docs/format.md)",
        check=check_non_negative,
    )
    fc_dense_density: float | None = option(
        None,
        "Gemm / MatMul layers with at least this share of non-zero weights run as ORT's own"
        " op on the weight decoded at session creation (same file bytes); 0: all, above 1:"
        " none; default: by the layer's size, 10-70%% (docs/format.md)",
        check=check_non_negative,
    )

    keep_activations: bool = option(
        False,
        "leave a Relu / Clip / LeakyRelu after a compressed Gemm, MatMul or Conv as its own"
        " node (by default it is folded into the op, which applies it as it writes; the"
        " outputs are the same bits either way)",
    )

    def index_bits(self, kind: str) -> int:
        """The index bits of a layer kind; conv and fc unset: the paper's."""
        if kind not in PAPER_BITS:
            return self.index_bits_other
        bits = self.index_bits_conv if kind == "conv" else self.index_bits_fc
        return PAPER_BITS[kind] if bits is None else bits


def parse_input_shapes(text: str) -> dict[str, list[int]]:
    """'x=1,3,224,224 mask=1,128' (space or ';' between inputs) -> {name: dims}."""
    shapes: dict[str, list[int]] = {}
    for item in text.replace(";", " ").split():
        name, sep, dims = item.rpartition("=")
        try:
            values = [int(d) for d in dims.split(",")] if sep and name else []
        except ValueError:
            values = []
        if not values or min(values) < 1:
            raise ValueError(f"expected NAME=D0,D1,... with positive dims, got '{item}'")
        shapes[name] = values
    if not shapes:
        raise ValueError(f"expected NAME=D0,D1,..., got '{text}'")
    return shapes


def check_input_shapes(name: str, value: Mapping[str, Any]) -> None:
    for input_name, dims in value.items():
        if not dims or min(int(d) for d in dims) < 1:
            raise ValueError(f"{name} '{input_name}': dims must be positive, got {dims}")


@dataclasses.dataclass(frozen=True)
class CalibrationOptions(OptionGroup):
    """The inputs output error is measured on (dc_onnx/budget/calibration.py)."""

    calibration: str | os.PathLike[str] | None = option(
        None, "inputs the output error is measured on: .npz or directory, one array per "
        "model input (labels optional), or one run's inputs as given per .npz; default: "
        "--val or --data if given, else synthesized from the input specs",
        parse=os.fspath, metavar="DATA.npz|DIR",
    )  # fmt: skip
    input_shapes: Mapping[str, list[int]] = option(
        {}, "shapes of synthesized inputs whose dims are symbolic (other than the batch), "
        "space-separated", flag="--input-shape", metavar="'NAME=D0,D1,... ...'",
        parse=parse_input_shapes, check=check_input_shapes,
    )  # fmt: skip
    analysis_samples: int = option(
        8, "calibration samples the per-layer sensitivity curves are measured on",
        check=check_count,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class BudgetOptions(CalibrationOptions):
    """The output-error budget (passes/allocate.py, docs/budget.md)."""

    max_error: float | None = option(
        None, "relative L2 error of the worst output against the original on the calibration"
        f" inputs (default {DEFAULT_MAX_ERROR}). Without explicit sparsity or bits, per-layer "
        "settings are chosen to stay within it; given explicitly, a compiled model over it "
        "exits with status 3", check=check_positive,
    )  # fmt: skip

    @property
    def limit(self) -> float:
        return DEFAULT_MAX_ERROR if self.max_error is None else self.max_error


@dataclasses.dataclass(frozen=True)
class RetrainOptions(OptionGroup):
    """One retraining phase (passes/retrain.py, dc_onnx/training/trainer.py)."""

    epochs: int = option(2, "epochs per pruning round", check=check_non_negative, per_phase=True)
    lr: float = option(1e-3, "learning rate, weights", check=check_positive, per_phase=True)
    batch_size: int = option(64, "training batch size", check=check_count)
    optimizer: Optimizer = option("adamw", "optimizer")
    weight_decay: float = option(0.0, "AdamW decoupled decay", check=check_non_negative)
    schedule: Schedule = "cosine"  # cosine decay to zero over all steps, or constant
    loss: Loss = option(
        "auto", "auto: cross-entropy with labels, else distill (the original model's "
        "softened class probabilities as targets); distill-mse matches its raw outputs",
    )  # fmt: skip
    temperature: float = option(4.0, "distill: softening temperature", check=check_positive)
    seed: int = option(0, "shuffling seed")


TrainOptions = RetrainOptions  # the name before options were grouped


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


# Flat names that differ from their group field's name (the API before options were grouped).
_FLAT_ALIASES = {"prune_rounds": ("prune", "rounds")}


@dataclasses.dataclass(frozen=True, init=False)
class CompileOptions(OptionGroup):
    """What `dc-onnx compile` does.

    Budget mode (the default): every weight gets the sparsity and bits that minimise bytes
    while the output error stays under `budget.max_error` (passes/allocate.py). Any of
    `prune.sparsity`, `prune.sparsity_per_layer`, `prune.quality` or the bits switches to
    manual mode, where unset ones take the paper's values (conv 8/8, fc 5/5 bits) and
    pruning is at `DEFAULT_QUALITY * std`.

    With `data` (a training `.npz` or a directory of shards) the default recipe is
    deep-compression (prune, retrain, cluster, retrain the centroids, encode); without it,
    data-free. `recipe` picks one by name (see `dc_onnx.recipes.RECIPES`).

    Groups are given whole (`prune=PruneOptions(sparsity=0.8)`) or by their fields' flat
    names (`CompileOptions(sparsity=0.8, bits_fc=6)`), as the Python API took them before
    options were grouped; a flat name two groups share must be given inside its group.
    """

    budget: BudgetOptions = group(BudgetOptions, "output-error budget")
    prune: PruneOptions = group(PruneOptions, "pruning")
    cluster: ClusterOptions = group(ClusterOptions, "weight sharing")
    lower: LowerOptions = group(LowerOptions, "encoding")
    retrain: RetrainOptions = group(RetrainOptions, "retraining (needs the 'train' extra)")
    # Centroid retraining: its own epochs and learning rate (--centroid-*), the rest shared.
    retrain_centroids: RetrainOptions = group(
        lambda: RetrainOptions(lr=1e-4), "retraining the centroids",
        prefix="centroid-", shares="retrain",
        helps={"epochs": "epochs, centroids", "lr": "learning rate, centroids"},
    )  # fmt: skip
    recipe: str | None = option(
        None, "pass list (default: deep-compression with --data, else data-free)"
    )
    data: str | os.PathLike[str] | None = option(
        None, "training .npz or directory of .npz shards", parse=os.fspath
    )
    val: str | os.PathLike[str] | None = option(
        None, "validation .npz: the best epoch is kept", parse=os.fspath
    )
    labels: str = option("labels", "key of the labels in the data files")
    min_weight_elements: int = option(
        4096, "weights read by other ops than Gemm/MatMul/Conv of the main graph get a "
        "storage form from this many elements; smaller ones stay as they are",
        check=check_count,
    )  # fmt: skip
    simplify: bool = option(False, "run onnx-simplifier first")
    single_file: bool = option(False, "embed the streams in the .onnx")
    target: Target = option(
        "ort", "ort: custom ops + Huffman-coded side file (needs the dc-onnx library); "
        "portable: standard ONNX ops only (codes + Gather), loads in any runtime",
    )  # fmt: skip

    def __init__(self, **kwargs: Any) -> None:
        values = {
            f.name: kwargs.pop(f.name) if f.name in kwargs else _default(f)
            for f in dataclasses.fields(self)
        }
        # Flat names go to the one group that has such a field ("shares" groups excluded).
        flat_owners: dict[str, list[tuple[str, str]]] = {}
        for f in dataclasses.fields(self):
            if "title" in f.metadata and "shares" not in f.metadata:
                for inner in dataclasses.fields(values[f.name]):
                    flat_owners.setdefault(inner.name, []).append((f.name, inner.name))
        for alias, target in _FLAT_ALIASES.items():
            flat_owners[alias] = [target]
        for key, value in kwargs.items():
            owners = flat_owners.get(key, [])
            if len(owners) != 1:
                raise TypeError(f"CompileOptions: unknown or ambiguous option '{key}'")
            group_name, field_name = owners[0]
            values[group_name] = dataclasses.replace(values[group_name], **{field_name: value})
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    @property
    def budgeted(self) -> bool:
        """No explicit compression setting: the allocation chooses them (budget mode)."""
        explicit = (
            self.prune.sparsity, self.prune.quality, self.cluster.bits_conv,
            self.cluster.bits_fc, self.cluster.bits_other, self.lower.index_bits_conv,
            self.lower.index_bits_fc,
        )  # fmt: skip
        per_layer = self.prune.sparsity_per_layer or self.cluster.bits_per_layer
        return not per_layer and all(v is None for v in explicit)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.val is not None and self.data is None:
            raise ValueError(
                "val (a validation set) needs data (a training set): --val needs --data"
            )
