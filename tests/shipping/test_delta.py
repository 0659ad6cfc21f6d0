"""Delta updates: `pack B2 --base B` ships only what a device holding B lacks; `install` fills the rest from
`current` when it is exactly B, verifies B2 whole, switches atomically, and `rollback` goes back to B.
The committed tiny bundle is B (its catalog is embedded by its ONNX model): no torch anywhere here."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from conftest import csv_rows, one_line_error, read_manifest, run_cli, write_csv


def build_on(base: Path, catalog: Path, out: Path, change) -> Path:
    rows = csv_rows(catalog)
    change(rows)
    changed = write_csv(out.parent / f"{out.name}.csv", [{**r, "image": str(catalog.parent / r["image"])} for r in rows])
    run_cli("export", "--catalog", changed, "--out", out, "--base", base, "--quiet",
            "--gate", "int8_top1_agreement=0.5", "--gate", "catalog_views_top1=0")
    return out


def files_of(bundle: Path) -> dict[str, str]:
    """sha256 of every file a device holds of the bundle (all but the unshipped build/ record)."""
    return {p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in bundle.rglob("*") if p.is_file() and p.relative_to(bundle).parts[0] != "build"}


@pytest.fixture(scope="module")
def base(tiny_bundle, sample_catalog, tmp_path_factory) -> Path:
    """B: the sample catalog as this environment encodes its images (JPEG bytes differ between OpenCV
    builds), built on the committed bundle's models; named like it."""
    return build_on(tiny_bundle, sample_catalog, tmp_path_factory.mktemp("b1") / "tiny-bundle", lambda rows: None)


@pytest.fixture(scope="module")
def repriced(base, sample_catalog, tmp_path_factory) -> Path:
    def reprice(rows):
        rows[0]["price"] = "0.01"

    return build_on(base, sample_catalog, tmp_path_factory.mktemp("b2") / "repriced", reprice)


def test_a_price_change_ships_the_changed_product_line_only(base, repriced, tmp_path):
    run_cli("pack", base, "--out", tmp_path / "full.tar")
    proc = run_cli("pack", repriced, "--base", base, "--out", tmp_path / "delta.tar")
    assert "a delta on" in proc.stdout
    with tarfile.open(tmp_path / "delta.tar") as tar:
        assert tar.getnames() == ["manifest.json", "delta-base.json", "delta/products.jsonl"]
        patch = tar.extractfile("delta/products.jsonl").read()
    # one product's line written out, the 11 others copied from the base's table in two runs
    new = (repriced / "products.jsonl").read_bytes().splitlines(keepends=True)
    assert patch == b"L %d\n" % len(new[0]) + new[0] + b"C 1 11\n"
    assert b'"price": 0.01' in new[0]
    assert (tmp_path / "delta.tar").stat().st_size < 0.2 * (tmp_path / "full.tar").stat().st_size


def test_delta_install_is_exactly_b2_and_rolls_back_to_b(base, repriced, tmp_path):
    into = tmp_path / "kiosk"
    run_cli("pack", base, "--out", tmp_path / "full.tar")
    run_cli("pack", repriced, "--base", base, "--out", tmp_path / "delta.tar")
    run_cli("install", tmp_path / "full.tar", "--into", into)
    proc = run_cli("install", tmp_path / "delta.tar", "--into", into)
    assert "unchanged file(s) taken from the previous bundle" in proc.stdout
    assert files_of(into / "current") == files_of(repriced)
    assert files_of(into / "previous") == files_of(base)
    run_cli("rollback", "--into", into)
    assert files_of(into / "current") == files_of(base)


def test_a_delta_needs_its_base_on_the_device(base, repriced, tmp_path):
    run_cli("pack", repriced, "--base", base, "--out", tmp_path / "delta.tar")
    empty = tmp_path / "empty"
    one_line_error(run_cli("install", tmp_path / "delta.tar", "--into", empty, check=False),
                   "a delta on tiny-bundle", "install tiny-bundle first")
    assert not (empty / "current").exists()
    # a device on another bundle: refused, and its current bundle stays
    other = tmp_path / "other"
    run_cli("install", repriced, "--into", other)
    before = os.readlink(other / "current")
    one_line_error(run_cli("install", tmp_path / "delta.tar", "--into", other, check=False), "a delta on tiny-bundle")
    assert os.readlink(other / "current") == before


