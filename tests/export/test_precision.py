"""The shipped model's numeric form: fp16-stored weights, the timed choice, and the export's use of both."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_TEACHER, read_manifest, run_cli

pytestmark = pytest.mark.export

onnx = pytest.importorskip("onnx", reason="export tests need the [export] extra")


def _matmul_model(path, weights: dict[str, np.ndarray]) -> None:
    """x (1 x 64) -> x @ W1 + b -> @ W2 (1 x k): a graph small enough to know every initializer."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("MatMul", ["hb", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weights["W2"].shape[1]])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _run(path, x: np.ndarray, optimized=None) -> np.ndarray:
    import onnxruntime as ort

    from edge_search.core.encoder import session_options

    opts = session_options(1)
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_fp16_storage_rounds_large_weights_and_leaves_the_rest(tmp_path):
    from onnx import TensorProto

    from edge_search_export.precision import store_fp16

    rng = np.random.default_rng(0)
    w1, b, w2 = rng.standard_normal((64, 32)), rng.standard_normal(32), rng.standard_normal((32, 32)) * 0.1
    w2[3, 4] = 1e5  # beyond float16's 65504: W2 would become inf, so it stays float32
    _matmul_model(tmp_path / "fp32.onnx", {"W1": w1, "b": b, "W2": w2})
    info = store_fp16(tmp_path / "fp32.onnx", tmp_path / "fp16.onnx")
    assert info["weights_fp16"] == 64 * 32 and info["kept_fp32"] == ["W2"]
    types = {i.name: i.data_type for i in onnx.load(str(tmp_path / "fp16.onnx")).graph.initializer}
    # W1 (2048 elements) as float16; the bias (32 < 1024) and the out-of-range W2 as they were
    assert types == {"W1.fp16": TensorProto.FLOAT16, "b": TensorProto.FLOAT, "W2": TensorProto.FLOAT}
    x = rng.standard_normal((1, 64)).astype(np.float32)
    got = _run(tmp_path / "fp16.onnx", x)
    want = (x @ w1.astype(np.float16).astype(np.float32) + b.astype(np.float32)) @ w2.astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-2)  # exactly the rounded weights, in float32
    assert np.isfinite(got).all() and not np.allclose(got, _run(tmp_path / "fp32.onnx", x), rtol=0, atol=1e-6)


def test_fp16_model_computes_in_fp32_after_onnxruntime_folds_the_casts(tmp_path):
    import torch

    from edge_search.core.encoder import OnnxEncoder
    from edge_search_export.onnx_export import INPUT, OUTPUT, export_onnx
    from edge_search_export.precision import store_fp16
    from edge_search_export.student import Embedder, build_student

    torch.manual_seed(0)
    export_onnx(Embedder(build_student("mobilenetv3_small_050", 64, 64)), (64, 64), tmp_path / "fp32.onnx")
    store_fp16(tmp_path / "fp32.onnx", tmp_path / "fp16.onnx")
    full, half = (tmp_path / "fp32.onnx").stat().st_size, (tmp_path / "fp16.onnx").stat().st_size
    assert half < 0.6 * full
    x = np.random.default_rng(1).standard_normal((4, 3, 64, 64)).astype(np.float32)
    a, b = (OnnxEncoder(tmp_path / f"{p}.onnx", input_name=INPUT, output_name=OUTPUT, threads=1).embed(x)
            for p in ("fp32", "fp16"))
    assert (a * b).sum(1).min() > 0.999 and not np.array_equal(a, b)
    # what onnxruntime runs: no cast left of the ones the fp16 file added (they became float32 weights)
    import onnxruntime as ort

    from edge_search.core.encoder import session_options

    casts = {}
    for p in ("fp32", "fp16"):
        opts = session_options(1)
        opts.optimized_model_filepath = str(tmp_path / f"{p}.optimized.onnx")
        ort.InferenceSession(str(tmp_path / f"{p}.onnx"), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(tmp_path / f"{p}.optimized.onnx")).graph
        casts[p] = sum(n.op_type == "Cast" for n in graph.node)
    added = sum(n.op_type == "Cast" for n in onnx.load(str(tmp_path / "fp16.onnx")).graph.node) - \
        sum(n.op_type == "Cast" for n in onnx.load(str(tmp_path / "fp32.onnx")).graph.node)
    assert added > 10 and casts["fp16"] == casts["fp32"]


