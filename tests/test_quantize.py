"""Weight sharing quality: outliers, non-finite weights, narrow dtypes, per-weight bits, and
the pure `quantize()` that the error budget calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper

import dc_onnx
from conftest import make_model, mlp_model, run, save
from dc_onnx.cli import main
from dc_onnx.errors import InputError
from dc_onnx.layers import find_weight_groups
from dc_onnx.passes.cluster import ClusterOptions, ClusterPass
from dc_onnx.passes.prune import PrunePass, PrunePolicy
from dc_onnx.quantize import kmeans_1d, nearest, prune_array, quantize, share_values
from dc_onnx.recipes import build_passes


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a64 - b64) / np.linalg.norm(a64))


def _with_outliers(rng: np.random.Generator, n: int = 50_000) -> np.ndarray:
    w = rng.standard_normal(n).astype(np.float32)
    w[rng.choice(n, 6, replace=False)] *= 100  # what BatchNorm folding leaves behind
    return w


def test_outliers_do_not_stretch_the_8bit_grid(rng: np.random.Generator) -> None:
    w = _with_outliers(rng)
    # The squared-error optimum for a Gaussian at 255 levels is about 0.65% (Panter-Dite).
    assert _relative_error(w, quantize(w, 8)) < 0.008
    centroids, assignment, _ = kmeans_1d(w, 255, "linear")
    assert _relative_error(w, centroids[assignment]) > 0.03  # the paper's start strands them
    big = np.abs(w) > 20
    assert _relative_error(w[big], quantize(w, 8)[big]) < 1e-3  # outliers nearly exact


def test_mse_start_beats_the_paper_starts_on_gaussian_weights(rng: np.random.Generator) -> None:
    w = rng.standard_normal(20_000)
    errors = {}
    for init in ("mse", "linear", "density"):
        centroids, assignment, _ = kmeans_1d(w, 31, init)  # type: ignore[arg-type]
        errors[init] = _relative_error(w, centroids[assignment])
    assert errors["mse"] <= min(errors["linear"], errors["density"]) * 1.001


def test_mse_uses_every_centroid(rng: np.random.Generator) -> None:
    w = _with_outliers(rng, 5000)
    centroids, assignment, _ = kmeans_1d(w, 255, "mse")
    assert np.unique(assignment).size == 255
    # A Lloyd fixed point: each centroid is the mean of its points.
    for j in range(0, 255, 17):
        assert np.isclose(w[assignment == j].astype(np.float64).mean(), centroids[j])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_keep_their_own_entry(bad: float, rng: np.random.Generator) -> None:
    w = rng.standard_normal(4096).astype(np.float32)
    w[[3, 100]] = bad
    shared, _ = share_values(w, 31)
    assert np.array_equal(shared[[3, 100]], w[[3, 100]], equal_nan=True)
    finite = np.isfinite(w)
    assert np.all(np.isfinite(shared[finite]))
    assert np.unique(shared[finite]).size == 30  # the non-finite value took one of 31
    assert _relative_error(w[finite], shared[finite]) < 0.06  # optimum at 30 levels: 5.5%


def test_all_three_non_finite_values_at_two_bits_are_refused() -> None:
    w = np.array([np.nan, np.inf, -np.inf, 1.0, 2.0], np.float32)
    with pytest.raises(ValueError, match="non-finite"):
        share_values(w, 3)


def test_prune_quality_ignores_non_finite_weights(rng: np.random.Generator) -> None:
    w = rng.standard_normal(1000).astype(np.float32)
    w[0] = np.nan
    pruned = prune_array(w, "quality", 0.5)
    assert np.isnan(pruned[0])
    assert 0.3 < np.mean(pruned == 0) < 0.45  # P(|z| < 0.5) = 0.38
    pruned = prune_array(w, "sparsity", 0.9)
    assert np.isnan(pruned[0]) and np.count_nonzero(pruned == 0) == 900


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_compiled_layer_with_a_non_finite_weight_matches(
    bad: float, tmp_path: Path, rng: np.random.Generator
) -> None:
    w = rng.standard_normal((64, 64)).astype(np.float32)
    w[0, 0] = bad
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    src = save(make_model([node], {"x": [2, 64]}, {"y": [2, 64]}, {"W": w}), tmp_path / "m.onnx")
    options = dc_onnx.CompileOptions(
        prune=dc_onnx.PruneOptions(sparsity=0.0), cluster=dc_onnx.ClusterOptions(bits_fc=8)
    )
    dc_onnx.compile(src, tmp_path / "m.dc.onnx", options)
    x = {"x": rng.standard_normal((2, 64)).astype(np.float32)}
    (ref,) = run(src, x)
    (out,) = run(tmp_path / "m.dc.onnx", x)
    assert np.array_equal(np.isfinite(ref), np.isfinite(out))
    assert np.array_equal(ref[~np.isfinite(ref)], out[~np.isfinite(ref)], equal_nan=True)
    fin = np.isfinite(ref)
    assert np.abs(ref[fin] - out[fin]).max() < 0.02 * np.abs(ref[fin]).max()


def test_fp16_centroids_are_exact_in_fp16(rng: np.random.Generator) -> None:
    w = (rng.standard_normal(20_000) * 0.05).astype(np.float16)
    out = quantize(w, 8)
    assert out.dtype == np.float16 and np.unique(out[out != 0]).size <= 255
    # Values stored as float32 (a codebook) still round-trip through fp16 exactly.
    shared, _ = share_values(w.astype(np.float32), 255, dtype=np.dtype(np.float16))
    assert np.array_equal(shared.astype(np.float16).astype(np.float32), shared)
    assert _relative_error(w.astype(np.float32), shared) < 0.01


def test_bf16_centroids_are_exact_in_bf16(rng: np.random.Generator) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    w = (rng.standard_normal(20_000) * 0.05).astype(bf16).astype(np.float32)
    shared, _ = share_values(w, 255, dtype=bf16)
    assert np.array_equal(shared.astype(bf16).astype(np.float32), shared)
    assert _relative_error(w, shared) < 0.02


def test_quantize_is_prune_then_cluster(rng: np.random.Generator) -> None:
    w = (rng.standard_normal((48, 64)) * 0.1).astype(np.float32)
    out = quantize(w, 4, sparsity=0.7)
    assert out.shape == w.shape and out.dtype == w.dtype
    assert np.count_nonzero(out == 0) == round(0.7 * w.size)
    assert np.unique(out[out != 0]).size <= 15
    assert np.array_equal(out, quantize(w, 4, sparsity=0.7))  # deterministic
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc")
    model = ir.from_proto(make_model([node], {"x": ["N", 48]}, {"y": ["N", 64]}, {"W": w}))
    PrunePass(PrunePolicy(sparsity=0.7))(model)
    ClusterPass(ClusterOptions(bits_fc=4))(model)
    (passes,) = [g.array() for g in find_weight_groups(model.graph)]
    assert np.array_equal(passes, out)


def test_quantize_rejects_bad_settings() -> None:
    w = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="bits"):
        quantize(w, 9)
    with pytest.raises(ValueError, match="sparsity"):
        quantize(w, 8, sparsity=1.0)


def test_per_weight_bits_override_the_kind_default(rng: np.random.Generator) -> None:
    nodes = [
        helper.make_node("Gemm", ["x", "W1"], ["h"], name="fc1"),
        helper.make_node("Gemm", ["h", "W2"], ["y"], name="fc2"),
    ]
    inits = {
        "W1": rng.standard_normal((16, 32)).astype(np.float32),
        "W2": rng.standard_normal((32, 8)).astype(np.float32),
    }
    model = ir.from_proto(make_model(nodes, {"x": ["N", 16]}, {"y": ["N", 8]}, inits))
    pass_ = ClusterPass(ClusterOptions(bits_fc=6, bits_per_layer={"W2": 2}))
    pass_(model)
    w1, w2 = (g.array() for g in find_weight_groups(model.graph))
    assert np.unique(w1).size == 63 and np.unique(w2).size == 3
    assert pass_.stats["layers"]["fc2"]["bits"] == 2
    glob = ClusterPass(ClusterOptions(bits_fc=6, bits_per_layer={"fc*": 3}))
    glob(ir.from_proto(make_model(nodes, {"x": ["N", 16]}, {"y": ["N", 8]}, inits)))
    assert {s["bits"] for s in glob.stats["layers"].values()} == {3}


def test_per_weight_bits_are_checked() -> None:
    with pytest.raises(ValueError, match="bits_per_layer 'W'"):
        ClusterOptions(bits_per_layer={"W": 0})
    with pytest.raises(ValueError, match="init must be one of"):
        ClusterOptions(init="kmeans++")  # type: ignore[arg-type]


def test_per_weight_bits_naming_no_layer_are_refused(rng: np.random.Generator) -> None:
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc")
    w = rng.standard_normal((16, 8)).astype(np.float32)
    model = ir.from_proto(make_model([node], {"x": ["N", 16]}, {"y": ["N", 8]}, {"W": w}))
    with pytest.raises(InputError, match="'V' matches no layer"):
        ClusterPass(ClusterOptions(bits_per_layer={"W": 3, "V": 3})).requires(model)


def test_compile_options_carry_per_weight_bits(tmp_path: Path, rng: np.random.Generator) -> None:
    w = rng.standard_normal((64, 64)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    src = save(make_model([node], {"x": [2, 64]}, {"y": [2, 64]}, {"W": w}), tmp_path / "m.onnx")
    options = dc_onnx.CompileOptions(
        prune=dc_onnx.PruneOptions(sparsity=0.0),
        cluster=dc_onnx.ClusterOptions(bits_per_layer={"W": 3}),
    )
    result = dc_onnx.compile(src, tmp_path / "m.dc.onnx", options)
    assert result.report.layers[0].codebook_size == 8  # 7 shared values + the zero


def test_importance_weighs_the_squared_error(rng: np.random.Generator) -> None:
    w = rng.standard_normal(20_000)
    plain = kmeans_1d(w, 15, "mse")
    ones = kmeans_1d(w, 15, "mse", importance=np.ones_like(w))
    error = _relative_error(w, plain[0][plain[1]])
    assert abs(_relative_error(w, ones[0][ones[1]]) - error) < 0.01 * error
    # Values that matter 100x more get finer centroids around them.
    important = w > 1.0
    weighted = kmeans_1d(w, 15, "mse", importance=np.where(important, 100.0, 1.0))
    before = _relative_error(w[important], plain[0][plain[1]][important])
    after = _relative_error(w[important], weighted[0][weighted[1]][important])
    assert after < 0.6 * before


def test_nearest_table_search_matches_binary_search(rng: np.random.Generator) -> None:
    values = (rng.standard_normal(1 << 18) * 1e-3).astype(np.float32)
    values[:8] = [0.0, -0.0, 1e-42, -1e-42, 3e38, -3e38, 1e-3, -1e-3]
    centroids = np.sort(rng.standard_normal(255) * 1e-3)
    bounds = (centroids[1:] + centroids[:-1]) / 2
    expected = np.searchsorted(bounds, values.astype(np.float64))
    assert np.array_equal(nearest(centroids, values), expected)
    assert np.array_equal(nearest(centroids, values.reshape(512, -1)), expected.reshape(512, -1))


def test_cli_takes_per_layer_bits_and_the_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    report = tmp_path / "report.json"
    code = main([
        "compile", str(source), "-o", str(tmp_path / "out.onnx"), "--sparsity", "0",
        "--bits-per-layer", "W1=2,fc[45]=3", "--init", "linear", "--report", str(report),
    ])  # fmt: skip
    assert code == 0
    layers = {layer["name"]: layer for layer in json.loads(report.read_text())["layers"]}
    assert layers["fc1"]["codebook_size"] == 4
    assert layers["fc4"]["codebook_size"] == layers["fc5"]["codebook_size"] == 8
    assert layers["fc2"]["codebook_size"] == 32  # the fc default, 5 bits
    with pytest.raises(SystemExit) as exit_:
        main(["compile", str(source), "--bits-per-layer", "W1=9"])
    assert exit_.value.code == 2
    assert "must be in 1..8" in capsys.readouterr().err


def test_quantize_edge_cases(rng: np.random.Generator) -> None:
    w = rng.standard_normal((8, 8)).astype(np.float32)
    one = quantize(w, 1)
    assert np.unique(one).size == 1 and np.isclose(one[0, 0], w.mean(), atol=1e-6)
    zeros = np.zeros((4, 4), np.float32)
    assert np.array_equal(quantize(zeros, 8, 0.5), zeros)
    importance = np.where(np.arange(64).reshape(8, 8) < 8, 100.0, 1.0)
    weighted = quantize(w, 3, sparsity=0.25, importance=importance)
    plain = quantize(w, 3, sparsity=0.25)
    assert np.array_equal(weighted == 0, plain == 0)
    assert _relative_error(w[0], weighted[0]) < _relative_error(w[0], plain[0])


def test_the_recipe_picks_the_start_unless_the_options_do() -> None:
    def start(recipe: str, cluster: ClusterOptions) -> str:
        options = dc_onnx.CompileOptions(recipe=recipe, cluster=cluster)
        data = object()  # the retraining recipe only checks that there is some
        passes = build_passes(options, data)  # type: ignore[arg-type]
        (cluster_pass,) = [p for p in passes if isinstance(p, ClusterPass)]
        return cluster_pass.init

    assert start("data-free", ClusterOptions()) == "mse"
    assert start("deep-compression", ClusterOptions()) == "linear"  # the paper's
    assert start("deep-compression", ClusterOptions(init="mse")) == "mse"
