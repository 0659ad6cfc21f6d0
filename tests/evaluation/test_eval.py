"""`edge-search eval`: figures on labeled photos, JSON, and the report folder."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import read_manifest, run_cli

@pytest.fixture
def queries(tmp_path, sample_catalog):
    imgs = sample_catalog.parent / "images"
    rows = ["image,id"] + [f"{p.resolve()},{p.stem}" for p in sorted(imgs.glob("*.jpg"))]
    # the honey photo labelled as pasta: a known miss, so recall@1 must drop below 1
    rows.append(f"{(imgs / 'honey.jpg').resolve()},pasta")
    rows.append(f"{(imgs / 'honey.jpg').resolve()},not-in-catalog")
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    rows.append("broken.jpg,honey")
    path = tmp_path / "q.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_eval_json_figures(tiny_bundle, queries, sample_catalog):
    out = json.loads(run_cli("eval", "--bundle", tiny_bundle, "--queries", queries, "--json").stdout)
    assert out["queries"] == 13  # 12 catalog photos + the mislabelled one; unknown and broken not counted
    # the export's catalog self-retrieval gate (>= 95 % of 12 images: all 12) holds whoever embeds the
    # catalog, so the 12 catalog photos are hits at rank 1 and only the honey-as-pasta photo misses
    assert read_manifest(tiny_bundle)["fidelity"]["catalog_self_top1"]["value"] == 1.0
    ranked = json.loads(run_cli("search", "--bundle", tiny_bundle, "--json", "-k", "12", "--min-score", "-1",
                                sample_catalog.parent / "images" / "honey.jpg").stdout)
    pasta = [h["id"] for h in ranked["results"]].index("pasta") + 1  # its rank for the mislabelled photo
    assert out["recall"]["@1"] == pytest.approx(12 / 13, abs=1e-4)
    for k in (1, 2, 3, 4, 5, 10):
        assert out["recall"][f"@{k}"] == pytest.approx((12 + (pasta <= k)) / 13, abs=1e-4), k
    assert out["mrr"] == pytest.approx((12 + 1 / pasta) / 13, abs=1e-4)
    assert out["confused"][0]["true"] == "pasta" and out["confused"][0]["count"] == 1
    assert out["confused"][0]["predicted"] == "honey"
    assert out["unknown_ids"] == ["line 15: not-in-catalog"] and "broken.jpg" in out["unreadable"][0]
    assert set(out["latency_ms"]) == {"embed_p50", "embed_p95", "search_p50", "search_p95"}
    assert sum(c["queries"] for c in out["per_category"].values()) == 13
    assert out["caveat"] is None  # a trained teacher: the figures stand on their own


def test_eval_report_folder(tiny_bundle, queries, tmp_path):
    report = tmp_path / "report"
    text = run_cli("eval", "--bundle", tiny_bundle, "--queries", queries, "--report", report).stdout
    assert "recall@1" in text and "MRR" in text
    md = (report / "report.md").read_text()
    assert "| recall@1 |" in md and "## Most confused" in md and "| pasta | " in md
    for png in ("recall_at_k.png", "latency.png", "worst_categories.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_bad_queries_file(tiny_bundle, tmp_path):
    (tmp_path / "q.csv").write_text("photo,label\nx.jpg,y\n")
    proc = run_cli("eval", "--bundle", tiny_bundle, "--queries", tmp_path / "q.csv", check=False)
    assert proc.returncode == 2 and "header must have columns image,id" in proc.stderr
    proc = run_cli("eval", "--bundle", tiny_bundle, "--queries", tmp_path / "none.csv", check=False)
    assert proc.returncode == 2 and "none.csv: no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_of_a_random_weight_bundle_says_so_first(tiny_bundle, queries, tmp_path):
    """The figures of a bundle whose teacher has random weights mean nothing about search quality:
    eval says so before them, in its text, its JSON and its report (as export, demo and inspect do)."""
    from edge_search.evaluation.evaluate import RANDOM_TEACHER_CAVEAT

    bundle = tmp_path / "random"
    shutil.copytree(tiny_bundle, bundle)
    m = read_manifest(bundle)
    m["teacher"]["random_weights"] = True
    (bundle / "manifest.json").write_text(json.dumps(m))
    report = tmp_path / "report"
    lines = run_cli("eval", "--bundle", bundle, "--queries", queries, "--report", report).stdout.splitlines()
    assert lines[1] == f"  note: {RANDOM_TEACHER_CAVEAT}" and lines[2].startswith("  recall@1 ")
    assert "RANDOM weights" in RANDOM_TEACHER_CAVEAT and "pipeline check" in RANDOM_TEACHER_CAVEAT
    md = (report / "report.md").read_text().splitlines()
    assert md[2] == f"> **Caveat:** {RANDOM_TEACHER_CAVEAT}." and md.index("| metric | value |") > 2
    out = json.loads(run_cli("eval", "--bundle", bundle, "--queries", queries, "--json").stdout)
    assert out["caveat"] == RANDOM_TEACHER_CAVEAT