def test_a_graph_with_no_large_weight_is_refused(tmp_path):
    from edge_search.errors import ExportError
    from edge_search_export.precision import store_fp16

    rng = np.random.default_rng(0)
    # W1 is large but beyond float16's range, b and W2 (512 elements) are small
    _matmul_model(tmp_path / "small.onnx", {"W1": np.full((64, 32), 1e6), "b": np.zeros(32),
                                            "W2": rng.standard_normal((32, 16))})
    with pytest.raises(ExportError, match="small.onnx: no float weight"):
        store_fp16(tmp_path / "small.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def _fig(ms: float, size: int) -> dict:
    return {"ms_p50": ms, "bytes": size}


@pytest.mark.parametrize("figures, passes, want", [
    ({"int8": _fig(7.0, 2_000_000), "fp16": _fig(3.0, 4_000_000)}, {"int8": True, "fp16": True}, "fp16"),
    # within 10 % of the fastest: the smaller file
    ({"int8": _fig(3.2, 2_000_000), "fp16": _fig(3.0, 4_000_000)}, {"int8": True, "fp16": True}, "int8"),
    ({"int8": _fig(3.4, 2_000_000), "fp16": _fig(3.0, 4_000_000)}, {"int8": True, "fp16": True}, "fp16"),
    # a candidate failing its gates is out while another passes
    ({"int8": _fig(7.0, 2_000_000), "fp16": _fig(3.0, 4_000_000)}, {"int8": True, "fp16": False}, "int8"),
    # over the 5 MB budget is out while another fits ...
    ({"int8": _fig(7.0, 2_000_000), "fp16": _fig(3.0, 6_000_000)}, {"int8": True, "fp16": True}, "int8"),
    # ... and when none fits (a ViT tower), the fastest of all
    ({"int8": _fig(40.0, 88_000_000), "fp16": _fig(120.0, 176_000_000)}, {"int8": True, "fp16": True}, "int8"),
    # when none passes, the fastest of all (the export's gate then fails on it)
    ({"int8": _fig(7.0, 2_000_000), "fp16": _fig(3.0, 4_000_000)}, {"int8": False, "fp16": False}, "fp16"),
])
def test_choose(figures, passes, want):
    from edge_search_export.precision import BUDGET_BYTES, choose

    assert BUDGET_BYTES == 5_000_000
    assert choose(figures, passes, BUDGET_BYTES) == want


def _export(catalog, out, checkpoint, *extra):
    return run_cli("export", "--catalog", catalog, "--out", out, "--teacher", TINY_TEACHER, "--pretrained", checkpoint,
                   "--student", "mobilenetv3_small_050", "--epochs", "1", "--views-per-image", "4", "--quiet",
                   "--gate", "catalog_views_top1=0", *extra)


def test_auto_times_both_forms_and_ships_the_one_that_passes(tmp_path, sample_catalog, tiny_checkpoint):
    out = tmp_path / "auto"
    # int8 cannot reach a mean cosine above 1: auto must ship fp16 whatever the timing says
    _export(sample_catalog, out, tiny_checkpoint, "--quantize", "auto", "--gate", "int8_mean_cosine=1.01")
    m = read_manifest(out)
    fid = m["fidelity"]
    assert m["model"]["precision"] == "fp16" and fid["precision"]["chosen"] == "fp16"
    cands = fid["precision"]["candidates"]
    assert set(cands) == {"int8", "fp16"}
    assert [cands["int8"]["passes_gates"], cands["fp16"]["passes_gates"]] == [False, True]
    assert cands["fp16"]["bytes"] == (out / "model.onnx").stat().st_size > cands["int8"]["bytes"]
    assert len(fid["int8_vs_fp32"]["attempts"]) == 2  # both int8 recipes tried before giving up on int8
    assert fid["fp16_vs_fp32"]["mean_cosine"] >= 0.999 and fid["quantization"]["format"] == "fp16-weights"
    gates = {g["gate"] for g in fid["gates"]["results"]}
    assert "fp16-vs-fp32 mean cosine" in gates and "int8-vs-fp32 mean cosine" not in gates
    assert not list(out.glob(".model.*"))  # the candidates not shipped are gone
    shown = run_cli("inspect", out).stdout
    assert "fp16 vs fp32: mean cosine" in shown and "(shipped fp16)" in shown and "model.onnx  fp16" in shown
    # the runtime searches with it: a catalog image names its own product
    hit = json.loads(run_cli("search", "--bundle", out, "--json", "-k", "1",
                             sample_catalog.parent / "images" / "pasta.jpg").stdout)
    assert hit["results"][0]["id"] == "pasta"


def test_fp16_alone_is_not_timed(tmp_path, sample_catalog, tiny_checkpoint):
    out = tmp_path / "fp16"
    _export(sample_catalog, out, tiny_checkpoint, "--quantize", "fp16")
    m = read_manifest(out)
    assert m["model"]["precision"] == "fp16" and "precision" not in m["fidelity"]
    assert "int8_vs_fp32" not in m["fidelity"]
    types = {i.data_type for i in onnx.load(str(out / "model.onnx")).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types


def test_each_model_is_timed_in_its_own_process_and_a_bad_file_is_named(tmp_path):
    import torch

    from edge_search.errors import ExportError
    from edge_search_export.onnx_export import export_onnx
    from edge_search_export.student import Embedder, build_student
    from edge_search_export.timing import time_alone

    torch.manual_seed(0)
    export_onnx(Embedder(build_student("mobilenetv3_small_050", 64, 32)), (32, 32), tmp_path / "a.onnx")
    times = time_alone({"a": (tmp_path / "a.onnx", (32, 32)), "again": (tmp_path / "a.onnx", (32, 32))}, rounds=2,
                       calls={"a": 3, "again": 1}, threads=1)
    assert [len(times["a"]), len(times["again"])] == [6, 2] and min(times["a"]) > 0
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match=r"bad.onnx: timing it failed \(.*cannot load ONNX model"):
        time_alone({"bad": (tmp_path / "bad.onnx", (32, 32))}, rounds=1, calls=1, threads=1)


def test_auto_ships_int8_when_no_fp16_can_be_made(tmp_path, sample_catalog, tiny_checkpoint, monkeypatch):
    from edge_search.errors import ExportError
    from edge_search_export import pipeline
    from edge_search_export.config import ExportConfig, Gates

    def refuse(fp32, out):
        raise ExportError(f"{fp32}: no float weight of 1024+ elements to store as fp16")

    monkeypatch.setattr(pipeline, "store_fp16", refuse)
    cfg = ExportConfig(catalog=sample_catalog, out=tmp_path / "b", teacher=str(TINY_TEACHER),
                       pretrained=str(tiny_checkpoint), student="mobilenetv3_small_050", epochs=1, views_per_image=4,
                       quantize="auto",
                       gates=Gates().with_overrides({"catalog_views_top1": 0, "int8_top1_agreement": 0.5}))
    pipeline.run_export(cfg, progress=False)
    m = read_manifest(tmp_path / "b")
    assert m["model"]["precision"] == "int8" and "precision" not in m["fidelity"]
    assert m["fidelity"]["fp16_skipped"] == "no float weight of 1024+ elements to store as fp16"  # no stage path
    with pytest.raises(ExportError, match="no float weight"):  # asked for fp16 itself: the export fails
        pipeline.run_export(ExportConfig(**{**cfg.__dict__, "out": tmp_path / "c", "quantize": "fp16"}),
                            progress=False)
    assert not (tmp_path / "c").exists()
