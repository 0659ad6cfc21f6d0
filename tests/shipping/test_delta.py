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
    # the base's index file stays on the device: the new image's vector comes as a delta segment
    assert "index-delta.usearch" in names and "index.usearch" not in names
    assert "delta/products.jsonl" in names and len(thumbs) == 1  # the new product's only
    assert m["schema_version"] == 2 and m["index"]["delta"] == {"file": "index-delta.usearch", "count": 1,
                                                                "removed": 0, "removed_file": None,
                                                                "rescore_file": None}
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


def test_a_base_chosen_for_a_few_products_does_not_search_many_exactly(tiny_bundle, monkeypatch):
    """The tiny base searches its 12 vectors exactly (faster there); a catalog 2x its size or more
    decides exact vs HNSW again, by timing both (on a seeded sample of a large index); within 2x it keeps
    the base's choice."""
    import numpy as np

    from edge_search.core.products import Product, ProductTable
    import edge_search_export.catalog_build as cb

    base = cb.load_base(tiny_bundle)
    assert base.models.index["exact"] is True and base.bundle.manifest.index.count == 12

    def decide(n):
        rng = np.random.default_rng(n)
        vectors = rng.normal(size=(n, 64)).astype(np.float32)
        mild = (vectors[:, None, :] + 0.1 * rng.normal(size=(n, 2, 64))).astype(np.float32).reshape(n, -1)
        table = ProductTable.from_products([Product(id=str(i), name=str(i), keys=(i,)) for i in range(n)], n)
        stream = cb.Stream(shas=[f"{i:064x}" for i in range(n)], vectors={"student": vectors, "mild": mild})
        choice = cb.base_index_choice(base, stream, 0.9)
        return choice(cb.IndexVectors.of(stream, "student"), table)

    plan = decide(20)
    assert (plan.dtype, plan.exact, plan.rescore, plan.projection) == ("f16", True, False, None)
    assert plan.report["search_from_base"] is True
    plan = decide(3000)
    report = plan.report
    assert (plan.dtype, plan.rescore) == ("f16", False) and report["search_from_base"] is False
    assert report["queries"] == 500 and report["search"] == ("exact" if plan.exact else "hnsw")
    assert report["exact_search_ms"] > 0 and report["hnsw_search_ms"] > 0
    assert report["timed_on_vectors"] == 3000
    monkeypatch.setattr(cb, "CHOICE_VECTORS", 1000)  # a larger index is timed on a sample of it
    assert decide(3000).report["timed_on_vectors"] == 1000


@pytest.fixture(scope="module")
def generated(tiny_bundle, tmp_path_factory):
    """B on 40 generated products (the update benchmark's images), and B2: 1 product added, 1 removed and
    1 repriced, built on B as a delta segment and again re-based; all on the committed bundle's models."""
    from bench.update import RELAXED, write_catalog

    work = tmp_path_factory.mktemp("generated")
    prices = {i: 1.0 + i for i in range(41)}
    env = {"EDGE_SEARCH_CACHE_DIR": str(work / "cache")}
    b = work / "B"
    run_cli("export", "--catalog", write_catalog(work / "c1", list(range(40)), prices), "--out", b, "--base",
            tiny_bundle, "--quiet", *RELAXED, env=env)
    ids = [i for i in range(40) if i != 7] + [40]
    c2 = write_catalog(work / "c2", ids, {**prices, 3: 0.5})
    b2, rebased = work / "B2", work / "B2-rebased"
    run_cli("export", "--catalog", c2, "--out", b2, "--base", b, "--quiet", *RELAXED, env=env)
    run_cli("export", "--catalog", c2, "--out", rebased, "--base", b, "--rebase", "--quiet", *RELAXED, env=env)
    return work, b, b2, rebased


def search_all(bundle: Path, images: list[Path]) -> list[list[tuple[str, float]]]:
    import json

    out = []
    for img in images:
        hits = json.loads(run_cli("search", "--bundle", bundle, img, "--json", "-k", "5",
                                  "--min-score", "-1").stdout)["results"]
        out.append([(h["id"], h["score"]) for h in hits])
    return out


