"""A miniature of bench/grocery.py on four classes of the real dataset, with
settings small enough for CI: every stage runs (teacher trained from random
weights by --finetune-labeled, export, every evaluation row, the no-match
figures, report.json), and a second run reuses the cached export."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import GROCERY, REPO

pytestmark = [pytest.mark.export, pytest.mark.dataset]

MINI = ["--classes", "4", "--finetune-epochs", "2", "--finetune-batch", "8", "--epochs", "1",
        "--views-per-image", "2", "--leave-out", "1", "--speed-reference", "none", "--quiet",
        # two epochs on ~120 photos leave near-identical embeddings: int8 and index flips are noise here
        "--gate", "int8_top1_agreement=0", "--gate", "catalog_self_top1=0", "--gate", "index_top1_agreement=0"]


def bench(out, *extra):
    return subprocess.run([sys.executable, str(REPO / "bench" / "grocery.py"), "--data", str(GROCERY), "--out",
                           str(out), *MINI, *extra], capture_output=True, text=True, timeout=300)


def test_grocery_bench_miniature(tmp_path):
    if not (GROCERY / "classes.csv").is_file():
        pytest.skip(f"grocery dataset not found at {GROCERY} (set EDGE_SEARCH_GROCERY)")
    out = tmp_path / "grocery"
    proc = bench(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "report.json").read_text())
    assert r["dataset"]["products"] == 4 and r["dataset"]["val_photos"] > 0
    assert r["dataset"]["classes"] == ["Golden-Delicious", "Anjou", "Arla-Medium-Fat-Milk", "Aubergine"]
    rows = r["models"]
    assert set(rows) == {"teacher (PyTorch fp32)", "teacher (ONNX int8)", "student (ONNX fp32)",
                         "student (ONNX int8, the bundle)", "colour histogram (no model)"}
    for name, row in rows.items():
        assert 0 <= row["recall@1"] <= 1 and row["ms_per_image"] > 0, name
    assert rows["student (ONNX int8, the bundle)"]["mb"] < rows["student (ONNX fp32)"]["mb"]
    assert set(r["catalog_embedded_by"]) == {"teacher", "student"}
    assert set(r["index"]) == {"f32 exact", "f16 exact", "i8 exact", "i8 HNSW"}
    ft = r["export"]["teacher"]["finetune"]
    assert ft["labels"] == "train.csv" and ft["epochs"] == 2 and ft["trained_towers"] == ["image", "text"]
    nm = r["no_match"]
    assert len(nm["left_out"]) == 1 and nm["full_catalog"]["known_photos"] == r["dataset"]["val_photos"]
    assert "Klasson" in r["klasson_2019"]
    # words (#5): text -> product for names and names + descriptions, photo + words, text latency
    w = r["words"]
    assert set(w["text_to_product"]) == {"names", "names_descriptions"}
    assert all(x["queries"] == 4 and 0 <= x["recall@1"] <= x["recall@5"] <= 1 for x in w["text_to_product"].values())
    assert set(w["teacher_text_vs_catalog_by"]) == {"teacher", "student"}
    assert set(w["photo_plus_category_word"]["by_alpha"]) == {"1.0", "0.9", "0.8", "0.7", "0.6", "0.5"}
    assert w["latency_ms"]["query_p95"] > 0 and w["int8_vs_fp32"]["mean_cosine"] >= 0.98
    for line in ("text -> product, names", "photo + category word, alpha 0.8", "text query latency"):
        assert line in proc.stdout
    for line in ("teacher (PyTorch fp32)", "student (ONNX int8, the bundle)", "colour histogram", "index i8 HNSW"):
        assert line in proc.stdout
    # the dataset is read in place: the bench writes CSVs and links, never image copies
    images = list((out / "data").rglob("*.jpg"))
    assert images and all(p.is_symlink() for p in images)

    created = json.loads((out / "bundle" / "manifest.json").read_text())["created"]
    t0 = time.monotonic()
    again = bench(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "bundle" / "manifest.json").read_text())["created"] == created  # export cached
    r2 = json.loads((out / "report.json").read_text())
    name = "student (ONNX int8, the bundle)"
    assert r2["models"][name]["recall@1"] == rows[name]["recall@1"]
    assert time.monotonic() - t0 < 120
