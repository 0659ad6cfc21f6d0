"""Model once, catalogs many: `export --base B` builds a catalog on B's models, embedding only what the
embedding cache has not seen, and records its base and what changed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import TINY_TEACHER, csv_rows as rows, export_args, make_checkpoint, read_manifest, run_cli, \
    write_csv as write

pytestmark = pytest.mark.export



def base_args(catalog: Path, out: Path, base: Path, checkpoint: Path, *extra: str) -> list:
    # the teacher is given as a user would for a teacher-embedded base (unused otherwise), and the
    # mild-views gate relaxed as for the base (see conftest.TINY_STUDENT)
    return ["export", "--catalog", catalog, "--out", out, "--base", base, "--teacher", TINY_TEACHER,
            "--pretrained", checkpoint, "--gate", "catalog_views_top1=0", "--quiet", *extra]


@pytest.fixture(scope="module")
def student_base(tmp_path_factory, sample_catalog, tiny_checkpoint) -> Path:
    out = tmp_path_factory.mktemp("base") / "student-base"
    run_cli(*export_args(sample_catalog, out, tiny_checkpoint, "--catalog-encoder", "student"))
    return out


def search_ids(bundle: Path, images: list[Path]) -> list[list[tuple[str, float]]]:
    proc = run_cli("search", "--bundle", bundle, "-k", "3", "--min-score", "-1", "--json", *images)
    return [[(r["id"], r["score"]) for r in json.loads(line)["results"]] for line in proc.stdout.splitlines()]


def test_unchanged_catalog_embeds_nothing_and_answers_alike(tmp_path, student_base, sample_catalog, tiny_checkpoint):
    out = tmp_path / "same"
    proc = run_cli(*base_args(sample_catalog, out, student_base, tiny_checkpoint))
    count = len(rows(sample_catalog))
    assert f"embedded 0 of {count} catalog images" in proc.stdout
    m = read_manifest(out)
    base_sha = __import__("hashlib").sha256((student_base / "manifest.json").read_bytes()).hexdigest()
    assert m["lineage"]["base"] == {"name": read_manifest(student_base)["name"], "manifest_sha256": base_sha}
    assert m["lineage"]["changes"] == {"added": [], "removed": [], "changed_metadata": [], "changed_images": []}
    assert m["fidelity"]["catalog"]["embedded"] == {"student": 0, "mild": 0}
    # the same models, the same vectors: the model file, the index and the product table are the very bytes
    for name in ("model.onnx", "index.usearch", "products.jsonl"):
        assert (out / name).read_bytes() == (student_base / name).read_bytes(), name
    photos = [sample_catalog.parent / r["image"] for r in rows(sample_catalog)[:4]]
    assert search_ids(out, photos) == search_ids(student_base, photos)


def test_a_changed_catalog_embeds_only_its_new_images(tmp_path, student_base, sample_catalog, tiny_checkpoint):
    data = rows(sample_catalog)
    removed = data.pop(3)["id"]
    data[0]["price"] = "9.99"  # metadata only
    new_image = tmp_path / "new.jpg"
    shutil.copy(sample_catalog.parent / data[1]["image"], new_image)
    from edge_search.core.images import encode_jpeg, load_image

    img = load_image(new_image)
    new_image.write_bytes(encode_jpeg(img[::-1].copy()))  # other bytes, another picture
    data.append({**data[1], "id": "new-product", "name": "New Product", "image": str(new_image)})
    catalog = write(tmp_path / "catalog.csv", [{**r, "image": str(sample_catalog.parent / r["image"])
                                                if not Path(r["image"]).is_absolute() else r["image"]} for r in data])
    out = tmp_path / "changed"
    proc = run_cli(*base_args(catalog, out, student_base, tiny_checkpoint))
    assert f"embedded 1 of {len(data)} catalog images" in proc.stdout
    ch = read_manifest(out)["lineage"]["changes"]
    assert ch == {"added": ["new-product"], "removed": [removed], "changed_metadata": [data[0]["id"]],
                  "changed_images": []}
    assert read_manifest(out)["lineage"]["change_counts"] == {"added": 1, "removed": 1, "changed_metadata": 1,
                                                              "changed_images": 0}
    hits = search_ids(out, [new_image])[0]
    assert hits[0][0] == "new-product" and abs(hits[0][1] - 1.0) < 1e-3  # its own image: cosine 1
    products = [json.loads(line) for line in (out / "products.jsonl").read_text().splitlines()]
    assert {p["id"] for p in products} == {r["id"] for r in data}
    assert next(p for p in products if p["id"] == data[0]["id"])["price"] == 9.99


def test_a_cold_cache_builds_the_same_bundle(tmp_path, student_base, sample_catalog, tiny_checkpoint):
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    run_cli(*base_args(sample_catalog, warm, student_base, tiny_checkpoint))
    proc = run_cli(*base_args(sample_catalog, cold, student_base, tiny_checkpoint,
                              "--embedding-cache", tmp_path / "empty-cache"))
    count = len(rows(sample_catalog))
    assert f"embedded {count} of {count} catalog images" in proc.stdout
    for name in ("index.usearch", "products.jsonl"):
        assert (warm / name).read_bytes() == (cold / name).read_bytes(), name


@pytest.mark.skipif(not os.environ.get("EDGE_SEARCH_RUNTIME_PYTHON"),
                    reason="set EDGE_SEARCH_RUNTIME_PYTHON to a runtime-only venv's python (tests/run.sh does)")
def test_a_student_embedded_base_builds_without_torch(tmp_path, student_base, sample_catalog, tiny_checkpoint):
    out = tmp_path / "no-torch"
    proc = run_cli("export", "--catalog", sample_catalog, "--out", out, "--base", student_base, "--quiet",
                   "--gate", "catalog_views_top1=0", python=os.environ["EDGE_SEARCH_RUNTIME_PYTHON"])
    assert "embedded 0 of" in proc.stdout
    assert (out / "index.usearch").read_bytes() == (student_base / "index.usearch").read_bytes()


def test_a_teacher_embedded_base_needs_the_same_teacher(tmp_path, sample_catalog, tiny_checkpoint):
    base = tmp_path / "teacher-base"
    # a random tiny teacher's space is not one a 2-epoch student names the catalog in: that gate is off here
    relaxed = ("--gate", "catalog_self_top1=0")
    run_cli(*export_args(sample_catalog, base, tiny_checkpoint, "--catalog-encoder", "teacher", *relaxed))
    same = run_cli(*base_args(sample_catalog, tmp_path / "same", base, tiny_checkpoint, *relaxed))
    assert "embedded 0 of" in same.stdout
    other = make_checkpoint(TINY_TEACHER, tmp_path / "other.pt", seed=1)
    proc = run_cli(*base_args(sample_catalog, tmp_path / "other", base, other, *relaxed), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "embedded by its teacher" in proc.stderr and "sha256" in proc.stderr
    assert not (tmp_path / "other").exists()


def test_a_base_without_a_build_record_is_refused(tmp_path, student_base, sample_catalog, tiny_checkpoint):
    old = tmp_path / "old"
    shutil.copytree(student_base, old)
    shutil.rmtree(old / "build")
    proc = run_cli(*base_args(sample_catalog, tmp_path / "x", old, tiny_checkpoint), check=False)
    assert proc.returncode == 2 and "build/" in proc.stderr and "is missing" in proc.stderr
    # a bundle exported before catalog builds existed has no lineage in its manifest at all
    m = read_manifest(old)
    del m["lineage"]
    (old / "manifest.json").write_text(json.dumps(m))
    proc = run_cli(*base_args(sample_catalog, tmp_path / "x", old, tiny_checkpoint), check=False)
    assert proc.returncode == 2 and "has no build record" in proc.stderr and "export it again" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_the_manifest_lists_every_file_but_the_build_record_and_the_thumbnails(tmp_path):
    from edge_search_export.catalog_build import _listed_files

    for rel in ("model.onnx", "index.usearch", "text/words.onnx", "build/images.jsonl", "thumbs/a.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "text" / "build").mkdir()  # only the top-level build/ and thumbs/ are left out
    (tmp_path / "text" / "build" / "kept.bin").write_bytes(b"x")
    assert _listed_files(tmp_path) == ["index.usearch", "model.onnx", "text/build/kept.bin", "text/words.onnx"]


def test_a_build_whose_columns_all_go_to_files_is_the_same_bundle(tmp_path, monkeypatch, student_base,
                                                                    sample_catalog, tiny_checkpoint):
    """A large catalog's columns wait on files while its index is built (columns.Spill, issue #15); a small
    one's stay in memory. With every column sent to files, the build writes the very same bundle."""
    from edge_search.cli import main
    from edge_search.core.columns import Spill

    moved = []
    original = Spill.array

    def array(self, a):
        out = original(self, a)
        moved.append(out is not a)
        return out

    monkeypatch.setattr(Spill, "SMALL", 0)
    monkeypatch.setattr(Spill, "array", array)
    out = tmp_path / "spilled"
    assert main([str(a) for a in base_args(sample_catalog, out, student_base, tiny_checkpoint)]) == 0
    assert sum(moved) >= 20  # the catalog's columns, the stream's, the product table's and the keys
    for name in ("index.usearch", "products.jsonl", "products.keys.npy", "build/images.jsonl"):
        assert (out / name).read_bytes() == (student_base / name).read_bytes(), name
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work folder left behind


