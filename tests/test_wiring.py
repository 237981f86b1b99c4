"""Format version 3 wiring (docs/format.md, "Wiring"): one initializer holds the whole side
file and every node slices its streams from it; version 1-2 models still run unchanged."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from coverage_models import BUILDERS
from onnx import helper
from wiring_v2 import downgrade

import dc_onnx
from conftest import cnn_model, compile_model, make_model, mlp_model, run, save
from dc_onnx.codecs.container import ENTRY_SIZE, HEADER_SIZE, ContainerError, parse_header
from dc_onnx.codecs.schema import DOMAIN, HEADER_NAME
from dc_onnx.io import side_file_of
from dc_onnx.tools.decompile import decode_model


def _row_scaled() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A storage weight (read by Add) whose rows differ in scale: it takes row scales."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 96)) * np.exp(rng.standard_normal((64, 1)) * 2.5)).astype(
        np.float32
    )
    node = helper.make_node("Add", ["x", "W"], ["y"])
    model = make_model([node], {"x": [64, 96]}, {"y": [64, 96]}, {"W": w})
    return model, {"x": rng.standard_normal((64, 96)).astype(np.float32)}


def _cases() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(0)
    half, half_feeds, _ = BUILDERS["half_precision"]()
    return {
        "mlp": (mlp_model(), {"x": rng.standard_normal((4, 64)).astype(np.float32)}),
        "cnn": (cnn_model(), {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}),
        "half_precision": (half, half_feeds),
        "row_scaled": _row_scaled(),
    }


def test_a_version_3_model_has_one_side_file_initializer(tmp_path: Path) -> None:
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.8)
    model = onnx.load(str(compiled), load_external_data=False)
    external = [t for t in model.graph.initializer if t.external_data]
    assert [t.name for t in external] == [HEADER_NAME]
    info = {e.key: e.value for e in external[0].external_data}
    side = side_file_of(compiled)
    assert side is not None and info["location"] == side.name
    assert (int(info.get("offset", 0)), int(info["length"])) == (0, side.stat().st_size)
    nodes = [n for n in model.graph.node if n.domain == DOMAIN]
    assert len(nodes) == 5
    initializers = {t.name for t in model.graph.initializer}
    for node in nodes:
        # X, the side file, and only then (Gemm) empty stream slots before the bias.
        assert node.input[1] == HEADER_NAME and all(not i for i in node.input[2:6])
        assert all(i in initializers for i in node.input[6:])  # the bias alone
    toc = parse_header(side.read_bytes())
    assert min(e.offset for e in toc) == HEADER_SIZE + ENTRY_SIZE * len(toc)  # no padding


def test_single_file_embeds_the_whole_side_file(tmp_path: Path) -> None:
    source = save(mlp_model(), tmp_path / "m.onnx")
    out = tmp_path / "m.dc.onnx"
    dc_onnx.compile(source, out, dc_onnx.CompileOptions(sparsity=0.8, single_file=True))
    assert not list(tmp_path.glob("*.dcw"))
    model = onnx.load(str(out))
    (header,) = [t for t in model.graph.initializer if t.name == HEADER_NAME]
    toc = parse_header(header.raw_data)
    assert max(e.offset + e.nbytes for e in toc) == len(header.raw_data)
    x = np.ones((2, 64), np.float32)
    (dense,) = run(decode_model(out), {"x": x})
    np.testing.assert_allclose(run(out, {"x": x})[0], dense, rtol=1e-5, atol=1e-5)


def _weights(compiled: Path) -> dict[str, bytes]:
    """Every weight of the reference decoder's dense model, as raw bytes."""
    return {t.name: t.raw_data for t in decode_model(compiled).graph.initializer}


@pytest.mark.parametrize("case", ["mlp", "cnn", "half_precision", "row_scaled"])
def test_a_version_2_model_runs_with_the_same_outputs(case: str, tmp_path: Path) -> None:
    model, feeds = _cases()[case]
    compiled = compile_model(model, tmp_path, sparsity=0.5, quality=0.0, bits_fc=8)
    if case == "row_scaled":  # the fifth stream, row scales, takes input 5 in version 2
        nodes = onnx.load(str(compiled), load_external_data=False).graph.node
        assert [len(a.ints) for n in nodes for a in n.attribute if a.name == "stream_ids"] == [5]
    v3 = run(compiled, feeds)
    v3_decoded = _weights(compiled)
    downgrade(compiled, 2)
    proto = onnx.load(str(compiled), load_external_data=False)
    assert len([t for t in proto.graph.initializer if t.external_data]) > 1  # one per stream
    for before, after in zip(v3, run(compiled, feeds), strict=True):
        assert before.tobytes() == after.tobytes()
    assert _weights(compiled) == v3_decoded  # the reference decoder reads both wirings


def _reseal(data: bytearray) -> None:
    """Rewrite the TOC's CRC-32 after an edit of the TOC."""
    n = int.from_bytes(data[12:16], "little")
    crc = zlib.crc32(bytes(data[HEADER_SIZE : HEADER_SIZE + ENTRY_SIZE * n]))
    data[16:20] = crc.to_bytes(4, "little")


def test_slicing_refuses_a_toc_entry_out_of_the_buffer(tmp_path: Path) -> None:
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.8)
    side = side_file_of(compiled)
    assert side is not None
    data = bytearray(side.read_bytes())
    toc = parse_header(bytes(data))
    last = max(range(len(toc)), key=lambda i: toc[i].offset)
    entry = HEADER_SIZE + ENTRY_SIZE * last
    data[entry + 8 : entry + 16] = (toc[last].nbytes + 1).to_bytes(8, "little")  # one too long
    _reseal(data)
    side.write_bytes(bytes(data))
    with pytest.raises(Exception, match=r"dc_onnx: layer '.*beyond the side file"):
        run(compiled, {"x": np.ones((1, 64), np.float32)})
    with pytest.raises(ContainerError, match="beyond the end of the side file"):
        decode_model(compiled)


def test_a_version_3_node_that_names_a_stream_input_is_refused(tmp_path: Path) -> None:
    compiled = compile_model(mlp_model(), tmp_path, sparsity=0.8)
    model = onnx.load(str(compiled), load_external_data=False)
    node = next(n for n in model.graph.node if n.name == "fc3")  # MatMul: X, header
    node.input.append("b1")  # a float initializer where the codebook input would go
    onnx.save(model, str(compiled))
    with pytest.raises(Exception, match=r"layer 'fc3'.*must be empty"):
        run(compiled, {"x": np.ones((1, 64), np.float32)})
    with pytest.raises(ContainerError, match=r"layer 'fc3'.*names a codebook input"):
        decode_model(compiled)
