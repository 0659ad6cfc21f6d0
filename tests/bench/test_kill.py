"""SIGKILL `export` and `install` at random moments, again and again: the
bundle folder (or DIR/current) is always the old complete bundle or the new
complete one, never part of one. EDGE_SEARCH_KILL_EXPORTS and
EDGE_SEARCH_KILL_INSTALLS set the number of kills (defaults 6 and 30)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time

import pytest

from conftest import export_args, run_cli

EXPORTS = int(os.environ.get("EDGE_SEARCH_KILL_EXPORTS", "3"))
INSTALLS = int(os.environ.get("EDGE_SEARCH_KILL_INSTALLS", "30"))


def _start(*args):
    return subprocess.Popen([sys.executable, "-m", "edge_search", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _kill_after(proc, delay):
    try:
        proc.wait(timeout=delay)
        return False  # it finished first
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


def _whole(path):
    """The manifest's created stamp of a complete, verifying bundle at `path` (None when absent)."""
    from edge_search.core.bundle import Bundle

    if not os.path.lexists(path):
        return None
    return Bundle.open(path, verify=True).manifest.created + "/" + Bundle.open(path, verify=False).manifest.name


@pytest.mark.export
def test_killed_exports_leave_the_old_or_the_new_bundle(sample_catalog, tiny_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    args = export_args(sample_catalog, out, tiny_checkpoint, "--force", "--epochs", "1")
    # first: how long one export takes here, and a first complete bundle
    t0 = time.perf_counter()
    run_cli(*args)
    took = time.perf_counter() - t0
    rng = random.Random(6)
    kills = kept = published = 0
    # kill points spread over the run, half of them late, where the bundle is written and published
    fractions = [rng.uniform(0.05, 0.6) for _ in range(EXPORTS // 2)]
    fractions += [rng.uniform(0.6, 0.95) for _ in range(EXPORTS - len(fractions))]
    for f in fractions:
        old = _whole(out)
        proc = _start(*args)
        killed = _kill_after(proc, f * took)
        kills += killed
        now = _whole(out)  # raises unless what is there is a whole bundle that verifies
        assert now is not None, "the old bundle disappeared"
        kept += now == old
        published += now != old  # each export stamps its own `created`: a new complete bundle
    # leftovers of killed runs are cleaned by the next export
    run_cli(*args)
    assert not list(tmp_path.glob(".bundle.partial-*")) and not list(tmp_path.glob(".bundle.old-*"))
    print(f"export: {kills} kills of {EXPORTS} runs; old kept {kept}, new published {published}; "
          f"one export {took:.1f} s")
    assert kills >= EXPORTS // 2


def test_killed_installs_leave_current_on_a_whole_bundle(tiny_bundle, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    m = json.loads((other / "manifest.json").read_text())
    m["name"] = "other"
    (other / "manifest.json").write_text(json.dumps(m))
    packs = [tmp_path / "a.tar.gz", tmp_path / "b.tar"]
    run_cli("pack", tiny_bundle, "--out", packs[0])
    run_cli("pack", other, "--out", packs[1])
    into = tmp_path / "kiosk"
    t0 = time.perf_counter()
    run_cli("install", packs[0], "--into", into)
    took = time.perf_counter() - t0
    names = {json.loads((tiny_bundle / "manifest.json").read_text())["name"], "other"}
    rng = random.Random(7)
    kills = switched = 0
    for i in range(INSTALLS):
        before = os.readlink(into / "current")
        proc = _start("install", packs[(i + 1) % 2], "--into", into)
        t0 = time.perf_counter()
        # kill points around the end of an install, where it unpacks, verifies and switches;
        # every 5th run finishes, to follow how long an install takes on this (shared) machine now
        if i % 5 == 4:
            assert proc.wait(timeout=120) == 0
            took = time.perf_counter() - t0
        else:
            kills += _kill_after(proc, took * rng.uniform(0.5, 1.05))
        current = _whole(into / "current")
        assert current is not None and current.split("/")[-1] in names
        if os.path.lexists(into / "previous"):
            assert _whole(into / "previous").split("/")[-1] in names
        switched += os.readlink(into / "current") != before
    run_cli("install", packs[0], "--into", into)
    assert not list(into.glob(".staging-*")) and not list(into.glob(".current-*"))
    assert len(list((into / "bundles").iterdir())) <= 2
    print(f"install: {kills} kills in {INSTALLS} runs, current switched {switched} times, "
          f"one install {took:.1f} s")
    assert kills >= INSTALLS // 2 and switched >= INSTALLS // 5


def test_killed_delta_installs_leave_the_base_or_the_new_bundle(tiny_bundle, sample_catalog, tmp_path):
    from conftest import csv_rows, write_csv

    rows = csv_rows(sample_catalog)
    rows[0]["price"] = "0.01"
    catalog = write_csv(tmp_path / "b2.csv", [{**r, "image": str(sample_catalog.parent / r["image"])} for r in rows])
    b2 = tmp_path / "b2"
    run_cli("export", "--catalog", catalog, "--out", b2, "--base", tiny_bundle, "--name", "b2", "--quiet",
            "--gate", "int8_top1_agreement=0.5", "--gate", "catalog_views_top1=0")
    run_cli("pack", b2, "--base", tiny_bundle, "--out", tmp_path / "delta.tar")
    into = tmp_path / "kiosk"
    run_cli("install", tiny_bundle, "--into", into)
    t0 = time.perf_counter()
    run_cli("install", tmp_path / "delta.tar", "--into", into)
    took = time.perf_counter() - t0
    names = {json.loads((tiny_bundle / "manifest.json").read_text())["name"], "b2"}
    rng = random.Random(11)
    kills = 0
    for _ in range(max(6, INSTALLS // 3)):
        if _whole(into / "current").endswith("/b2"):
            run_cli("rollback", "--into", into)  # back on the base: the delta applies again
        kills += _kill_after(_start("install", tmp_path / "delta.tar", "--into", into), took * rng.uniform(0.3, 1.05))
        current = _whole(into / "current")
        assert current is not None and current.split("/")[-1] in names
    assert kills >= 3
