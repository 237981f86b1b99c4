"""Every kernel path (chosen by batch size, panel width, codebook size, conv geometry)
against the reference decoder, and the same bits whatever the thread count."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper
from onnx.numpy_helper import to_array

import dc_onnx
from conftest import compile_model, make_model, run
from dc_onnx.codecs import decode_codes
from dc_onnx.layers import annotate_rows, find_weight_groups
from dc_onnx.passes.lower import LowerOptions, LowerPass
from dc_onnx.pipeline import run_passes
from dc_onnx.tools.bench import DECODE_STATS_ENV, read_decode_stats
from dc_onnx.tools.decompile import decode_model, read_encoded_weight
from dc_onnx.writer import save_compiled

# Batch 1-8: the grouped form (cluster_rows.h; 1 scalar, 2-8 in vectors of 4 or 8
# columns); 9 and up: panels of 16 (V=1), 32, 48, 64 columns, and 70 = 64 + 16.
FC_BATCHES = [1, 3, 4, 8, 9, 20, 40, 64, 70]


def _check(compiled: Path, x: np.ndarray) -> None:
    (expected,) = run(decode_model(compiled), {"x": x})
    one, two = (run(compiled, {"x": x}, threads)[0] for threads in (1, 2))
    np.testing.assert_allclose(one, expected, rtol=1e-5, atol=1e-4)
    assert one.tobytes() == two.tobytes()  # no dependence on the thread count


@pytest.fixture(scope="module", params=[3, 5, 8], ids=["codebook8", "codebook32", "codebook256"])
def fc_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # K = 300 gives rows of ~90 non-zeros: full 16-lane groups plus a tail.
    w = np.random.default_rng(0).standard_normal((300, 70)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc")
    model = make_model([node], {"x": ["N", 300]}, {"y": ["N", 70]}, {"W": w})
    out = tmp_path_factory.mktemp("fc")
    return compile_model(model, out, sparsity=0.7, bits_fc=request.param)


@pytest.mark.parametrize("batch", FC_BATCHES)
def test_fc_paths(fc_model: Path, batch: int) -> None:
    x = np.random.default_rng(batch).standard_normal((batch, 300)).astype(np.float32)
    _check(fc_model, x)


def test_panels_are_built_once_whatever_runs_first(fc_model: Path) -> None:
    # The panels' CSR (9+ rows) is derived from the grouped form by the first Run that
    # needs it (runtime_ops/src/sparse_matmul.h): Runs racing to build it, and Runs of
    # one row before and after, all get the bits of sessions that never shared anything.
    rng = np.random.default_rng(7)
    wide = rng.standard_normal((20, 300)).astype(np.float32)
    one = rng.standard_normal((1, 300)).astype(np.float32)
    expected_wide, expected_one = run(fc_model, {"x": wide})[0], run(fc_model, {"x": one})[0]
    session = dc_onnx.InferenceSession(str(fc_model))
    assert session.run(None, {"x": one})[0].tobytes() == expected_one.tobytes()
    with ThreadPoolExecutor(4) as pool:  # ORT releases the GIL during Run
        outs = list(pool.map(lambda _: session.run(None, {"x": wide})[0], range(8)))
    assert all(o.tobytes() == expected_wide.tobytes() for o in outs)
    assert session.run(None, {"x": one})[0].tobytes() == expected_one.tobytes()


def _outputs_with_isa(model: Path, xs: list[np.ndarray], isa: str, tmp_path: Path) -> list[bytes]:
    """The model's outputs for each input, in a fresh process with DC_ONNX_ISA=isa
    (the switch is read once per process); checks the path the library reports."""
    np.savez(tmp_path / "xs.npz", *xs)
    out = tmp_path / f"y_{isa}.npz"
    script = (
        "import sys, numpy as np, dc_onnx;"
        "s = dc_onnx.InferenceSession(sys.argv[1]);"
        "xs = np.load(sys.argv[2]);"
        "np.savez(sys.argv[3], *[s.run(None, {'x': xs[k]})[0] for k in xs.files])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DC_ONNX_SCALAR_DOT", "DC_ONNX_ISA")}
    env["DC_ONNX_ISA"] = isa
    stats = tmp_path / f"stats_{isa}.jsonl"
    env[DECODE_STATS_ENV] = str(stats)
    args = [sys.executable, "-c", script, str(model), str(tmp_path / "xs.npz"), str(out)]
    subprocess.run(args, env=env, check=True, cwd=tmp_path)  # not the source tree
    (record,) = read_decode_stats(stats)
    # A request above the CPU gets the CPU's widest path, never more.
    order = ["scalar", "avx2", "avx512"]
    assert order.index(record["isa"]) <= order.index(isa)
    if isa == "scalar":
        assert record["isa"] == "scalar"
    ys = np.load(out)
    return [ys[k].tobytes() for k in ys.files]


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_every_isa_gives_the_scalar_bits(fc_model: Path, isa: str, tmp_path: Path) -> None:
    # Every FC path (dots and panels of each width) forced to `isa` against the baseline.
    # A request above the CPU runs the CPU's widest path, so on a machine without AVX-512
    # both parameters test AVX2, and without AVX2 both are the baseline against itself.
    xs = [np.random.default_rng(b).standard_normal((b, 300)).astype(np.float32) for b in FC_BATCHES]
    scalar = _outputs_with_isa(fc_model, xs, "scalar", tmp_path)
    assert _outputs_with_isa(fc_model, xs, isa, tmp_path) == scalar


# K-major copies of at least 256K floats run in chunks of 8-row blocks on the session's
# threads (sparse_matmul.cc, KMajorCopy): K = 8194 at 64 columns gives five chunks, the
# last of 2 rows. Each layout of X: rows to transpose (Gemm), already K-major (transA),
# and a batch of K-major matrices (MatMul W @ X).
WIDE_K = 8194


def _wide_k_model(layout: str, tmp_path: Path) -> tuple[Path, np.ndarray]:
    # Scaled to outputs of order 1, where _check's tolerance fits sums over 8194 products.
    w = (np.random.default_rng(3).standard_normal((WIDE_K, 24)) / np.sqrt(WIDE_K)).astype(
        np.float32
    )
    rng = np.random.default_rng(4)
    if layout == "matmul-weight-first":
        node = helper.make_node("MatMul", ["W", "x"], ["y"], name="mm")
        x = rng.standard_normal((3, WIDE_K, 20)).astype(np.float32)
        model = make_model([node], {"x": [3, WIDE_K, 20]}, {"y": [3, 24, 20]}, {"W": w.T.copy()})
    else:
        trans_a = int(layout == "gemm-transA")
        node = helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transA=trans_a)
        x = rng.standard_normal((WIDE_K, 64) if trans_a else (64, WIDE_K)).astype(np.float32)
        model = make_model([node], {"x": list(x.shape)}, {"y": [64, 24]}, {"W": w})
    return compile_model(model, tmp_path, sparsity=0.7, bits_fc=5), x


@pytest.mark.parametrize("layout", ["gemm", "gemm-transA", "matmul-weight-first"])
def test_wide_k_copies_in_chunks(layout: str, tmp_path: Path) -> None:
    compiled, x = _wide_k_model(layout, tmp_path)
    _check(compiled, x)
    if layout == "gemm":  # the scalar transpose (tiles) against the vector one
        scalar = _outputs_with_isa(compiled, [x], "scalar", tmp_path)
        assert _outputs_with_isa(compiled, [x], "avx512", tmp_path) == scalar


# Convolutions: panels from 16 to 128 wide over planes of several widths, dilation,
# groups, asymmetric pads; strides (phase planes), with dilation, and SAME_UPPER with a
# stride above the kernel (negative total pad).
CONVS = [
    dict(shape=(6, 4, 3, 3), hw=(5, 5), pads=[1, 1, 1, 1]),
    dict(shape=(8, 2, 3, 3), hw=(13, 13), pads=[1, 1, 1, 1], group=2),
    dict(shape=(4, 3, 5, 5), hw=(27, 27), pads=[2, 2, 2, 2]),
    dict(shape=(5, 3, 3, 2), hw=(9, 20), pads=[0, 2, 1, 0], dilations=[2, 3]),
    dict(shape=(4, 2, 1, 1), hw=(7, 40)),
    dict(shape=(6, 2, 5), hw=(33,), pads=[2, 1]),
    dict(shape=(4, 3, 11, 11), hw=(35, 35), strides=[4, 4]),
    dict(shape=(4, 2, 3, 3), hw=(17, 12), strides=[2, 3], dilations=[2, 1], pads=[1, 0, 2, 1]),
    dict(shape=(3, 2, 2, 2), hw=(9, 10), strides=[3, 3], auto_pad="SAME_UPPER"),
    dict(shape=(3, 2, 3), hw=(20,), strides=[2], pads=[1, 1]),
    # A column (kernel [k, 1] over width 1: magika's), computed as a row.
    dict(shape=(6, 4, 5, 1), hw=(40, 1), pads=[2, 0, 2, 0]),
    # Above half dense: ORT's own Conv on the decoded weight, with and without bias.
    dict(shape=(4, 3, 5, 5), hw=(19, 19), strides=[2, 2], pads=[1, 1, 1, 1], sparsity=0.2),
    dict(shape=(6, 2, 3, 3), hw=(9, 9), group=2, bias=True, sparsity=0.3),
    dict(shape=(4, 2, 3), hw=(11,), dilations=[2], bias=True, sparsity=0.1),
]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("conv", CONVS, ids=[str(c["shape"]) for c in CONVS])
def test_conv_paths(conv: dict, batch: int, tmp_path: Path) -> None:  # type: ignore[type-arg]
    rng = np.random.default_rng(len(conv["shape"]) * 7 + batch)
    shape = conv["shape"]
    w = rng.standard_normal(shape).astype(np.float32)
    group = conv.get("group", 1)
    attrs = {k: conv[k] for k in ("pads", "dilations", "strides", "auto_pad") if k in conv}
    inits = {"W": w}
    if conv.get("bias"):
        inits["B"] = rng.standard_normal(shape[0]).astype(np.float32)
    node = helper.make_node("Conv", ["x", *inits], ["y"], name="conv", group=group, **attrs)
    channels = shape[1] * group
    y_shape = ["N", shape[0], *(f"s{i}" for i in range(len(conv["hw"])))]
    model = make_model([node], {"x": ["N", channels, *conv["hw"]]}, {"y": y_shape}, inits)
    # Both kernel paths, whatever the lower pass would pick (conv_dense_density above 1).
    compiled = compile_model(
        model, tmp_path, sparsity=conv.get("sparsity", 0.6), bits_conv=8, conv_dense_density=2.0
    )
    x = rng.standard_normal((batch, channels, *conv["hw"])).astype(np.float32)
    _check(compiled, x)


_RUN_SCRIPT = (
    "import sys, numpy as np, dc_onnx;"
    "s = dc_onnx.InferenceSession(sys.argv[1]);"
    "np.save(sys.argv[3], s.run(None, {'x': np.load(sys.argv[2])})[0])"
)


def _run_with_isa(model: Path, x: np.ndarray, isa: str, tmp: Path) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    np.save(tmp / "x.npy", x)
    env = {**os.environ, "DC_ONNX_ISA": isa}
    out = tmp / f"y_{isa}.npy"
    args = [sys.executable, "-c", _RUN_SCRIPT, str(model), str(tmp / "x.npy"), str(out)]
    return subprocess.run(args, env=env, cwd=tmp, capture_output=True, text=True)


# Sparse conv panels of every width class: 16 (4 sets), 32 (2 sets), 48-128 (chunked on
# AVX2 and SSE2), with strides and groups.
# The last two are large enough to be computed in bands of output rows (the scratch bound,
# runtime_ops/src/sparse_conv.h): 2 bands, and 3 with stride 2 (phase planes per band).
BANDED_CONVS = [
    dict(shape=(16, 16, 3, 3), hw=(200, 200), pads=[1, 1, 1, 1]),
    dict(shape=(16, 16, 3, 3), hw=(401, 400), pads=[1, 0, 1, 1], strides=[2, 2]),
]
# Panel edges of the per-ISA loops (AVX2: 112 outputs per panel, AVX-512 and the
# baseline: 128; each output's chain must not depend on where a panel ends). Flat
# lengths (out_h - 1) * row_width + out_w (row_width = out_w + kw - 1 rounded up to 16):
PANEL_EDGE_CONVS = [
    dict(shape=(5, 3, 1, 3), hw=(1, 113), pads=[0, 1, 0, 1]),  # one row: 113 = 112 + 1
    dict(shape=(5, 3, 3), hw=(112,), pads=[1, 1]),  # 1-D: exactly one AVX2 panel
    dict(shape=(4, 2, 3, 1), hw=(9, 16)),  # 7 rows of 16: 112
    dict(shape=(4, 2, 3, 1), hw=(10, 16)),  # 8 rows of 16: 128 = 112 + 16
    dict(shape=(4, 2, 3, 3), hw=(9, 17), pads=[1, 1, 1, 1]),  # odd width, rows of 32: 273
    dict(shape=(3, 2, 3, 3), hw=(3, 7)),  # one output row of 5: a single 16-float group
    dict(shape=(6, 2, 3, 3), hw=(11, 9), pads=[1, 0, 1, 2], group=3),
    dict(shape=(4, 3, 3, 3), hw=(23, 29), strides=[2, 3], dilations=[2, 2], pads=[2, 1, 0, 3]),
]
# Tap keys wider than 16 bits (runtime_ops/src/sparse_conv.h, ConvTaps): 520 input
# channels << 7 tap bits (11x11 = 121 taps) pass 65536; every other conv here has 16-bit keys.
WIDE_KEY_CONV = dict(shape=(2, 520, 11, 11), hw=(11, 12))
ISA_CONVS = [
    WIDE_KEY_CONV,
    CONVS[0],
    CONVS[2],
    CONVS[4],
    CONVS[6],
    CONVS[7],
    CONVS[10],
    *PANEL_EDGE_CONVS,
    *BANDED_CONVS,
]


def _sparse_conv(conv: dict, tmp_path: Path, batch: int = 2) -> tuple[Path, np.ndarray]:  # type: ignore[type-arg]
    """`conv` compiled for the sparse kernel (60% pruned, 8 bits), and an input."""
    rng = np.random.default_rng(3)
    shape = conv["shape"]
    w = rng.standard_normal(shape).astype(np.float32)
    attrs = {k: conv[k] for k in ("pads", "dilations", "strides", "auto_pad") if k in conv}
    node = helper.make_node(
        "Conv", ["x", "W"], ["y"], name="conv", group=conv.get("group", 1), **attrs
    )
    y_shape = ["N", shape[0], *(f"s{i}" for i in range(len(conv["hw"])))]
    channels = shape[1] * conv.get("group", 1)
    model = make_model([node], {"x": ["N", channels, *conv["hw"]]}, {"y": y_shape}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.6, bits_conv=8, conv_dense_density=2.0)
    x = rng.standard_normal((batch, channels, *conv["hw"])).astype(np.float32)
    return compiled, x


@pytest.mark.parametrize("conv", ISA_CONVS, ids=[str(c["shape"]) for c in ISA_CONVS])
def test_conv_isa_paths_give_the_same_bits(conv: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    compiled, x = _sparse_conv(conv, tmp_path)
    outputs = {}
    for isa in ("scalar", "avx2", "avx512"):  # capped to what the CPU has (simd.h)
        done = _run_with_isa(compiled, x, isa, tmp_path)
        assert done.returncode == 0, done.stderr
        outputs[isa] = np.load(tmp_path / f"y_{isa}.npy")
    (expected,) = run(decode_model(compiled), {"x": x})
    # Rounding grows with the chain (WIDE_KEY_CONV sums ~25K products): atol scales
    # with the outputs; a wrong tap would be off by about the outputs' size.
    atol = 1e-4 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(outputs["scalar"], expected, rtol=1e-5, atol=atol)
    for isa, y in outputs.items():
        assert y.tobytes() == outputs["scalar"].tobytes(), isa


@pytest.mark.parametrize("batch", [1, 6])
def test_fused_activations_give_the_same_bits_on_every_isa(batch: int, tmp_path: Path) -> None:
    # Epilogues with a fused LeakyRelu (sparse conv) and Clip (FC dots at batch 1, panels
    # at 6) on each path, against the unfused graph (the activations as ORT nodes).
    rng = np.random.default_rng(5)
    inits = {
        "W1": rng.standard_normal((6, 4, 3, 3)).astype(np.float32),
        "W2": (rng.standard_normal((6 * 9 * 9, 12)) * 0.1).astype(np.float32),
        "lo": np.array(-0.1, np.float32),
        "hi": np.array(0.3, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c"], name="conv"),
        helper.make_node("LeakyRelu", ["c"], ["r"], alpha=0.3),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "W2"], ["g"], name="fc"),
        helper.make_node("Clip", ["g", "lo", "hi"], ["y"]),
    ]
    model = make_model(nodes, {"x": ["N", 4, 11, 11]}, {"y": ["N", 12]}, inits)
    options = dict(sparsity=0.6, bits_conv=8, bits_fc=5, conv_dense_density=2.0)
    fused = compile_model(model, tmp_path, "fused", **options)
    unfused = compile_model(model, tmp_path, "unfused", keep_activations=True, **options)
    x = rng.standard_normal((batch, 4, 11, 11)).astype(np.float32)
    (expected,) = run(unfused, {"x": x})
    for isa in ("scalar", "avx2", "avx512"):  # capped to what the CPU has (simd.h)
        done = _run_with_isa(fused, x, isa, tmp_path)
        assert done.returncode == 0, done.stderr
        assert np.load(tmp_path / f"y_{isa}.npy").tobytes() == expected.tobytes(), isa


# 2-D, no bias, stride 1: outputs index the input directly. The third has a single
# output row of 5, a 16-float panel, which the FC panels would split over 4 sums.
CHAIN_CONVS = [
    dict(shape=(3, 3, 3, 3), hw=(6, 9), pads=[1, 1, 1, 1]),
    dict(shape=(2, 4, 2, 3), hw=(5, 7), pads=[0, 2, 1, 0], dilations=[2, 1]),
    dict(shape=(3, 4, 3, 3), hw=(3, 7)),
    dict(shape=(3, 4, 1, 1), hw=(5, 7)),  # pointwise: computed on the image as one row
    WIDE_KEY_CONV,
]


@pytest.mark.parametrize("conv", CHAIN_CONVS, ids=[str(c["shape"]) for c in CHAIN_CONVS])
def test_sparse_conv_is_one_chain_per_output(conv: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    # The documented sum (runtime_ops/README.md, "Instruction sets"): each output is
    # (((0 + w_1 x_1) + w_2 x_2) + ...) over its non-zero weights in (input channel, ky,
    # kx) order, every product and sum rounded to float32 (numpy's float32 scalars round
    # each operation the same way). Bit for bit, whatever the panel layout.
    compiled, x = _sparse_conv(conv, tmp_path, batch=1)
    dense = decode_model(compiled)
    (w,) = (to_array(t) for t in dense.graph.initializer if t.dims == list(conv["shape"]))
    (y,) = run(compiled, {"x": x})
    m, c, kh, kw = w.shape
    top, left = conv.get("pads", [0, 0, 0, 0])[:2]
    dh, dw = conv.get("dilations", [1, 1])
    taps = [(ci, ky, kx) for ci in range(c) for ky in range(kh) for kx in range(kw)]
    for o in range(m):
        for oh in range(y.shape[2]):
            for ow in range(y.shape[3]):
                acc = np.float32(0)
                for ci, ky, kx in taps:
                    i, j = oh + ky * dh - top, ow + kx * dw - left
                    if w[o, ci, ky, kx] == 0 or not (0 <= i < x.shape[2] and 0 <= j < x.shape[3]):
                        continue  # absent weight, or padding (adds +-0 to a sum that is never -0)
                    acc = np.float32(acc + np.float32(w[o, ci, ky, kx] * x[0, ci, i, j]))
                assert acc.tobytes() == y[0, o, oh, ow].tobytes(), (o, oh, ow)


def test_conv_runs_of_many_image_sizes_share_one_session(tmp_path: Path) -> None:
    # The input width sets the input-channel block size, and the weight keeps the block
    # starts of the latest four sizes (sparse_conv.h, BlockStartsCache). These six widths
    # give six sizes on AVX-512 and on AVX2 (blocks of 16-4 and 48-14 channels): run
    # twice round, and from racing threads, against a fresh session per width.
    rng = np.random.default_rng(11)
    w = rng.standard_normal((4, 64, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])
    model = make_model([node], {"x": [1, 64, "H", "W"]}, {"y": [1, 4, "H", "W"]}, {"W": w})
    compiled = compile_model(model, tmp_path, sparsity=0.6, bits_conv=8, conv_dense_density=2.0)
    xs = [rng.standard_normal((1, 64, 6, w)).astype(np.float32) for w in (5, 17, 45, 70, 100, 140)]
    fresh = [run(compiled, {"x": x})[0].tobytes() for x in xs]
    session = dc_onnx.InferenceSession(str(compiled))
    assert [session.run(None, {"x": x})[0].tobytes() for x in xs * 2] == fresh * 2
    with ThreadPoolExecutor(4) as pool:  # ORT releases the GIL during Run
        outs = list(pool.map(lambda x: session.run(None, {"x": x})[0].tobytes(), xs * 3))
    assert outs == fresh * 3


# The few-rows FC form (runtime_ops/src/cluster_rows.h): per weight row, the non-zeros
# of each code are cut into pieces of 8, 4, 2 and 1 (some halved to fill empty lanes),
# pieces of one size go 8 to a group, and the sum is fixed by that layout. A Python copy
# of the layout and the sum, float32 operation by operation, must give the library's
# bits at every batch size up to 8, on every ISA path and thread count.
_PIECE, _LANES, _GROUP_WORK = 8, 8, 24.0


def _piece_cost(count: int, size: int) -> float:
    return -(-count // _LANES) * (size * _LANES + _GROUP_WORK)


def _pieces(codes: np.ndarray) -> list[list[tuple[int, np.ndarray]]]:
    """One stored row's pieces (code, columns) by size 8, 4, 2, 1, in group order."""
    cols = np.flatnonzero(codes)
    by_size: list[list[tuple[int, np.ndarray]]] = [[], [], [], []]
    for k in np.unique(codes[cols]):
        run_ = cols[codes[cols] == k]  # columns ascending
        rest = run_.size % _PIECE
        by_size[0] += [(int(k), run_[o : o + _PIECE]) for o in range(0, run_.size - rest, _PIECE)]
        o = run_.size - rest
        for i, size in ((1, 4), (2, 2), (3, 1)):
            if rest & size:
                by_size[i].append((int(k), run_[o : o + size]))
                o += size
    for i, size in enumerate((8, 4, 2)):
        big, small = by_size[i], by_size[i + 1]
        best, best_cost = 0, _piece_cost(len(big), size) + _piece_cost(len(small), size // 2)
        for s in range(1, len(big) + 1):
            cost = _piece_cost(len(big) - s, size) + _piece_cost(len(small) + 2 * s, size // 2)
            if cost < best_cost:
                best, best_cost = s, cost
        for _ in range(best):
            k, piece = big.pop()
            small += [(k, piece[: size // 2]), (k, piece[size // 2 :])]
        small.sort(key=lambda p: (p[0], int(p[1][0])))
    return by_size


def _documented_sum(codes: np.ndarray, codebook: np.ndarray, x: np.ndarray) -> np.float32:
    f = np.float32
    a = [f(0)] * _LANES
    for pieces in _pieces(codes):
        for g in range(0, len(pieces), _LANES):
            for lane, (k, piece) in enumerate(pieces[g : g + _LANES]):
                s = f(x[piece[0]])
                for c in piece[1:]:
                    s = f(s + x[c])
                a[lane] = f(a[lane] + f(f(codebook[k]) * s))  # empty lanes add +0: no change
    for half in (4, 2):
        a = [f(a[lane] + a[lane + half]) for lane in range(half)] + a[half:]
    return f(a[0] + a[1])


def _few_rows_model(
    tmp: Path, k: int, scaled: bool, cols: int = 300
) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray | None]:
    """MatMul X @ W over a stored [rows, cols] weight with rows of 0, 1, 2, 7, 8, 9, 15, 16,
    17, 24, 33, 64, 100 and 150 non-zeros and k codebook values (each row with its scale
    if `scaled`): the model, the stored codes, the codebook and the scales as decoded."""
    rng = np.random.default_rng(k)
    lengths = [0, 1, 2, 7, 8, 9, 15, 16, 17, 24, 33, 64, 100, 150]
    values = np.unique(rng.standard_normal(k).astype(np.float32))
    codes = np.zeros((len(lengths), cols), np.int64)
    for r, n in enumerate(lengths):
        # Few codes in some rows (long runs: pieces of 8 and halving), many in others.
        used = rng.integers(1, values.size + 1, size=1 + r % 3 if r % 2 else values.size)
        codes[r, rng.choice(cols, n, replace=False)] = rng.choice(used, n)
    scales = np.exp(rng.standard_normal(len(lengths)) * 2).astype(np.float32)
    path = tmp / f"few_{k}_{scaled}_{cols}.dc.onnx"
    return matmul_from_codes(path, codes, values, scales if scaled else None)


def matmul_from_codes(
    path: Path, codes: np.ndarray, values: np.ndarray, scales: np.ndarray | None = None
) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray | None]:
    """MatMul X @ W compiled to `path` as a kernel, W [rows, cols] = values[codes - 1]
    (code 0: absent) times the row scales if given: the model, the stored codes, the
    codebook and the scales as decoded."""
    rows, cols = codes.shape
    full = np.concatenate([[0.0], values]).astype(np.float32)
    stored = full[codes] * (scales[:, None] if scales is not None else np.float32(1))
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    inits = {"W": stored.T.copy()}
    model = make_model([node], {"x": ["B", cols]}, {"y": ["B", rows]}, inits)
    ir_model = ir.from_proto(model)
    if scales is not None:
        (group,) = find_weight_groups(ir_model.graph)
        annotate_rows(group.weight, scales, values)
    compiled, _ = run_passes(ir_model, [LowerPass(LowerOptions(5, 5, fc_dense_density=2.0))])
    save_compiled(compiled, path)
    proto = onnx.load(str(path))
    (op,) = [n for n in proto.graph.node if n.op_type == "CompressedMatMul"]
    tensors = {t.name: t for t in proto.graph.initializer}
    encoded, (n_rows, width) = read_encoded_weight(op, tensors)
    stored_codes = decode_codes(encoded, n_rows * width).reshape(n_rows, width)
    return path, stored_codes, encoded.codebook, encoded.row_scales


@pytest.mark.parametrize(
    ("k", "scaled", "cols"),
    [
        *((k, scaled, 300) for k in (1, 2, 31, 255) for scaled in (False, True)),
        (31, False, 70000),  # K >= 65536: 32-bit indices
    ],
)
def test_few_rows_follow_the_documented_sum(
    k: int, scaled: bool, cols: int, tmp_path: Path
) -> None:
    path, codes, codebook, scales = _few_rows_model(tmp_path, k, scaled, cols)
    assert (scales is not None) == scaled
    rng = np.random.default_rng(100 + k)
    xs = [rng.standard_normal((b, codes.shape[1])).astype(np.float32) for b in (1, 2, 3, 5, 8, 9)]
    for x in xs:
        one, two = (run(path, {"x": x}, threads)[0] for threads in (1, 2))
        assert one.tobytes() == two.tobytes()
        if x.shape[0] > 8:  # panels (w_times_kmajor): their own order
            continue
        for m in range(x.shape[0]):
            for n in range(codes.shape[0]):
                y = _documented_sum(codes[n], codebook, x[m])
                if scales is not None:
                    y = np.float32(y * scales[n])
                assert y.tobytes() == one[m, n].tobytes(), (x.shape[0], m, n)
    scalar = _outputs_with_isa(path, xs, "scalar", tmp_path)
    assert _outputs_with_isa(path, xs, "avx2", tmp_path) == scalar
    assert _outputs_with_isa(path, xs, "avx512", tmp_path) == scalar


def test_few_rows_pass_non_finite_inputs_as_ieee(tmp_path: Path) -> None:
    # An Inf meeting a stored weight gives +-Inf (or NaN where signs meet), an absent one
    # NaN; empty lanes read a zero of their own, never an input.
    path, codes, _, _ = _few_rows_model(tmp_path, 31, False)
    x = np.random.default_rng(1).standard_normal((3, codes.shape[1])).astype(np.float32)
    x[0, 5] = np.inf
    x[2, 17] = np.nan
    (y,) = run(path, {"x": x})
    (expected,) = run(decode_model(path), {"x": x})
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