def test_a_delta_segment_answers_as_the_same_catalog_rebased(generated):
    work, b, b2, rebased = generated
    m, r = read_manifest(b2), read_manifest(rebased)
    assert m["index"]["file"] == "index.usearch" and m["index"]["count"] == 40
    assert m["index"]["delta"]["count"] == 1 and m["index"]["delta"]["removed"] == 1
    assert (b2 / "index.usearch").read_bytes() == (b / "index.usearch").read_bytes()  # the base's own file
    assert "delta" not in r["index"] and r["index"]["count"] == 40 and r["schema_version"] == 1
    assert r["fidelity"]["index"]["rebased"] == "asked (--rebase)"
    # unchanged products keep their keys, so their product-table lines are the base's, byte for byte
    old_lines = set((b / "products.jsonl").read_bytes().splitlines())
    new_lines = (b2 / "products.jsonl").read_bytes().splitlines()
    assert sum(line not in old_lines for line in new_lines) == 2  # the repriced product and the added one
    queries = [work / "c2" / "images" / f"{i:06d}.jpg" for i in (0, 3, 20, 39, 40)] + [work / "c1" / "images" / "000007.jpg"]
    got, want = search_all(b2, queries), search_all(rebased, queries)
    for g, w in zip(got, want):
        assert [pid for pid, _ in g] == [pid for pid, _ in w]
        assert max(abs(a - c) for (_, a), (_, c) in zip(g, w)) <= 1e-3
    assert all("p000007" not in [pid for pid, _ in g] for g in got)  # the removed product is never named
    assert got[4][0][0] == "p000040"  # the added one is found by its own image


def test_a_delta_segment_ships_small_and_installs_whole(generated, tmp_path):
    work, b, b2, _ = generated
    run_cli("pack", b2, "--base", b, "--out", tmp_path / "delta.tar")
    with tarfile.open(tmp_path / "delta.tar") as tar:
        names = tar.getnames()
    assert {"index-delta.usearch", "index-removed.npy", "delta/products.jsonl"} <= set(names)
    assert "index.usearch" not in names and "model.onnx" not in names
    into = tmp_path / "kiosk"
    run_cli("install", b, "--into", into)
    run_cli("install", tmp_path / "delta.tar", "--into", into)  # verified whole, self-tested, switched
    assert files_of(into / "current") == files_of(b2)
    # and B3 on B2 (a delta on a delta): B's file still, the delta segment carried and grown
    env = {"EDGE_SEARCH_CACHE_DIR": str(work / "cache")}
    from bench.update import RELAXED, write_catalog

    ids = [i for i in range(40) if i != 7] + [40, 41]
    b3 = work / "B3"
    run_cli("export", "--catalog", write_catalog(work / "c3", ids, {i: 1.0 + i for i in range(42)}), "--out", b3,
            "--base", b2, "--quiet", *RELAXED, env=env)
    m3 = read_manifest(b3)
    assert m3["index"]["delta"]["count"] == 2 and m3["index"]["delta"]["removed"] == 1
    assert (b3 / "index.usearch").read_bytes() == (b / "index.usearch").read_bytes()
    assert m3["fidelity"]["catalog"]["embedded"]["student"] == 1
    run_cli("pack", b3, "--base", b2, "--out", tmp_path / "delta3.tar")
    run_cli("install", tmp_path / "delta3.tar", "--into", into)
    assert files_of(into / "current") == files_of(b3)
    hits = search_all(into / "current", [work / "c3" / "images" / "000041.jpg", work / "c3" / "images" / "000040.jpg"])
    assert hits[0][0][0] == "p000041" and hits[1][0][0] == "p000040"


def test_a_delta_past_its_share_of_the_base_is_rebased(generated, tmp_path):
    work, b, _, _ = generated
    from bench.update import RELAXED, write_catalog

    out = tmp_path / "big"
    run_cli("export", "--catalog", write_catalog(work / "c4", list(range(30)), {i: 1.0 for i in range(30)}),
            "--out", out, "--base", b, "--quiet", *RELAXED, env={"EDGE_SEARCH_CACHE_DIR": str(work / "cache")})
    m = read_manifest(out)
    assert "delta" not in m["index"] and m["index"]["count"] == 30
    assert "passed 10%" in m["fidelity"]["index"]["rebased"]


