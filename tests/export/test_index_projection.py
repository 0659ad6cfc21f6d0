"""`export --index-projection D`: the search graph holds the catalog vectors' top D principal directions,
its candidates rescored with the full vectors; a build on such a base keeps the projection, its delta
segment built in it; a device installs and searches either (tiny teacher, random weights from a file)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from conftest import TINY_TEACHER, csv_rows, export_args, one_line_error, read_manifest, run_cli, write_csv

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def projected(tmp_path_factory, sample_catalog, tiny_checkpoint):
    out = tmp_path_factory.mktemp("projected") / "projected"
    run_cli(*export_args(sample_catalog, out, tiny_checkpoint, "--index-projection", "16"))
    return out


def _top1(bundle, images) -> list[str]:
    proc = run_cli("search", "--bundle", bundle, "--json", "-k", "3", "--min-score", "-1", *images)
    return [json.loads(line)["results"][0]["id"] for line in proc.stdout.splitlines()]


def test_a_projected_index_is_version_3_and_names_the_catalog(projected, sample_catalog):
    m = read_manifest(projected)
    ix = m["index"]
    assert m["schema_version"] == 3
    assert ix["projection_file"] == "index-projection.npy" and ix["rescore_file"] == "vectors.f16.npy"
    assert ix["exact"] is False and ix["expansion_search"] in (64, 128, 256, 512)
    assert {"index-projection.npy", "vectors.f16.npy", "index.usearch"} <= set(m["files"])
    p = np.load(projected / "index-projection.npy")
    assert p.shape == (64, 16) and p.dtype == np.float32
    assert np.allclose(p.T @ p, np.eye(16), atol=1e-4)  # orthonormal directions
    fid = m["fidelity"]["index"]
    assert fid["projected_dims"] == 16 and fid["search"] == "hnsw"
    assert {c["label"] for c in fid["candidates"]} == {"projected-i8+f16-rescore", "projected-f16+f16-rescore",
                                                       "projected-f32+f16-rescore"}
    images = sorted((sample_catalog.parent / "images").glob("*.jpg"))
    assert _top1(projected, images) == [img.stem for img in images]


def test_a_build_on_a_projected_base_keeps_its_projection_and_ships_a_delta(projected, sample_catalog, tiny_checkpoint,
                                                                            tmp_path):
    from edge_search.core.images import encode_jpeg, load_image

    rows = csv_rows(sample_catalog)
    photo = tmp_path / "new.jpg"
    photo.write_bytes(encode_jpeg(load_image(sample_catalog.parent / rows[1]["image"])[::-1].copy()))
    rows = [{**r, "image": str(sample_catalog.parent / r["image"])} for r in rows]
    rows.append({**rows[1], "id": "upside-down", "name": "Upside Down", "image": str(photo)})
    changed = write_csv(tmp_path / "added.csv", rows)
    b2 = tmp_path / "added"
    # (its teacher embeds the new image too, where the catalog encoder has it)
    run_cli("export", "--catalog", changed, "--out", b2, "--base", projected, "--teacher", TINY_TEACHER,
            "--pretrained", tiny_checkpoint, "--quiet", "--gate", "int8_top1_agreement=0.5",
            "--gate", "catalog_views_top1=0")
    m = read_manifest(b2)
    assert m["schema_version"] == 3 and m["index"]["projection_file"] == "index-projection.npy"
    per_image = read_manifest(projected)["index"]["count"] // 12  # its catalog encoder's vectors per image
    assert m["index"]["delta"]["count"] == per_image and m["index"]["delta"]["rescore_file"] == "index-delta.f16.npy"
    assert (b2 / "index-projection.npy").read_bytes() == (projected / "index-projection.npy").read_bytes()
    images = sorted((sample_catalog.parent / "images").glob("*.jpg"))
    assert _top1(b2, [*images, photo]) == [img.stem for img in images] + ["upside-down"]
    # the device already holds the projection and the base's graph: the delta carries neither
    run_cli("pack", b2, "--base", projected, "--out", tmp_path / "delta.tar")
    with tarfile.open(tmp_path / "delta.tar") as tar:
        names = tar.getnames()
    assert "index-delta.usearch" in names and "index-delta.f16.npy" in names
    assert "index-projection.npy" not in names and "index.usearch" not in names
    into = tmp_path / "kiosk"
    run_cli("install", projected, "--into", into)
    run_cli("install", tmp_path / "delta.tar", "--into", into)
    assert _top1(into / "current", [photo]) == ["upside-down"]


def test_projection_mistakes_are_one_line(projected, sample_catalog, tiny_checkpoint, tmp_path):
    # too few directions for this (random, tiny) teacher's space: the index gate measures it and fails
    proc = run_cli(*export_args(sample_catalog, tmp_path / "narrow", tiny_checkpoint, "--index-projection", "4"),
                   check=False)
    assert proc.returncode == 2
    one_line_error(proc, "fidelity gate 'index top-1 agreement vs exact f32' failed")
    assert not (tmp_path / "narrow").exists()
    proc = run_cli(*export_args(sample_catalog, tmp_path / "wide", tiny_checkpoint, "--index-projection", "100"),
                   check=False)
    assert proc.returncode == 2
    one_line_error(proc, "--index-projection 100", "only 64 dimensions")
    assert not (tmp_path / "wide").exists()
    proc = run_cli("export", "--catalog", sample_catalog, "--out", tmp_path / "on-base", "--base", projected,
                   "--index-projection", "8", "--quiet", check=False)
    assert proc.returncode == 2
    one_line_error(proc, "--index-projection is chosen with the model")
    # a damaged projection file is refused when the bundle is opened, before any search
    damaged = tmp_path / "damaged"
    import shutil

    shutil.copytree(projected, damaged)
    np.save(damaged / "index-projection.npy", np.full((64, 16), np.nan, np.float32))
    proc = run_cli("search", "--bundle", damaged, sorted((sample_catalog.parent / "images").glob("*.jpg"))[0],
                   check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "index-projection.npy" in proc.stderr
