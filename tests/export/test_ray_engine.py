"""`export --engine ray`: the catalog's embedding, the distillation views and the store bundles on a local
Ray of 2 CPUs give what the local engine gives (same top-k, scores within 1e-4), a bad image on a worker
is reported with its catalog line, and no Ray process is left behind. Skipped, with the reason, only where
the [scale] extra is not installed (tests/run.sh installs it)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import csv_rows, one_line_error, read_manifest, run_cli, write_csv
from edge_search.core.thumbnails import FOLDER as THUMBS

pytest.importorskip("ray", reason="--engine ray needs the [scale] extra: pip install 'edge-search[scale]'")

BASE_BUILD = ["--gate", "int8_top1_agreement=0.5", "--gate", "catalog_views_top1=0", "--quiet"]


def ray_processes() -> set[int]:
    """Ray's own daemons and workers on this machine (raylet, gcs_server, workers)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines()
            if any(k in line for k in ("raylet", "gcs_server", "ray::", "default_worker.py"))}


def build(catalog: Path, out: Path, base: Path, cache: Path, *extra: str, check: bool = True):
    return run_cli("export", "--catalog", catalog, "--out", out, "--base", base, "--rebase", *BASE_BUILD, *extra,
                   env={"EDGE_SEARCH_CACHE_DIR": str(cache)}, check=check)


def cached_vectors(cache: Path) -> dict[tuple[str, str, str], np.ndarray]:
    with sqlite3.connect(cache / "embeddings.sqlite") as db:
        return {(e, i, v): np.frombuffer(b, np.float32) for e, i, v, b in
                db.execute("SELECT encoder, image, view, vector FROM vectors")}