def test_a_new_product_ships_its_vectors_and_thumbnail(base, sample_catalog, tmp_path):
    from edge_search.core.images import encode_jpeg, load_image

    photo = tmp_path / "new.jpg"
    photo.write_bytes(encode_jpeg(load_image(sample_catalog.parent / csv_rows(sample_catalog)[1]["image"])[::-1].copy()))

    def add(rows):
        rows.append({**rows[1], "id": "upside-down", "name": "Upside Down", "image": str(photo)})

    b2 = build_on(base, sample_catalog, tmp_path / "added", add)
    m = read_manifest(b2)
    assert m["lineage"]["changes"]["added"] == ["upside-down"]
    assert m["fidelity"]["catalog"]["embedded"]["student"] == 1  # only the new image
    run_cli("pack", b2, "--base", base, "--out", tmp_path / "delta.tar")
    with tarfile.open(tmp_path / "delta.tar") as tar:
        names = tar.getnames()
    thumbs = [n for n in names if n.startswith("thumbs/")]
    assert "index.usearch" in names and "delta/products.jsonl" in names and len(thumbs) == 1  # the new product's only
    into = tmp_path / "kiosk"
    run_cli("install", base, "--into", into)
    run_cli("install", tmp_path / "delta.tar", "--into", into)
    assert files_of(into / "current") == files_of(b2)


def test_a_signed_delta_is_checked_against_the_trusted_key(base, repriced, tmp_path):
    import shutil

    signed = tmp_path / "signed"
    shutil.copytree(repriced, signed)
    run_cli("keygen", "--out", tmp_path / "keys")
    run_cli("sign", signed, "--key", tmp_path / "keys" / "edge-search.key.pem")
    run_cli("pack", signed, "--base", base, "--out", tmp_path / "delta.tar")
    with tarfile.open(tmp_path / "delta.tar") as tar:
        assert tar.getnames()[:3] == ["manifest.json", "manifest.sig", "delta-base.json"]
    into = tmp_path / "kiosk"
    run_cli("install", base, "--into", into)
    run_cli("install", tmp_path / "delta.tar", "--into", into, "--trusted-key", tmp_path / "keys" / "edge-search.pub.pem")
    assert files_of(into / "current") == files_of(signed)
    run_cli("keygen", "--out", tmp_path / "other", "--name", "other")
    run_cli("rollback", "--into", into)
    one_line_error(run_cli("install", tmp_path / "delta.tar", "--into", into, "--trusted-key",
                           tmp_path / "other" / "other.pub.pem", check=False), "signature")


def test_an_embedding_cache_that_is_not_a_file_is_refused(base, sample_catalog, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    os.mkfifo(cache / "embeddings.sqlite")
    out = tmp_path / "b2"
    one_line_error(run_cli("export", "--catalog", sample_catalog, "--out", out, "--base", base,
                           "--embedding-cache", cache, "--quiet", check=False), "--embedding-cache", "is a FIFO")
    assert not out.exists()


def test_an_image_that_changes_while_the_catalog_builds_is_refused(tiny_bundle, sample_catalog, tmp_path):
    """A --base build takes each image's sha256 when it reads the catalog; an image it must embed is read
    again, and bytes that differ from that sha256 stop the build (no vectors of one file under another's)."""
    from dataclasses import replace

    from edge_search.core.catalog import read_catalog
    from edge_search.errors import ExportError
    from edge_search_export.catalog_build import load_base, stream_catalog
    from edge_search_export.embed_cache import EmbeddingCache

    base = load_base(tiny_bundle)
    catalog = read_catalog(sample_catalog, decoded={"0" * 64})
    assert all(r.sha256 for r in catalog.rows)
    changed = replace(catalog, rows=(replace(catalog.rows[0], sha256="f" * 64), *catalog.rows[1:]))
    with EmbeddingCache(tmp_path / "cache") as cache, pytest.raises(ExportError, match="changed while the catalog"):
        stream_catalog(changed, base.models, cache=cache, threads=1, teacher_embed=None, thumbs_dir=tmp_path,
                       progress=False)


def test_a_base_chosen_for_a_few_products_does_not_search_many_exactly(tiny_bundle):
    """The tiny base searches its 12 vectors exactly (faster there); a catalog 2x its size or more
    decides exact vs HNSW again, by timing both; within 2x it keeps the base's choice."""
    import numpy as np

    from edge_search.core.products import Product, ProductTable
    from edge_search_export.catalog_build import Stream, base_index_choice, load_base

    base = load_base(tiny_bundle)
    assert base.models.index["exact"] is True and base.bundle.manifest.index.count == 12

    def decide(n):
        rng = np.random.default_rng(n)
        vectors = rng.normal(size=(n, 64)).astype(np.float32)
        mild = (vectors[:, None, :] + 0.1 * rng.normal(size=(n, 2, 64))).astype(np.float32).reshape(n, -1)
        table = ProductTable.from_products([Product(id=str(i), name=str(i), keys=(i,)) for i in range(n)], n)
        choice = base_index_choice(base, Stream(vectors={"mild": mild}), 0.9)
        return choice(vectors, table)

    dtype, exact, rescore, report = decide(20)
    assert (dtype, exact, rescore) == ("f16", True, False) and report["search_from_base"] is True
    dtype, exact, rescore, report = decide(3000)
    assert (dtype, rescore) == ("f16", False) and report["search_from_base"] is False
    assert report["queries"] == 500 and report["search"] == ("exact" if exact else "hnsw")
    assert report["exact_search_ms"] > 0 and report["hnsw_search_ms"] > 0
