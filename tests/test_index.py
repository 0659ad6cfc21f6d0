"""The vector index: storage dtypes, saving and memory-mapped reopening,
exact and HNSW search, and f16 rescoring, checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from edge_search.errors import BundleError
from edge_search.index import VectorIndex
from edge_search.manifest import IndexInfo


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 4), dim))
    return (centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.mark.parametrize("dtype,rescore", [("f32", False), ("f16", False), ("i8", False), ("i8", True)])
def test_round_trip_and_agreement_with_exact(tmp_path, dtype, rescore):
    vecs = clustered(300, 64)
    queries = vecs[:50] + 0.05 * np.random.default_rng(1).standard_normal((50, 64)).astype(np.float32)
    index = VectorIndex.build(vecs, dtype=dtype, rescore=rescore)
    ipath, rpath = tmp_path / "i.usearch", tmp_path / "r.npy"
    index.save(ipath, rpath if rescore else None)
    info = IndexInfo(file="i.usearch", dtype=dtype, metric="cos", count=300, exact=True,
                     rescore_file="r.npy" if rescore else None)
    reopened = VectorIndex.open(ipath, info, rpath if rescore else None)
    keys, scores = reopened.search(queries, 5)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    exact = np.argmax(qn @ unit.T, axis=1)
    assert keys.shape == (50, 5)
    assert (keys[:, 0] == exact).mean() >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # sorted best first
    best = (qn * unit[keys[:, 0]]).sum(1)
    assert np.allclose(scores[:, 0], best, atol=0.05 if dtype == "i8" and not rescore else 0.01)


def test_single_query_and_k_larger_than_index():
    vecs = clustered(3, 16)
    index = VectorIndex.build(vecs, dtype="f32")
    keys, scores = index.search(vecs[1], 10)
    assert keys.shape == (1, 3) and keys[0, 0] == 1 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_hnsw_mode_finds_neighbours():
    vecs = clustered(2000, 32)
    index = VectorIndex.build(vecs, dtype="f16", exact=False)
    keys, _ = index.search(vecs[:100], 1)
    assert (keys[:, 0] == np.arange(100)).mean() >= 0.98


def test_count_mismatch_and_garbage_are_bundle_errors(tmp_path):
    vecs = clustered(10, 8)
    VectorIndex.build(vecs, dtype="f32").save(tmp_path / "i.usearch")
    info = IndexInfo(file="i.usearch", dtype="f32", metric="cos", count=11)
    with pytest.raises(BundleError, match="holds 10 vectors"):
        VectorIndex.open(tmp_path / "i.usearch", info)
    (tmp_path / "bad.usearch").write_bytes(b"not an index at all" * 10)
    with pytest.raises(BundleError, match="bad.usearch"):
        VectorIndex.open(tmp_path / "bad.usearch", info)