def answers(bundle: Path, images: list[Path]) -> list[list[tuple[str, float]]]:
    proc = run_cli("search", "--bundle", bundle, "-k", "5", "--min-score", "-1", "--json", *images)
    return [[(h["id"], h["score"]) for h in json.loads(line)["results"]] for line in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def cluster():
    """A running Ray of 2 CPUs (started here, as `ray start` starts one on a cluster's head) for the later
    builds to join with --ray-address: they must use it, and leave it running; shut down after them."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_and_ray(tiny_bundle, sample_catalog, tmp_path_factory):
    """The sample catalog built on the committed bundle's models (one fresh index segment), once on each
    engine, each with an embedding cache of its own."""
    root = tmp_path_factory.mktemp("engines")
    before = ray_processes()
    build(sample_catalog, root / "local", tiny_bundle, root / "cache-local")
    proc = build(sample_catalog, root / "ray", tiny_bundle, root / "cache-ray", "--engine", "ray", "--ray-workers", "2")
    return root, before, proc


def test_ray_build_gives_the_local_vectors_and_answers(local_and_ray, sample_catalog):
    root, _, _ = local_and_ray
    local, ray_ = cached_vectors(root / "cache-local"), cached_vectors(root / "cache-ray")
    # every image under every encoder the build needs (student and its mild views here), nothing else
    assert set(local) == set(ray_) and len(local) == 2 * len(csv_rows(sample_catalog))
    assert max(float(np.abs(local[k] - ray_[k]).max()) for k in local) < 1e-4
    images = sorted((sample_catalog.parent / "images").glob("*.jpg"))
    a, b = answers(root / "local", images), answers(root / "ray", images)
    assert [[i for i, _ in q] for q in a] == [[i for i, _ in q] for q in b]
    assert np.allclose([s for q in a for _, s in q], [s for q in b for _, s in q], atol=1e-4)
    # the product tables and thumbnails are the same bytes
    assert (root / "local" / "products.jsonl").read_bytes() == (root / "ray" / "products.jsonl").read_bytes()
    assert sorted(p.name for p in (root / "ray" / THUMBS).iterdir()) == \
        sorted(p.name for p in (root / "local" / THUMBS).iterdir()) != []


def test_the_manifest_says_how_it_was_built(local_and_ray):
    import ray

    root, _, proc = local_and_ray
    assert read_manifest(root / "local")["build"] == {"engine": "local", "workers": 1}
    assert read_manifest(root / "ray")["build"] == {"engine": "ray", "workers": 2, "ray": ray.__version__,
                                                    "address": "local"}
    assert "embedded 12 of 12 catalog images" in proc.stdout


def test_no_ray_process_is_left_behind(local_and_ray):
    _, before, _ = local_and_ray
    # the daemons ray.shutdown() stopped may still be exiting on a loaded machine (seen with both cores
    # busy): they must be gone within a bounded time, not at the instant the export returns
    deadline = time.monotonic() + 30
    while ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_processes() - before == set()


def test_only_images_the_cache_lacks_are_embedded_and_a_bad_one_is_a_bad_row(local_and_ray, tiny_bundle,
                                                                               sample_catalog, tmp_path):
    root, _, _ = local_and_ray
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache-ray", cache)  # holds the sample catalog's vectors
    rows = [{**r, "image": str(sample_catalog.parent / r["image"])} for r in csv_rows(sample_catalog)]
    new, bad = tmp_path / "new.jpg", tmp_path / "broken.jpg"
    new.write_bytes(Path(rows[0]["image"]).read_bytes() + b"\0")  # other bytes, the same picture
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    rows += [{**rows[0], "id": "new-product", "name": "New", "image": str(new)},
             {**rows[1], "id": "broken-product", "name": "Broken", "image": str(bad)}]
    catalog = write_csv(tmp_path / "c.csv", rows)
    # (the new product's image is its neighbour's picture: the self-retrieval gate is not what is measured)
    args = (catalog, tmp_path / "out", tiny_bundle, cache, "--engine", "ray", "--gate", "catalog_self_top1=0")
    held = set(cached_vectors(cache))
    proc = build(*args, check=False)
    one_line_error(proc, f"{catalog} line {len(rows) + 1}", "broken.jpg", "nothing written")
    assert not (tmp_path / "out").exists()
    # the workers embedded the new image only (its vector and its mild views'), and the cache kept it
    added = set(cached_vectors(cache)) - held
    assert len(added) == 2 and {image for _, image, _ in added} == {hashlib.sha256(new.read_bytes()).hexdigest()}
    proc = build(*args, "--skip-bad")
    assert f"skipped: {catalog} line {len(rows) + 1}" in proc.stderr
    assert "embedded 0 of 13 catalog images" in proc.stdout
    assert read_manifest(tmp_path / "out")["products"]["count"] == 13


def test_store_bundles_on_ray_are_the_local_ones(cluster, tiny_bundle, sample_catalog, tmp_path):
    import ray

    ids = [r["id"] for r in csv_rows(sample_catalog)]
    stores = tmp_path / "stores.csv"
    stores.write_text("store,id,price\n" + "".join(f"north,{i},1.5\n" for i in ids[:7])
                      + "".join(f"south,{i},\n" for i in ids[4:]))
    out = {}
    for engine in ("local", "ray"):
        out[engine] = tmp_path / engine
        run_cli("export", "--catalog", sample_catalog, "--out", out[engine], "--base", tiny_bundle, "--stores", stores,
                "--engine", engine, *(["--ray-address", cluster] if engine == "ray" else []), *BASE_BUILD,
                env={"EDGE_SEARCH_CACHE_DIR": str(tmp_path / f"cache-{engine}")})
    for store, count in (("north", 7), ("south", len(ids) - 4)):
        local, ray_ = out["local"] / store, out["ray"] / store
        assert read_manifest(ray_)["products"]["count"] == count
        assert (local / "products.jsonl").read_bytes() == (ray_ / "products.jsonl").read_bytes()
        images = sorted((sample_catalog.parent / "images").glob("*.jpg"))[:4]
        a, b = answers(local, images), answers(ray_, images)
        assert [[i for i, _ in q] for q in a] == [[i for i, _ in q] for q in b]
        assert read_manifest(ray_)["build"]["engine"] == "ray"
        assert read_manifest(ray_)["build"]["address"] == cluster  # joined, not started
    assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2  # and left running


def test_the_engine_options_are_checked(sample_catalog, tmp_path):
    proc = run_cli("export", "--catalog", sample_catalog, "--out", tmp_path / "o", "--ray-workers", "2",
                   check=False)
    one_line_error(proc, "--ray-workers go with --engine ray")
    proc = run_cli("export", "--catalog", sample_catalog, "--out", tmp_path / "o", "--engine", "ray",
                   "--ray-workers", "0", check=False)
    one_line_error(proc, "--ray-workers must be 1 or more")


def test_an_address_nobody_answers_on_is_one_line_at_once(sample_catalog, tmp_path):
    import socket
    import time

    with socket.socket() as s:  # a port just freed on this machine: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        t0 = time.monotonic()
        proc = run_cli("export", "--catalog", sample_catalog, "--out", tmp_path / "o", "--engine", "ray",
                       "--ray-address", address, check=False)
        one_line_error(proc, f"--ray-address {address}: nothing answers there")
        assert time.monotonic() - t0 < 60  # Ray's own retries take minutes
        assert not (tmp_path / "o").exists()
    proc = run_cli("export", "--catalog", sample_catalog, "--out", tmp_path / "o", "--engine", "ray",
                   "--ray-address", "headnode", check=False)
    one_line_error(proc, "--ray-address headnode: expected auto, HOST:PORT or ray://HOST:PORT")


def test_without_the_scale_extra_ray_is_one_line_of_advice(tiny_bundle, sample_catalog, tmp_path):
    runtime = os.environ.get("EDGE_SEARCH_RUNTIME_PYTHON")
    if not runtime:
        pytest.skip("EDGE_SEARCH_RUNTIME_PYTHON (tests/run.sh's runtime-only venv) is not set")
    proc = run_cli("export", "--catalog", sample_catalog, "--out", tmp_path / "o", "--base", tiny_bundle,
                   "--engine", "ray", check=False, python=runtime)
    one_line_error(proc, "needs the [scale] extra", "pip install 'edge-search[scale]'")
    assert not (tmp_path / "o").exists()


def test_a_worker_killed_mid_catalog_is_replaced_and_its_batch_runs_again(cluster, tiny_bundle, sample_catalog,
                                                                         tmp_path):
    import signal
    import time

    rows = csv_rows(sample_catalog)
    images = tmp_path / "images"
    images.mkdir()
    many = []
    for n in range(360):  # other bytes, the same pictures: every one embedded
        row = rows[n % len(rows)]
        path = images / f"{n:04d}.jpg"
        path.write_bytes((sample_catalog.parent / row["image"]).read_bytes() + n.to_bytes(4, "big"))
        many.append({**row, "id": f"{row['id']}-{n}", "name": f"{row['name']} {n}", "image": str(path)})
    catalog = write_csv(tmp_path / "many.csv", many)
    cmd = ["export", "--catalog", catalog, "--out", tmp_path / "out", "--base", tiny_bundle, "--rebase", *BASE_BUILD,
           "--gate", "catalog_self_top1=0", "--engine", "ray", "--ray-address", cluster, "--ray-workers", "2"]
    import sys

    def catalog_workers() -> list[int]:
        ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        return [int(line.split()[0]) for line in ps.splitlines() if "CatalogEmbedder" in line]

    earlier = set(catalog_workers())  # an earlier build's actors on the shared cluster are not this one's
    proc = subprocess.Popen([sys.executable, "-m", "edge_search", *map(str, cmd)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "EDGE_SEARCH_CACHE_DIR": str(tmp_path / "cache")})
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        workers = [pid for pid in catalog_workers() if pid not in earlier]
        if workers:
            time.sleep(1.5)  # let it take a batch
            try:
                os.kill(workers[0], signal.SIGKILL)
                killed = workers[0]
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    out, err = proc.communicate(timeout=300)
    assert killed is not None, "no catalog worker was seen running"
    assert proc.returncode == 0, err[-3000:]
    assert "embedded 360 of 360 catalog images" in out
    m = read_manifest(tmp_path / "out")
    assert m["products"]["count"] == 360
    # every product is new to the 12-product base: the lineage counts all 360, and lists the first 100 ids
    base_ids = [p["id"] for p in map(json.loads, (Path(tiny_bundle) / "products.jsonl").read_text().splitlines())]
    assert m["lineage"]["change_counts"] == {"added": 360, "removed": len(base_ids), "changed_metadata": 0,
                                             "changed_images": 0}
    assert m["lineage"]["changes"]["added"] == [r["id"] for r in many[:100]]
    assert m["lineage"]["changes"]["removed"] == base_ids
    assert f"on tiny-bundle: 360 added, {len(base_ids)} removed, 0 changed metadata, 0 changed images" in out


def test_a_model_build_on_ray_distills_on_the_views_it_embedded(cluster, exported_bundle, sample_catalog,
                                                                 tiny_checkpoint, tmp_path):
    from conftest import export_args

    on_ray = tmp_path / "ray"
    proc = run_cli(*export_args(sample_catalog, on_ray, tiny_checkpoint, "--engine", "ray", "--ray-address", cluster,
                                "--ray-workers", "2"),
                   env={"EDGE_SEARCH_CACHE_DIR": str(tmp_path / "cache")})
    assert "embedded 12 of 12 catalog images" in proc.stdout
    a, b = read_manifest(exported_bundle), read_manifest(on_ray)  # the same export on the local engine
    assert b["build"]["engine"] == "ray" and a["build"]["engine"] == "local"
    # the same views with the teacher's targets to float rounding: as many views, and the same losses
    da, db = a["student"]["distillation"], b["student"]["distillation"]
    assert da["views"] == db["views"] > 0
    assert da["final"]["loss"] == pytest.approx(db["final"]["loss"], rel=1e-3)
    assert a["teacher"] == b["teacher"] and a["products"] == b["products"] and sorted(a["files"]) == sorted(b["files"])


DRIVER_WATCH = ("import atexit, runpy, sys\n"
                "atexit.register(lambda: print('ray imported by the driver:', 'ray' in sys.modules))\n"
                "sys.argv = ['edge-search', *sys.argv[1:]]\n"
                "runpy.run_module('edge_search', run_name='__main__')\n")


def test_the_ray_pass_runs_apart_and_the_driver_never_starts_ray(tiny_bundle, sample_catalog, tmp_path):
    """What the pass leaves in a process (Ray's and pyarrow's native memory) goes with its child process:
    the driver that builds the index never imports ray (export/ray_pass.py); the build record still says Ray."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", DRIVER_WATCH, "export", "--catalog", str(sample_catalog), "--out",
                           str(out), "--base", str(tiny_bundle), "--rebase", *BASE_BUILD, "--engine", "ray"],
                          capture_output=True, text=True, env={**os.environ, "EDGE_SEARCH_CACHE_DIR": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ray imported by the driver: False" in proc.stdout
    build = read_manifest(out)["build"]
    assert build["engine"] == "ray" and build["workers"] >= 1 and build["address"] == "local"
    assert "embedded 12 of 12 catalog images" in proc.stdout