def _scenes(folder: Path, count: int) -> Path:
    import cv2
    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(count):  # flat colours and noise: nothing like the sample catalog's products
        img = np.full((64, 64, 3), rng.integers(0, 256, 3), np.uint8) if i % 2 else \
            rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
        cv2.imwrite(str(folder / f"scene_{i:02d}.jpg"), img)
    return folder


def test_a_stores_own_scenes_join_the_bases_calibration(tmp_path, student_base, sample_catalog, tiny_checkpoint):
    import numpy as np

    scenes = _scenes(tmp_path / "store-scenes", 24)
    out = tmp_path / "store"
    run_cli(*base_args(sample_catalog, out, student_base, tiny_checkpoint, "--negatives", scenes))
    nm = read_manifest(out)["fidelity"]["no_match"]
    # (the tiny model names too few of its calibration views for a rule: what it is fitted on is checked)
    assert nm["negatives_dir"] == str(scenes)
    assert nm["source"].endswith("+ 24 store scenes (store-scenes)")
    negs = np.load(out / "build" / "negatives.npy")
    assert negs.shape[0] == 24 and np.allclose(np.linalg.norm(negs, axis=1), 1, atol=1e-3)
    # without --negatives the same build has none (before, --negatives with --base was silently ignored)
    plain = tmp_path / "plain"
    run_cli(*base_args(sample_catalog, plain, student_base, tiny_checkpoint))
    assert "scenes" not in read_manifest(plain)["fidelity"]["no_match"]["source"]
    assert not (plain / "build" / "negatives.npy").exists()
    # the scenes travel in the build record: a build on the store's bundle starts from them
    again = tmp_path / "again"
    run_cli(*base_args(sample_catalog, again, out, tiny_checkpoint, "--negatives", _scenes(tmp_path / "more", 6)))
    assert read_manifest(again)["fidelity"]["no_match"]["source"].endswith(
        "+ 6 store scenes (more) + 24 of the base's (24 store scenes (store-scenes))")
    both = np.load(again / "build" / "negatives.npy")
    assert both.shape[0] == 30 and np.allclose(both[6:], negs, atol=1e-6)


def test_store_scenes_that_are_not_there_are_one_line_and_write_nothing(tmp_path, student_base, sample_catalog,
                                                                       tiny_checkpoint):
    out = tmp_path / "store"
    proc = run_cli(*base_args(sample_catalog, out, student_base, tiny_checkpoint, "--negatives", tmp_path / "none"),
                   check=False)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "none: --negatives needs a folder of photos" in err[0], proc.stderr
    assert not out.exists()
