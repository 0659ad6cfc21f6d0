"""The vector index: storage dtypes, saving and memory-mapped reopening,
exact and HNSW search, and f16 rescoring, checked against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_search.errors import BundleError
from edge_search.core.index import VectorIndex, load_projection, projection_of
from edge_search.core.manifest import IndexInfo


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


@pytest.mark.parametrize("dtype", ["f32", "f16", "i8"])
def test_index_file_layout_check_accepts_what_we_write(tmp_path, dtype):
    from edge_search.core.index import check_index_file

    for n in (1, 40, 600):
        path = tmp_path / f"{n}.usearch"
        VectorIndex.build(np.random.default_rng(n).normal(size=(n, 24)).astype(np.float32), dtype=dtype,
                          exact=False).save(path)
        assert check_index_file(path, n, dtype) is None


def test_corrupt_graph_is_a_bundle_error_not_a_crash(tmp_path):
    """usearch follows a neighbour slot past the graph into unmapped memory (a segfault,
    seen in the fuzz suite); the layout check refuses such files before usearch reads them."""
    import struct

    from edge_search.core.index import check_index_file

    n, dim = 30, 16
    path = tmp_path / "ok.usearch"
    VectorIndex.build(np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32), dtype="f32",
                      exact=False).save(path)
    good = path.read_bytes()
    h = 8 + n * dim * 4  # the vectors block, then usearch's 64-byte header, the graph header, the level table
    _, _conn, conn0, _, _ = struct.unpack_from("<5Q", good, h + 64)
    first_node = h + 64 + 40 + 2 * n
    level0 = first_node + 10  # key u64, level i16, then the neighbour count and slots

    def corrupt(at: int, value: bytes) -> Path:
        bad = bytearray(good)
        bad[at:at + len(value)] = value
        out = tmp_path / f"bad-{at}.usearch"
        out.write_bytes(bytes(bad))
        return out

    cases = {
        "outside the graph": corrupt(level0 + 4, struct.pack("<I", 10_000)),
        "more neighbours": corrupt(level0, struct.pack("<I", conn0 + 1)),
        "disagrees with the level table": corrupt(first_node + 8, struct.pack("<h", 3)),
        "graph header": corrupt(h + 64, struct.pack("<Q", n + 1)),
        "header says": corrupt(h + 17, struct.pack("<Q", n - 1)),
        "kinds": corrupt(h + 14, bytes([12])),  # the header claims f16 components
    }
    for expected, bad in cases.items():
        problem = check_index_file(bad, n, "f32")
        assert problem and expected in problem, (expected, problem)
        with pytest.raises(BundleError, match="corrupt index"):
            VectorIndex.open(bad, IndexInfo(file=bad.name, dtype="f32", metric="cos", count=n, exact=False))
    truncated = tmp_path / "cut.usearch"
    truncated.write_bytes(good[:-7])
    assert "do not fill" in check_index_file(truncated, n, "f32")
    assert "manifest says 31" in check_index_file(path, n + 1, "f32")  # not the manifest's count
    assert "dimensions" in check_index_file(path, n, "f16")  # an f32 file where the manifest says f16


def test_best_image_per_product():
    from edge_search.core.products import Product, ProductTable

    table = ProductTable.from_products([Product("a", "a", (0, 3)), Product("b", "b", ()), Product("c", "c", (1, 2))], 4)
    scores = np.array([[0.1, 0.5, 0.2, 0.7], [0.9, 0.0, 0.3, 0.2]])
    expected = np.array([[0.7, -np.inf, 0.5], [0.9, -np.inf, 0.3]], np.float32)
    np.testing.assert_array_equal(table.best_scores(scores), expected)
    # more columns than keys (another encoder's block of the catalog): only the table's keys count
    np.testing.assert_array_equal(table.best_scores(np.hstack([scores, np.ones((2, 4))])), expected)


@pytest.mark.parametrize("dtype,rescore,exact", [("f32", False, True), ("f16", False, False), ("i8", True, True)])
def test_a_segmented_index_ranks_as_one_index_of_its_live_vectors(tmp_path, dtype, rescore, exact):
    """A base file, a delta segment (keys after the base's) and removed base keys, reopened from disk as a
    bundle does: the top-k equal one index built on the live vectors alone, keys mapped, scores alike."""
    from edge_search.core.index import open_index
    from edge_search.core.manifest import IndexDelta

    vecs = clustered(400, 32, seed=3)
    base_vecs, added = vecs[:360], vecs[360:]
    removed = np.sort(np.random.default_rng(4).choice(360, 30, replace=False)).astype(np.int64)
    VectorIndex.build(base_vecs, dtype=dtype, exact=exact, rescore=rescore).save(
        tmp_path / "base.usearch", tmp_path / "base.npy" if rescore else None)
    VectorIndex.build(added, dtype=dtype, exact=exact, rescore=rescore, first_key=360).save(
        tmp_path / "delta.usearch", tmp_path / "delta.npy" if rescore else None)
    np.save(tmp_path / "removed.npy", removed.astype(np.uint64))
    info = IndexInfo(file="base.usearch", dtype=dtype, metric="cos", count=360, exact=exact,
                     rescore_file="base.npy" if rescore else None,
                     delta=IndexDelta(file="delta.usearch", count=40, removed=30, removed_file="removed.npy",
                                      rescore_file="delta.npy" if rescore else None))
    segmented = open_index(info, lambda name: tmp_path / name)
    assert len(segmented) == 370 and info.live == 370 and info.key_space == 400

    live_keys = np.setdiff1d(np.arange(400), removed)
    whole = VectorIndex.build(vecs[live_keys], dtype=dtype, exact=True, rescore=rescore)
    # queries near removed vectors too: their neighbours must come from what is left
    queries = vecs[np.r_[removed[:10], 360:370, 0:10]] + 0.02 * np.random.default_rng(5).standard_normal((30, 32)).astype(np.float32)
    keys, scores = segmented.search(queries, 8)
    want_keys, want_scores = whole.search(queries, 8)
    assert not np.isin(keys, removed).any()
    agree = (keys == live_keys[want_keys]).all(axis=1).mean()
    assert agree >= (1.0 if exact else 0.9)
    assert np.allclose(scores[:, 0], want_scores[:, 0], atol=1e-3 if exact else 0.02)
    # one query at a time (the kiosk's path, merged apart from batches) ranks the same
    for i in range(len(queries)):
        one_keys, one_scores = segmented.search(queries[i], 8)
        assert np.array_equal(one_keys[0], keys[i]) and np.allclose(one_scores[0], scores[i], atol=1e-6)
    # asking for more than is live pads with -1, never a removed key
    for batch in (queries[:2], queries[:1]):
        keys, _ = segmented.search(batch, 400)
        assert (keys[:, :370] >= 0).all() and (keys[:, 370:] == -1).all()
        assert not np.isin(keys, removed).any()


def test_removed_keys_that_are_not_the_base_segments_are_a_bundle_error(tmp_path):
    from edge_search.core.index import load_removed

    for bad, problem in ((np.array([3, 2], np.uint64), "sorted"), (np.array([1, 50], np.uint64), "below"),
                         (np.array([1.5]), "integers"), (np.array([1], np.uint64), "integers")):
        np.save(tmp_path / "removed.npy", bad)
        with pytest.raises(BundleError, match=problem):
            load_removed(tmp_path / "removed.npy", 2 if len(bad) == 2 else 3, 50)


@pytest.mark.parametrize("dtype,rescore", [("f16", False), ("i8", True)])
def test_an_index_built_from_keyed_chunks_is_the_one_built_whole(tmp_path, dtype, rescore):
    vecs = clustered(200, 32)
    whole = VectorIndex.build(vecs, dtype=dtype, rescore=rescore, first_key=10)
    # the chunks come in any key order (a rebased layout's rows); each key's vector is what counts
    order = np.random.default_rng(3).permutation(200)
    chunks = [(order[i:i + 64] + 10, vecs[order[i:i + 64]]) for i in range(0, 200, 64)]
    keyed = VectorIndex.build_keyed(iter(chunks), count=200, dim=32, dtype=dtype, rescore=rescore, first_key=10)
    assert len(keyed) == 200 and keyed.first_key == 10
    keys = np.arange(10, 210, dtype=np.uint64)
    assert np.array_equal(keyed.index.get(keys), whole.index.get(keys))
    if rescore:
        assert np.array_equal(keyed.rescore, whole.rescore)
    queries = vecs[:20] + 0.05
    assert np.array_equal(keyed.search(queries, 3)[0], whole.search(queries, 3)[0])


def test_keyed_chunks_that_miss_or_overrun_the_key_range_are_refused():
    vecs = clustered(10, 8)
    with pytest.raises(ValueError, match="outside 0 .. 9"):
        VectorIndex.build_keyed([(np.arange(1, 11), vecs)], count=10, dim=8, dtype="f32")
    with pytest.raises(ValueError, match="9 vectors added"):
        VectorIndex.build_keyed([(np.arange(9), vecs[:9])], count=10, dim=8, dtype="f32")
    with pytest.raises(ValueError, match="[Dd]uplicate"):  # a key given twice, in one chunk or across two
        VectorIndex.build_keyed([(np.r_[np.arange(9), 0], vecs)], count=10, dim=8, dtype="f32")
    with pytest.raises(ValueError, match="[Dd]uplicate"):
        VectorIndex.build_keyed([(np.arange(5), vecs[:5]), (np.arange(4, 9), vecs[4:9])], count=10, dim=8,
                                dtype="f32")


def test_the_manifest_s_search_width_is_the_one_a_bundle_searches_with(tmp_path):
    import json
    import shutil

    from edge_search.core.bundle import Bundle
    from edge_search.core.search import Searcher
    from make_tiny_bundle import COMMITTED

    bundle = tmp_path / "b"
    shutil.copytree(COMMITTED, bundle)
    assert Searcher.from_bundle(bundle).index.index.expansion_search == 64  # none given: usearch's default
    m = json.loads((bundle / "manifest.json").read_text())
    m["index"].update(exact=False, expansion_search=200)
    (bundle / "manifest.json").write_text(json.dumps(m))
    assert Bundle.open(bundle).manifest.index.expansion_search == 200
    searcher = Searcher.from_bundle(bundle)
    assert searcher.index.index.expansion_search == 200 and not searcher.index.exact
    m["index"]["expansion_search"] = 0
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="expansion_search must be 1 .. 4096, got 0"):
        Bundle.open(bundle)


def _top_directions(vecs: np.ndarray, dims: int) -> np.ndarray:
    _, directions = np.linalg.eigh(vecs.T.astype(np.float64) @ vecs)
    return np.ascontiguousarray(directions[:, ::-1][:, :dims], np.float32)


@pytest.mark.parametrize("exact", [True, False])
def test_a_projected_graph_ranks_its_candidates_in_full_dimensions(tmp_path, exact):
    """The graph holds 16-d projections of 64-d vectors; the candidates it returns are rescored with the full
    vectors, so keys and scores are full-dimension ones, also after saving and reopening."""
    # image embeddings span far fewer directions than they have: clusters in 12 dimensions, mixed into 64
    rng = np.random.default_rng(7)
    vecs = (clustered(600, 12, seed=7) @ rng.standard_normal((12, 64))
            + 0.05 * rng.standard_normal((600, 64))).astype(np.float32)
    projection = _top_directions(vecs, 16)
    built = VectorIndex.build(vecs, dtype="f16", exact=exact, projection=projection)
    assert built.ndim == 64 and built.index.ndim == 16 and built.rescore.shape == (600, 64)
    # reopened as a bundle's is: the graph file memory-mapped, the rescoring vectors from their .npy
    built.save(tmp_path / "i.usearch", tmp_path / "r.npy")
    index = VectorIndex.open_file(tmp_path / "i.usearch", count=600, dtype="f16", exact=exact,
                                  rescore_path=tmp_path / "r.npy", projection=projection)
    queries = vecs[:60] + 0.05 * np.random.default_rng(8).standard_normal((60, 64)).astype(np.float32)
    keys, scores = index.search(queries, 5)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    full = qn @ unit.T
    want = np.argsort(-full, axis=1)[:, :5]
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(keys.tolist(), want.tolist())])
    assert recall >= 0.97
    # the scores are each candidate's 64-d cosine (from f16 vectors)
    assert np.allclose(scores, np.take_along_axis(full, keys, 1), atol=2e-3)
    # two vectors one in the projection (the first two axes), apart in full: ranked and scored in full
    pair = VectorIndex.build(np.array([[1, 0, 1, 0], [1, 0, 0, 0]], np.float32), dtype="f32", exact=exact,
                             projection=np.eye(4, 2, dtype=np.float32))
    keys, scores = pair.search(np.array([1, 0, 0.1, 0], np.float32), 2)
    assert keys.tolist() == [[1, 0]]
    assert np.allclose(scores, [[1 / np.sqrt(1.01), 1.1 / np.sqrt(2 * 1.01)]], atol=1e-3)  # not both 1.0


def test_a_projected_graph_needs_its_full_vectors():
    vecs = clustered(50, 16)
    with pytest.raises(ValueError, match="needs the full vectors"):
        VectorIndex(index=VectorIndex.build(vecs, dtype="f32").index, dtype="f32", exact=True,
                    projection=np.eye(16, 4, dtype=np.float32))


def test_the_export_projection_is_the_top_principal_directions():
    rng = np.random.default_rng(3)
    # four directions far stronger than the rest, each apart from the next: one top-4 answer
    vecs = (rng.standard_normal((400, 32)) * np.array([10, 8, 6, 4] + [0.5] * 28)).astype(np.float32)
    got = projection_of(vecs, 4)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    want = _top_directions(unit, 4)
    assert got.shape == (32, 4) and got.dtype == np.float32
    # the same directions, each up to its sign
    assert np.allclose(np.abs(np.sum(got * want, axis=0)), 1.0, atol=1e-4)
    # a sample of the rows, seeded: the same matrix twice, near the whole set's
    again = projection_of(vecs, 4, sample=200, seed=1)
    assert np.array_equal(again, projection_of(vecs, 4, sample=200, seed=1))
    assert np.all(np.abs(np.sum(again * want, axis=0)) > 0.9)
    with pytest.raises(ValueError, match="a projection to 40 dimensions of 32-d vectors"):
        projection_of(vecs, 40)


@pytest.mark.parametrize("matrix, says", [
    (np.eye(8, 4, dtype=np.float64), "float32 dim x D matrix"),
    (np.eye(4, 8, dtype=np.float32), "float32 dim x D matrix"),
    (np.ones(8, dtype=np.float32), "float32 dim x D matrix"),
    (np.full((8, 4), np.nan, dtype=np.float32), "not a finite number"),
])
def test_a_bad_projection_file_is_refused(tmp_path, matrix, says):
    np.save(tmp_path / "p.npy", matrix)
    with pytest.raises(BundleError, match=says):
        load_projection(tmp_path / "p.npy")
    (tmp_path / "q.npy").write_bytes(b"not numpy")
    with pytest.raises(BundleError, match="cannot read the index projection"):
        load_projection(tmp_path / "q.npy")


def test_a_projected_graph_file_must_fit_its_projection_and_vectors(tmp_path):
    vecs = clustered(50, 16)
    VectorIndex.build(vecs, dtype="f32", projection=np.eye(16, 4, dtype=np.float32)).save(
        tmp_path / "i.usearch", tmp_path / "r.npy")
    with pytest.raises(BundleError, match="a graph of 4 dimensions, its projection makes 8"):
        VectorIndex.open_file(tmp_path / "i.usearch", count=50, dtype="f32", exact=True,
                              rescore_path=tmp_path / "r.npy", projection=np.eye(16, 8, dtype=np.float32))
    with pytest.raises(BundleError, match="without the full vectors"):
        VectorIndex.open_file(tmp_path / "i.usearch", count=50, dtype="f32", exact=True,
                              projection=np.eye(16, 4, dtype=np.float32))
    with pytest.raises(BundleError, match=r"expected float16 \(50, 32\)"):
        VectorIndex.open_file(tmp_path / "i.usearch", count=50, dtype="f32", exact=True,
                              rescore_path=tmp_path / "r.npy", projection=np.eye(32, 4, dtype=np.float32))
