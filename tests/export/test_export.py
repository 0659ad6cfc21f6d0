"""`edge-search export` end to end with tiny open_clip teachers whose random
weights are saved to a checkpoint file and loaded back through --pretrained."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest

from conftest import TINY_TEACHER, export_args, one_line_error, read_manifest, run_cli

pytestmark = pytest.mark.export


def test_bundle_contents_and_manifest(exported_bundle, tiny_checkpoint):
    m = read_manifest(exported_bundle)
    assert m["schema_version"] == 1
    assert m["teacher"]["model"] == "tiny-vit-test" and m["teacher"]["pretrained"] == tiny_checkpoint.name
    assert m["teacher"]["random_weights"] is False  # loaded from a file: the real path
    assert "unknown" in m["teacher"]["licence"]
    assert m["student"]["arch"] == "mobilenetv3_small_050"
    assert m["model"] == {"file": "model.onnx", "input": "image", "output": "embedding", "embed_dim": 64,
                          "precision": "int8", "opset": 17}
    assert m["preprocess"]["size"] == [64, 64] and m["preprocess"]["cv2_interpolation"] in ("area", "linear", "cubic", "lanczos")
    assert m["products"]["count"] == 12
    files = set(m["files"])
    assert {"model.onnx", "index.usearch", "products.jsonl"} <= files
    # thumbnails are counted, not listed: each product's is named by its own bytes' sha256
    assert not any(f.startswith("thumbs/") for f in files)
    thumbs = sorted((exported_bundle / "thumbs").iterdir())
    assert len(thumbs) == m["thumbnails"]["count"] == 12
    assert m["thumbnails"]["bytes"] == sum(t.stat().st_size for t in thumbs)
    assert all(t.name == hashlib.sha256(t.read_bytes()).hexdigest() + ".jpg" for t in thumbs)
    fid = m["fidelity"]
    assert fid["onnx_vs_torch"]["min_cosine"] > 0.999
    assert {c["label"] for c in fid["index"]["candidates"]} == {"i8", "i8+f16-rescore", "f16", "f32"}
    enc = fid["catalog_encoder"]
    options = ("teacher", "student", "teacher+student", "teacher+student+views")
    assert set(enc) >= set(options)
    # the student's own vectors (alone or beside others) name every catalog image: exactly 1
    assert [enc[n]["catalog_self_top1"] for n in options[1:]] == [1.0, 1.0, 1.0]
    passing = [n for n in options if enc[n]["passes_self_gates"]]
    assert enc["decided_by"] == "augmented_query_top1" and "student" in passing  # no labeled photos here
    best = max(enc[n]["augmented_query_top1"] for n in passing)
    assert enc[enc["chosen"]]["augmented_query_top1"] == best and enc["chosen"] in passing
    assert m["index"]["count"] == {"teacher": 12, "student": 12, "teacher+student": 24,
                                   "teacher+student+views": 48}[enc["chosen"]]
    assert fid["catalog_self_top1"]["value"] >= 0.95 and fid["catalog_self_top1"]["catalog_encoder"] == enc["chosen"]
    assert fid["gates"]["enforced"] is True and all(g["passed"] for g in fid["gates"]["results"])
    assert not list(exported_bundle.parent.glob(".sample.partial-*"))  # no staging left behind


def test_inspect_verifies_every_checksum(exported_bundle):
    out = run_cli("inspect", exported_bundle).stdout
    m = read_manifest(exported_bundle)
    n = len(m["files"]) + m["thumbnails"]["count"]  # the listed files and the thumbnails, each checked
    assert f"{n} files verified" in out and "tiny-vit-test" in out and "int8" in out


def test_export_is_deterministic_for_a_seed(tmp_path, sample_catalog, tiny_checkpoint, exported_bundle):
    again = tmp_path / "again"
    run_cli(*export_args(sample_catalog, again, tiny_checkpoint))
    a, b = read_manifest(exported_bundle)["files"], read_manifest(again)["files"]
    assert a["model.onnx"]["sha256"] == b["model.onnx"]["sha256"]
    assert a["index.usearch"]["sha256"] == b["index.usearch"]["sha256"]


def test_a_colour_cast_reaches_the_distillation_views_and_a_bad_one_is_one_line(tmp_path, sample_catalog,
                                                                               tiny_checkpoint, exported_bundle):
    cast = tmp_path / "cast"
    run_cli(*export_args(sample_catalog, cast, tiny_checkpoint, "--colour-cast", "0.2"))
    a, b = read_manifest(exported_bundle)["student"], read_manifest(cast)["student"]
    assert (a["colour_cast"], b["colour_cast"]) == (0.0, 0.2)
    # as many views, other pixels: the student learnt on other targets
    assert a["distillation"]["views"] == b["distillation"]["views"]
    assert a["distillation"]["final"]["loss"] != b["distillation"]["final"]["loss"]
    bad = tmp_path / "bad"
    one_line_error(run_cli(*export_args(sample_catalog, bad, tiny_checkpoint, "--colour-cast", "0.7"), check=False),
                   "--colour-cast must be between 0 and 0.5, got 0.7")
    assert not bad.exists()


def test_teacher_tower_without_student_and_fp32(tmp_path, sample_catalog, tiny_checkpoint):
    out = tmp_path / "teacher-only"
    run_cli("export", "--catalog", sample_catalog, "--out", out, "--teacher", TINY_TEACHER,
            "--pretrained", tiny_checkpoint, "--student", "none", "--quantize", "none", "--index-dtype", "f32",
            "--gate", "catalog_views_top1=0", "--quiet")  # a random tower does not name rotated crops
    m = read_manifest(out)
    assert m["student"] is None and m["model"]["precision"] == "fp32" and m["index"]["dtype"] == "f32"
    assert m["index"]["catalog_encoder"] == "student"  # the shipped encoder embeds the catalog
    hits = json.loads(run_cli("search", "--bundle", out, "--json", "-k", "1",
                              sample_catalog.parent / "images" / "pasta.jpg").stdout)
    assert hits["results"][0]["id"] == "pasta" and hits["results"][0]["score"] > 0.999


def test_failed_gate_stops_and_writes_nothing(tmp_path, sample_catalog, tiny_checkpoint):
    out = tmp_path / "gated"
    proc = run_cli(*export_args(sample_catalog, out, tiny_checkpoint, "--gate", "int8_mean_cosine=1.01"),
                   check=False)
    assert proc.returncode == 2
    assert "fidelity gate 'int8-vs-fp32 mean cosine' failed: measured" in proc.stderr
    assert "threshold 1.0100" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".gated*"))


def test_existing_output_is_kept_unless_forced(tmp_path, sample_catalog, tiny_checkpoint):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    proc = run_cli(*export_args(sample_catalog, out, tiny_checkpoint), check=False)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (out / "keep.txt").read_text() == "precious"
    # a forced export that fails keeps the old output whole
    proc = run_cli(*export_args(sample_catalog, out, tiny_checkpoint, "--force", "--gate", "onnx_min_cosine=2"),
                   check=False)
    assert proc.returncode == 2 and (out / "keep.txt").read_text() == "precious"


def test_bad_catalog_rows_stop_before_anything_is_written(tmp_path, tiny_checkpoint, sample_catalog):
    cat = tmp_path / "c.csv"
    good = (sample_catalog.parent / "images" / "pasta.jpg").resolve()
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg")
    cat.write_text(f"id,image\npasta,{good}\nghost,nowhere.jpg\njunk,junk.jpg\n")
    out = tmp_path / "out"
    proc = run_cli(*export_args(cat, out, tiny_checkpoint), check=False)
    assert proc.returncode == 2 and "2 bad row(s)" in proc.stderr
    assert "line 3" in proc.stderr and "line 4" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_pretrained_problems_are_one_line(tmp_path, sample_catalog):
    t0 = time.monotonic()
    proc = run_cli("export", "--catalog", sample_catalog, "--out", tmp_path / "o", "--teacher", "ViT-B-32",
                   "--pretrained", "laion2b_s34b_b79k", "--quiet", check=False,
                   env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "--pretrained /path/to/" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and time.monotonic() - t0 < 60
    proc = run_cli("export", "--catalog", sample_catalog, "--out", tmp_path / "o", "--teacher", TINY_TEACHER,
                   "--pretrained", tmp_path / "missing.pt", "--quiet", check=False)
    assert proc.returncode == 2 and "missing.pt: checkpoint file not found" in proc.stderr
    wrong = tmp_path / "wrong.pt"
    import torch

    torch.save({"state_dict": {"visual.nope": torch.zeros(1)}}, wrong)
    proc = run_cli("export", "--catalog", sample_catalog, "--out", tmp_path / "o", "--teacher", TINY_TEACHER,
                   "--pretrained", wrong, "--quiet", check=False)
    assert proc.returncode == 2 and "does not fit teacher tiny-vit-test" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_offline_without_cached_weights_names_both_ways_on(monkeypatch):
    """No network and nothing cached: the message offers a local checkpoint and --pretrained random."""
    import huggingface_hub

    from edge_search.errors import WeightsUnavailable
    from edge_search_export import teacher

    monkeypatch.setattr(teacher, "_online", lambda *a, **k: False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(WeightsUnavailable) as e:
        teacher._resolve_tag("ViT-B-32", "laion2b_s34b_b79k", {})
    assert "--pretrained /path/to/open_clip_model.safetensors" in str(e.value)
    assert "or --pretrained random to check the pipeline" in str(e.value) and len(str(e.value).splitlines()) == 1


def test_random_teacher_must_be_asked_for_and_is_recorded(tmp_path, sample_catalog):
    out = tmp_path / "random"
    proc = run_cli("export", "--catalog", sample_catalog, "--out", out, "--teacher", TINY_TEACHER,
                   "--pretrained", "random", "--student", "none", "--quiet")
    assert "RANDOM weights" in proc.stderr
    m = read_manifest(out)
    assert m["teacher"]["random_weights"] is True and m["teacher"]["pretrained"] == "random"
    assert m["fidelity"]["gates"]["enforced"] is False
    assert "RANDOM WEIGHTS" in run_cli("inspect", out).stdout


def test_multiple_images_per_product_collapse(tmp_path, sample_catalog, tiny_checkpoint):
    imgs = sample_catalog.parent / "images"
    cat = tmp_path / "multi.csv"
    rows = ["id,image,name"] + [f"{p},{(imgs / f'{p}.jpg').resolve()},{p}" for p in ("pasta", "honey", "green-tea")]
    rows.append(f"pasta,{(imgs / 'tomato-sauce.jpg').resolve()},pasta")  # a second image of pasta
    cat.write_text("\n".join(rows) + "\n")
    out = tmp_path / "multi"
    run_cli(*export_args(cat, out, tiny_checkpoint, "--catalog-encoder", "student"))
    assert read_manifest(out)["index"]["count"] == 4 and read_manifest(out)["products"]["count"] == 3
    res = json.loads(run_cli("search", "--bundle", out, "--json", "-k", "5", imgs / "tomato-sauce.jpg").stdout)
    ids = [r["id"] for r in res["results"]]
    assert ids[0] == "pasta" and sorted(ids) == ["green-tea", "honey", "pasta"]


def _first_conv_weight_is_float(path) -> bool:
    import onnx

    g = onnx.load(str(path)).graph
    made_by = {o: n.op_type for n in g.node for o in n.output}
    conv = next(n for n in g.node if n.op_type == "Conv")
    return made_by.get(conv.input[1]) != "DequantizeLinear"


@pytest.mark.parametrize("figures,allowed,tried", [
    ([0.5, 0.99], 2, 2),  # the plain recipe misses: redone with stem and head in float, which passes
    ([0.99], 2, 1),       # the plain recipe passes: no second try
    ([0.5, 0.6], 2, 2),   # both miss: the last one tried is kept (and the gate then fails the export)
    ([0.5], 1, 1),        # an unenforced gate (random teacher) allows one recipe only
])
def test_int8_recipe_retry(tmp_path, figures, allowed, tried):
    import torch

    from edge_search_export.onnx_export import export_onnx
    from edge_search_export.quantize import RECIPES, quantize_until

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    export_onnx(net, (16, 16), tmp_path / "fp32.onnx")
    calib = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    seen = iter(figures)
    measured = []
    info, attempts = quantize_until(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calib,
                                    lambda p: measured.append(_first_conv_weight_is_float(p))
                                    or {"mean_cosine": next(seen)}, lambda f: f["mean_cosine"] >= 0.97,
                                    RECIPES[:allowed])
    assert len(attempts) == tried and [a["mean_cosine"] for a in attempts] == figures[:tried]
    assert [a["recipe"]["keep_float"] for a in attempts] == [[], ["stem", "head"]][:tried]
    assert info["keep_float"] == attempts[-1]["recipe"]["keep_float"]
    # each measurement saw the model of its own recipe; the file left is the last one's
    assert measured == [False, True][:tried]
    assert _first_conv_weight_is_float(tmp_path / "int8.onnx") == (tried == 2)


def test_negatives_and_sign_key(tmp_path, sample_catalog, tiny_checkpoint):
    """--negatives: the scenes are embedded, every rule is compared, and a forced negatives rule
    ships them and is applied by the runtime; --sign-key: the bundle is signed as it is written."""
    import cv2

    from edge_search.core.search import Searcher

    negs = tmp_path / "negatives"
    negs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):  # an empty counter: brown tiles with grain, a little different each time
        img = np.kron(rng.integers(90, 170, (8, 8, 1)), np.ones((12, 12, 3))) + rng.integers(-20, 20, (96, 96, 3))
        cv2.imwrite(str(negs / f"counter-{i:02d}.jpg"), np.clip(img * [0.6, 0.8, 1.0], 0, 255).astype(np.uint8))
    (negs / "notes.txt").write_text("not an image: ignored")
    keys = tmp_path / "keys"
    run_cli("keygen", "--out", keys)
    out = tmp_path / "neg"
    proc = run_cli(*export_args(sample_catalog, out, tiny_checkpoint, "--negatives", negs,
                                "--no-match-rule", "floor+margin+negatives", "--max-false-reject", "0.2",
                                "--sign-key", keys / "edge-search.key.pem"), check=False)
    assert proc.returncode == 0, proc.stderr
    m = read_manifest(out)
    nm, cal = m["fidelity"]["no_match"], m["search"]["calibration"]
    assert nm["negatives_given"] == 12 and nm["negatives_dir"] == str(negs) and "12 no-product scenes" in nm["source"]
    assert cal["rule"] == nm["rule"] == "floor+margin+negatives" and cal["negatives"] == "negatives.npy"
    assert set(nm["rules"]) == {"floor+margin+negatives"}  # forced: the only candidate
    assert cal["max_false_reject"] == 0.2  # --max-false-reject: the budget the rule was fitted to
    stored = np.load(out / "negatives.npy")
    assert stored.shape == (12, 64) and "negatives.npy" in m["files"]
    # the runtime reads them: a negative's own embedding finds itself at cosine 1, and the rule applies
    s = Searcher.from_bundle(out)
    from edge_search.core.images import load_image

    v = s.embed_images([load_image(negs / "counter-03.jpg")])[0]
    r = s.search_image(load_image(negs / "counter-03.jpg"), k=1)
    assert r.negative_score == pytest.approx(1.0, abs=1e-3) and s.negative_score(v) == pytest.approx(1.0, abs=1e-3)
    assert r.no_match == (r.best_score - r.negative_score < cal["negative_margin"] or r.margin < cal["min_margin"]
                          or r.best_score < m["search"]["min_score"])
    # signed from the first moment: verify accepts it with the public key, refuses another key
    assert (out / "manifest.sig").is_file()
    run_cli("verify", out, "--trusted-key", keys / "edge-search.pub.pem")
    run_cli("keygen", "--out", keys, "--name", "other")
    assert run_cli("verify", out, "--trusted-key", keys / "other.pub.pem", check=False).returncode == 2
    # a negatives rule without --negatives is refused before any work
    proc = run_cli(*export_args(sample_catalog, tmp_path / "x", tiny_checkpoint, "--no-match-rule", "negatives"),
                   check=False)
    assert proc.returncode == 2 and "needs --negatives" in proc.stderr and not (tmp_path / "x").exists()
    # a budget outside [0, 0.5) is one line, before any work
    proc = run_cli(*export_args(sample_catalog, tmp_path / "x", tiny_checkpoint, "--max-false-reject", "0.7"),
                   check=False)
    assert proc.returncode == 2 and "--max-false-reject must be at least 0 and under 0.5, got 0.7" in proc.stderr and not (tmp_path / "x").exists()
    assert len(proc.stderr.strip().splitlines()) == 1


def test_loading_a_teacher_config_leaves_no_temp_folder(tmp_path, monkeypatch, tiny_checkpoint):
    import tempfile

    from edge_search_export.teacher import load_teacher

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    teacher = load_teacher(str(TINY_TEACHER), str(tiny_checkpoint))
    again = load_teacher(str(TINY_TEACHER), str(tiny_checkpoint))  # registered again from a removed copy
    assert teacher.embed_dim == again.embed_dim == 64
    assert list(tmp_path.iterdir()) == []  # each load left an edge-search-cfg-* folder before