def test_store_bundles_keep_their_previous_keys_with_previous(generated, tmp_path):
    """Nightly per-store builds on the chain's models: with --previous (last night's --out) each store bundle
    keeps its own previous bundle's index keys, so a store's delta carries no index file; without it, each
    store's index starts afresh."""
    work, b, _, _ = generated
    env = {"EDGE_SEARCH_CACHE_DIR": str(work / "cache")}
    from bench.update import RELAXED

    def stores(path, north):
        return write_csv(path, [{"store": "north", "id": f"p{i:06d}", "price": "", "aisle": "3"} for i in north])

    rel1, rel2, fresh = tmp_path / "rel1", tmp_path / "rel2", tmp_path / "fresh"
    run_cli("export", "--catalog", work / "c1" / "catalog.csv", "--stores", stores(tmp_path / "s1.csv", range(30)),
            "--base", b, "--out", rel1, "--quiet", *RELAXED, env=env)
    north2 = stores(tmp_path / "s2.csv", [i for i in range(30) if i != 7] + [40])
    for out, extra in ((rel2, ["--previous", rel1]), (fresh, [])):
        run_cli("export", "--catalog", work / "c2" / "catalog.csv", "--stores", north2, "--base", b, "--out", out,
                "--quiet", *RELAXED, *extra, env=env)
    m = read_manifest(rel2 / "north")
    assert m["index"]["delta"]["count"] == 1 and m["index"]["delta"]["removed"] == 1
    assert m["lineage"]["keys_from"]["name"] == "north"
    assert "delta" not in read_manifest(fresh / "north")["index"]
    run_cli("pack", rel2 / "north", "--base", rel1 / "north", "--out", tmp_path / "north.tar")
    with tarfile.open(tmp_path / "north.tar") as tar:
        assert "index.usearch" not in tar.getnames()
    into = tmp_path / "kiosk"
    run_cli("install", rel1 / "north", "--into", into)
    run_cli("install", tmp_path / "north.tar", "--into", into)
    assert files_of(into / "current") == files_of(rel2 / "north")
    one_line_error(run_cli("export", "--catalog", work / "c2" / "catalog.csv", "--base", b, "--out", tmp_path / "x",
                           "--previous", rel1, check=False), "--previous", "--stores")


def test_the_cache_vouches_for_a_file_only_while_its_stat_is_unchanged(tmp_path):
    """A nightly build skips reading an image whose (size, mtime, ctime, inode, device) the cache recorded
    with its sha256; a file written since, even to the same size, is read again; and a file written too
    close to the build that hashed it (ctime not safely before the build's start) is never recorded."""
    import hashlib
    import time

    from edge_search_export.embed_cache import EmbeddingCache

    image = tmp_path / "a.jpg"
    image.write_bytes(b"first version")
    sha = hashlib.sha256(b"first version").hexdigest()
    with EmbeddingCache(tmp_path / "cache") as cache:
        assert cache.remember_files([(image, sha)], build_start_ns=time.time_ns()) == 0  # too recent to vouch
        assert cache.file_sha(image) is None
        later = time.time_ns() + 10**10  # a build that started well after the file was written
        assert cache.remember_files([(image, sha)], build_start_ns=later) == 1
        assert cache.file_sha(image) == sha
        assert cache.file_sha(tmp_path / "." / "a.jpg") == sha  # one file, however it is named
        time.sleep(0.01)
        image.write_bytes(b"other version")  # same size, other bytes
        assert cache.file_sha(image) is None
        assert cache.file_sha(tmp_path / "missing.jpg") is None


def test_the_cache_remembers_a_long_listing_a_chunk_at_a_time(tmp_path, monkeypatch):
    """A million-file catalog's hashes are written as they are listed (a generator, REMEMBER_CHUNK at a time),
    every one of them, with missing files and folders left out wherever they fall."""
    import hashlib
    import time

    import edge_search_export.embed_cache as embed_cache

    monkeypatch.setattr(embed_cache, "REMEMBER_CHUNK", 2)
    files = []
    for i in range(5):
        f = tmp_path / f"{i}.jpg"
        f.write_bytes(b"image %d" % i)
        files.append((str(f), hashlib.sha256(f.read_bytes()).hexdigest()))
    listing = [files[0], (str(tmp_path / "gone.jpg"), "0" * 64), *files[1:3], (str(tmp_path), "1" * 64), *files[3:]]
    with embed_cache.EmbeddingCache(tmp_path / "cache") as cache:
        assert cache.remember_files((pair for pair in listing), build_start_ns=time.time_ns() + 10**10) == 5
        assert [cache.file_sha(path) for path, _ in files] == [sha for _, sha in files]
        assert cache.file_sha(tmp_path / "gone.jpg") is None and cache.file_sha(tmp_path) is None
