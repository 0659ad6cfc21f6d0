"""The committed tests/data/tiny-bundle is what tests/make_tiny_bundle.py makes:
regenerated here, every file is byte for byte the same (model.onnx after int8
quantization, the index, products, thumbnails) and so is the manifest, but for
the fields make_tiny_bundle.VOLATILE names (the producing versions, wall-clock
timings, and exact search vs HNSW, which the export chooses by timing them).
A failure after a change to the export or to a pinned version means the
runtime tests search a stale bundle: regenerate it with
`python tests/make_tiny_bundle.py` and commit the result."""

from __future__ import annotations

import json

from edge_search.core.bundle import Bundle
from make_tiny_bundle import COMMITTED, build, comparable, digests

REGENERATE = "tests/data/tiny-bundle is stale: run `python tests/make_tiny_bundle.py` and commit it"


def test_committed_bundle_is_what_the_script_makes(tmp_path):
    fresh = build(tmp_path / "tiny-bundle")
    assert digests(fresh) == digests(COMMITTED), REGENERATE
    ours, theirs = (json.loads((b / "manifest.json").read_text()) for b in (fresh, COMMITTED))
    assert comparable(ours) == comparable(theirs), REGENERATE
    assert set(theirs["producer"]) == set(ours["producer"])  # only the versions may differ


def test_committed_bundle_is_small_and_opens():
    size = sum(p.stat().st_size for p in COMMITTED.rglob("*") if p.is_file())
    assert size < 400_000, f"{size} bytes: the committed bundle must stay a few hundred KB"
    bundle = Bundle.open(COMMITTED)
    assert bundle.manifest.product_count == 12 and bundle.manifest.name == "tiny-bundle"
