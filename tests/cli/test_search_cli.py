"""`edge-search search` as a user runs it, the Python API, and bad input."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import one_line_error, read_manifest, run_cli

def test_catalog_images_find_themselves(tiny_bundle, sample_catalog):
    imgs = sorted((sample_catalog.parent / "images").glob("*.jpg"))
    proc = run_cli("search", "--bundle", tiny_bundle, "--json", "-k", "3", *imgs)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == len(imgs)
    for img, line in zip(imgs, lines):
        assert line["query"] == str(img)
        assert line["results"][0]["id"] == img.stem
        assert set(line["results"][0]) == {"id", "name", "score", "price", "category"}
        assert len(line["results"]) == 3 and line["no_match"] is False
        assert set(line["timings_ms"]) >= {"embed", "search"}


def test_plain_output_and_min_score(tiny_bundle, sample_catalog):
    img = sample_catalog.parent / "images" / "honey.jpg"
    out = run_cli("search", "--bundle", tiny_bundle, img, "-k", "2").stdout
    assert "1." in out and "honey" in out and "Wildflower Honey" in out and "5.40" in out
    none = run_cli("search", "--bundle", tiny_bundle, img, "--min-score", "1.5").stdout
    assert "no match (best score" in none
    res = json.loads(run_cli("search", "--bundle", tiny_bundle, img, "--min-score", "1.5", "--json").stdout)
    assert res["results"] == [] and res["no_match"] is True


def test_text_output_has_a_header_and_stays_aligned_past_rank_nine(tiny_bundle, sample_catalog):
    img = sample_catalog.parent / "images" / "honey.jpg"
    args = ("search", "--bundle", tiny_bundle, img, "-k", "15", "--min-score", "-1")
    hits = json.loads(run_cli(*args, "--json").stdout)["results"]
    out = run_cli(*args).stdout.splitlines()
    assert len(hits) == 12 and out[0] == str(img)  # the sample catalog's twelve products, all ranked
    header, rows = out[1], out[2:14]
    assert header.split() == ["#", "score", "id", "name", "price"]
    assert [r.split()[0] for r in rows] == [f"{i}." for i in range(1, 13)]
    # every column starts (or, for numbers, ends) where its header does, at rank 1 as at rank 10
    for row, h in zip(rows, hits):
        assert row[header.index("id"):].startswith(h["id"] + " ") and row[header.index("name"):].startswith(h["name"])
        assert row.endswith(f"{h['price']:.2f}") and len(row) == len(header)
        assert re.fullmatch(r" *-?\d\.\d{3}", row[len(f"  {len(hits)}."):header.index("score") + 5])
    assert out[14] == "  12 of 15: the bundle has only 12 products" and out[15].startswith("  embed ")


def test_search_says_the_rest_fell_below_the_bundles_rule(bundle_copy, sample_catalog):
    from edge_search.core.search import RANK_ALL, Searcher

    img = sample_catalog.parent / "images" / "honey.jpg"
    # a random-weight model scores every product near 1: the exact scores, and the widest gap among the top four
    scores = [h.score for h in Searcher.from_bundle(bundle_copy).search_image(img, k=5, min_score=RANK_ALL).hits]
    kept = max((1, 2, 3), key=lambda i: scores[i - 1] - scores[i])  # products above that gap
    assert scores[kept - 1] - scores[kept] > 5e-6, scores
    rule = (scores[kept - 1] + scores[kept]) / 2
    m = read_manifest(bundle_copy)
    m["search"] = {"min_score": rule}  # the bundle's rule: a flat floor inside that gap
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    out = run_cli("search", "--bundle", bundle_copy, img, "-k", "5").stdout.splitlines()
    assert len(out) == 2 + kept + 2 and [r.split()[0] for r in out[2:2 + kept]] == [f"{i}." for i in range(1, kept + 1)]
    assert out[2 + kept] == f"  {kept} of 5: the rest scored below the bundle's rule ({rule:.3f})"
    flat = run_cli("search", "--bundle", bundle_copy, img, "-k", "5", "--min-score", repr(rule)).stdout.splitlines()
    assert flat[2 + kept] == f"  {kept} of 5: the rest scored below --min-score {rule:g}"
    line = json.loads(run_cli("search", "--bundle", bundle_copy, img, "-k", "5", "--json").stdout)
    assert len(line["results"]) == kept and line["no_match"] is False


def test_python_api(tiny_bundle, sample_catalog):
    from edge_search.core.images import load_image
    from edge_search.core.search import Searcher

    searcher = Searcher.from_bundle(tiny_bundle)
    result = searcher.search_image(load_image(sample_catalog.parent / "images" / "oat-milk.jpg"), k=2)
    assert result.hits[0].id == "oat-milk" and result.hits[0].price == 1.89 and len(result.hits) == 2


def test_bad_images(tiny_bundle, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("shopping list")
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20)
    one_line_error(run_cli("search", "--bundle", tiny_bundle, tmp_path / "missing.jpg", check=False),
                   "missing.jpg", "no such file")
    one_line_error(run_cli("search", "--bundle", tiny_bundle, tmp_path / "empty.jpg", check=False),
                   "empty.jpg", "empty file")
    one_line_error(run_cli("search", "--bundle", tiny_bundle, tmp_path / "notes.txt", check=False),
                   "notes.txt", "not a readable image")
    one_line_error(run_cli("search", "--bundle", tiny_bundle, tmp_path / "cut.jpg", check=False), "cut.jpg")


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_tampered_file_is_refused(bundle_copy, sample_catalog):
    model = bundle_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    img = sample_catalog.parent / "images" / "pasta.jpg"
    one_line_error(run_cli("search", "--bundle", bundle_copy, img, check=False), "model.onnx", "checksum mismatch")
    one_line_error(run_cli("inspect", bundle_copy, check=False), "model.onnx", "checksum mismatch")


@pytest.mark.parametrize("edit,fragment", [
    (lambda m: m.update(schema_version=99), "unknown schema_version 99"),
    # a delta segment is what version 2 announces: readers that predate it refuse it rather than search half
    (lambda m: m["index"].update(delta={"file": None, "count": 0}), "such bundles are version 2"),
    (lambda m: m.update(schema_version=2), "such bundles are version 1"),
    # so is a projected graph, version 3: an older reader would query it with full-length vectors
    (lambda m: m["index"].update(projection_file="p.npy", rescore_file="r.npy"), "such bundles are version 3"),
    (lambda m: m.update(schema_version=3), "such bundles are version 1"),
    (lambda m: (m.update(schema_version=3), m["index"].update(projection_file="p.npy", rescore_file=None)),
     "a 'projection_file' needs the full vectors of a 'rescore_file'"),
    (lambda m: (m.update(schema_version=2), m["index"].update(delta={"file": "d.usearch", "count": -1})),
     "must not be negative"),
    (lambda m: m.pop("index"), "missing key 'index'"),
    (lambda m: m["model"].update(embed_dim="big"), "'embed_dim' has the wrong type"),
    (lambda m: m["files"].update({"../../etc/passwd": {"sha256": "0" * 64, "bytes": 1}}), "points outside the bundle"),
])
def test_bad_manifests_are_refused(bundle_copy, sample_catalog, edit, fragment):
    m = read_manifest(bundle_copy)
    edit(m)
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    one_line_error(run_cli("search", "--bundle", bundle_copy, sample_catalog.parent / "images" / "pasta.jpg",
                           check=False), "manifest.json", fragment)


def test_missing_bundle_and_truncated_index(bundle_copy, tmp_path, sample_catalog):
    img = sample_catalog.parent / "images" / "pasta.jpg"
    one_line_error(run_cli("search", "--bundle", tmp_path / "nothing", img, check=False), "not a bundle directory")
    (bundle_copy / "manifest.json").write_text("{ not json")
    one_line_error(run_cli("search", "--bundle", bundle_copy, img, check=False), "manifest.json", "not valid JSON")


def test_inspect_names_a_malformed_teacher_field_in_its_place(bundle_copy, sample_catalog, tmp_path):
    m = read_manifest(bundle_copy)
    m["teacher"]["random_weights"] = "yes"
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    proc = run_cli("inspect", bundle_copy)
    assert [ln for ln in proc.stdout.splitlines() if ln.startswith("teacher")] == [
        'teacher     (malformed in the manifest: teacher.random_weights must be true or false, got "yes")']
    assert "student     " in proc.stdout and "checksums   " in proc.stdout  # the rest still shows
    # eval reads the record (random weights get a caveat): one line naming the file and the field
    queries = tmp_path / "q.csv"
    queries.write_text(f"image,id\n{sample_catalog.parent / 'images' / 'honey.jpg'},honey\n")
    one_line_error(run_cli("eval", "--bundle", bundle_copy, "--queries", queries, check=False),
                   f"{bundle_copy / 'manifest.json'}: teacher.random_weights must be true or false")
