"""The committed tests/data/tiny-bundle is what tests/make_tiny_bundle.py makes:
regenerated here, products, thumbnails, the key file, the image list and the
build record are byte for byte the same; the int8 model equals it value by value
within float rounding (the last bit of a sum depends on the CPU); the index and
calibration vectors, which the int8 model made, point the same way within what
the CPU's int8 kernels allow; so does the manifest, its figures measured through
the int8 model within a couple of near-tied queries, but for the fields
make_tiny_bundle.VOLATILE names (the producing versions and wall-clock timings).
A failure after a change to the export or to a pinned version means the
runtime tests search a stale bundle: regenerate it with
`python tests/make_tiny_bundle.py` and commit the result."""

from __future__ import annotations

import json

from edge_search.core.bundle import Bundle
from make_tiny_bundle import COMMITTED, build, comparable, digests, float_file_differences, manifest_differences

REGENERATE = "tests/data/tiny-bundle is stale: run `python tests/make_tiny_bundle.py` and commit it"


def test_committed_bundle_is_what_the_script_makes(tmp_path):
    fresh = build(tmp_path / "tiny-bundle")
    assert digests(fresh) == digests(COMMITTED), REGENERATE
    assert not float_file_differences(fresh, COMMITTED), REGENERATE
    ours, theirs = (json.loads((b / "manifest.json").read_text()) for b in (fresh, COMMITTED))
    assert not manifest_differences(comparable(ours), comparable(theirs)), REGENERATE
    assert set(theirs["producer"]) == set(ours["producer"])  # only the versions may differ


def test_committed_bundle_is_small_and_opens():
    size = sum(p.stat().st_size for p in COMMITTED.rglob("*") if p.is_file())
    assert size < 400_000, f"{size} bytes: the committed bundle must stay a few hundred KB"
    bundle = Bundle.open(COMMITTED)
    assert bundle.manifest.product_count == 12 and bundle.manifest.name == "tiny-bundle"


def test_the_comparison_forgives_rounding_and_nothing_more(tmp_path):
    import shutil

    import numpy as np

    copy = tmp_path / "copy"
    shutil.copytree(COMMITTED, copy)
    assert not float_file_differences(copy, COMMITTED)
    cal = np.load(COMMITTED / "build/calibration.npy")
    np.save(copy / "build/calibration.npy", np.nextafter(cal, np.inf))  # one ulp: a CPU's rounding
    assert not float_file_differences(copy, COMMITTED)
    # int8 steps flipped by another CPU's kernels: each row turned by a cosine of 0.9999, length kept
    turn = np.random.default_rng(0).normal(size=cal.shape).astype(np.float32)
    turn -= (turn * cal).sum(1, keepdims=True) * cal
    turn /= np.linalg.norm(turn, axis=1, keepdims=True)

    def turned(cosine: float):
        return (cosine * cal + np.sqrt(1 - cosine ** 2) * turn).astype(np.float32)

    np.save(copy / "build/calibration.npy", turned(0.9999))
    assert not float_file_differences(copy, COMMITTED)
    np.save(copy / "build/calibration.npy", turned(0.99))  # a real change: another preprocessing, say
    assert float_file_differences(copy, COMMITTED)[0].startswith("build/calibration.npy: min cosine 0.99")
    np.save(copy / "build/calibration.npy", cal[::-1])  # the same vectors, another order
    assert float_file_differences(copy, COMMITTED)[0].startswith("build/calibration.npy: min cosine")
    np.save(copy / "build/calibration.npy", cal * 1.01)  # not unit length any more
    assert float_file_differences(copy, COMMITTED) == ["build/calibration.npy: lengths differ by up to " +
                                                       f"{float(np.abs(np.linalg.norm(cal * 1.01, axis=1) - np.linalg.norm(cal, axis=1)).max()):.3g}"]
    m = json.loads((COMMITTED / "manifest.json").read_text())
    fid = m["fidelity"]["int8_vs_fp32"]
    key = next(k for k, v in fid.items() if isinstance(v, float) and v > 0.5)

    def measured(value):
        return {**m, "fidelity": {**m["fidelity"], "int8_vs_fp32": {**fid, key: value}}}

    assert not manifest_differences(measured(fid[key] * (1 + 1e-6)), m)
    assert not manifest_differences(measured(fid[key] - 2 / 15), m)  # two near-tied queries of 15 flipped
    assert manifest_differences(measured(fid[key] - 0.3), m) == [
        f"manifest.fidelity.int8_vs_fp32.{key}: {fid[key] - 0.3!r} vs {fid[key]!r}"]
    quant = m["fidelity"]["quantization"]  # settings, not measurements: exact but for rounding
    assert manifest_differences({**m, "fidelity": {**m["fidelity"], "quantization": {**quant, "percentile": 99.9}}}, m) == [
        f"manifest.fidelity.quantization.percentile: 99.9 vs {quant['percentile']!r}"]
    assert manifest_differences({**m, "search": {**m["search"], "min_score": m["search"]["min_score"] - 0.3}}, m)
    assert manifest_differences({**m, "name": "other"}, m) == ["manifest.name: 'other' vs 'tiny-bundle'"]


def test_a_wider_tiny_bundle_for_the_scale_bench(tmp_path):
    """bench/scale.py --base-width: the same tiny tower, a real model's embedding width, every vector of it."""
    wide = build(tmp_path / "wide", embed_dim=512)
    bundle = Bundle.open(wide)
    assert bundle.manifest.product_count == 12
    assert json.loads((wide / "manifest.json").read_text())["model"]["embed_dim"] == 512
    from usearch.index import Index

    index = Index.restore(str(wide / "index.usearch"))
    assert (index.ndim, len(index)) == (512, 12)
    committed = json.loads((COMMITTED / "manifest.json").read_text())
    assert committed["model"]["embed_dim"] == 64  # the default is untouched
