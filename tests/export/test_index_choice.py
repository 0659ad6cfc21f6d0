"""Exact search's top-1, as the index choice compares candidates with it: found a chunk of the catalog at a
time (no queries x catalog matrix), the same answers as over the whole catalog at once."""

from __future__ import annotations

import numpy as np
import pytest

import edge_search_export.index_choice as index_choice
from edge_search.core.index import VectorIndex
from edge_search_export.index_choice import ExactTop1, RowSource, _agreement


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(index_choice, "EXACT_CHUNK", 2)


def test_each_query_finds_the_catalog_vector_it_copies_across_chunks(small_chunks):
    catalog = np.eye(5, dtype=np.float32) * np.arange(1, 6, dtype=np.float32)[:, None]  # lengths 1..5
    queries = np.eye(5, dtype=np.float32)[[4, 0, 2, 3]] * 7
    exact = ExactTop1.of(catalog, queries)
    assert exact.best.tolist() == [4, 0, 2, 3]
    assert np.allclose(exact.best_score, 1.0)
    assert np.allclose(exact.score(np.array([0, 0, 0, 0])), [0, 1, 0, 0])


def test_equal_scores_give_the_first_row_as_argmax_does(small_chunks):
    catalog = np.array([[0, 1], [1, 0], [0, 2], [1, 0]], np.float32)  # rows 1 and 3 (other chunks) are one vector
    exact = ExactTop1.of(catalog, np.array([[1, 0], [0, 1]], np.float32))
    assert exact.best.tolist() == [1, 0]


def test_chunked_equals_whole_on_random_vectors(small_chunks):
    rng = np.random.default_rng(3)
    catalog, queries = rng.standard_normal((37, 8)).astype(np.float32), rng.standard_normal((11, 8)).astype(np.float32)
    unit = catalog / np.linalg.norm(catalog, axis=1, keepdims=True)
    whole = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    exact = ExactTop1.of(catalog, queries)
    assert exact.best.tolist() == whole.argmax(axis=1).tolist()
    assert np.allclose(exact.best_score, whole.max(axis=1), atol=1e-6)


def test_agreement_counts_a_tie_with_another_product_as_agreeing():
    # rows 0 and 1 are the same vector under two products: either answer is right; row 2 is another product
    catalog = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    key_product = np.array([0, 1, 2])
    queries = np.array([[1, 0.01, 0], [0, 1, 0.01]], np.float32)
    index = VectorIndex.build(catalog, dtype="f32", exact=True)
    exact = ExactTop1.of(catalog, queries)
    assert _agreement(index, queries, exact, key_product) == 1.0
    wrong = np.array([0, 1, 0])  # row 2 filed under product 0: the second query's exact answer is product 0 now
    assert _agreement(index, queries, exact, wrong) == 1.0
    shifted = ExactTop1(rows=exact.rows, queries=exact.queries, best=np.array([2, 2]), best_score=np.array([1.0, 1.0]))
    assert _agreement(index, queries, shifted, key_product) == 0.5  # the first query's answer (row 0/1) is not row 2's


def test_a_sample_read_a_chunk_at_a_time_chooses_as_the_same_vectors_in_memory(monkeypatch):
    # a catalog build's choice reads a seeded sample of its vectors from disk: never more than a chunk at once
    monkeypatch.setattr(index_choice, "EXACT_CHUNK", 5)
    monkeypatch.setattr(index_choice, "BUILD_CHUNK", 7)
    monkeypatch.setattr(index_choice, "_time_search", lambda index, q, k: 1.0 if index.exact else 0.5)
    vectors, queries = _clustered(300, dim=16)
    keep = np.sort(np.random.default_rng(1).choice(300, 120, replace=False))
    reads = []

    def take(positions):
        reads.append(len(positions))
        return vectors[positions]

    sample = RowSource(take=take, count=300, dim=16).subset(keep)
    whole, chunked = ExactTop1.of(vectors[keep], queries), ExactTop1.of(sample, queries)
    assert chunked.best.tolist() == whole.best.tolist()
    assert np.allclose(chunked.best_score, whole.best_score, atol=1e-6)
    assert np.allclose(chunked.score(np.arange(60) % 120), whole.score(np.arange(60) % 120), atol=1e-6)
    built = sample.index(dtype="f32", rescore=False)
    keys, _ = built.search(queries, 3)
    keys_whole, _ = VectorIndex.build(vectors[keep], dtype="f32").search(queries, 3)
    assert keys.tolist() == keys_whole.tolist()
    reads.clear()
    key_product = np.arange(120) // 3
    got = index_choice.choose_search(sample, key_product, queries, dtype="f16", rescore=False, threshold=0.9)
    assert reads and max(reads) <= 60  # chunks, and the scores of 60 queries' answers
    assert got == index_choice.choose_search(vectors[keep], key_product, queries, dtype="f16", rescore=False,
                                             threshold=0.9)


def _clustered(n: int, dim: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 10, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    queries = vectors[rng.choice(n, 60, replace=False)] + 0.2 * rng.normal(size=(60, dim)).astype(np.float32)
    return vectors, queries


def test_hnsw_is_tried_at_widening_search_until_it_agrees_with_exact_search():
    vectors, queries = _clustered(2500)  # 1.28M components: over SMALL_DELTA, so timing may choose HNSW
    key_product = np.arange(len(vectors))
    exact, report = index_choice.choose_search(vectors, key_product, queries, dtype="f16", rescore=False,
                                               threshold=0.0)
    assert [w["expansion_search"] for w in report["hnsw_widths"]] == [64]  # the default width already agrees
    assert report["expansion_search"] == (None if exact else 64) and report["search"] == ("exact" if exact else "hnsw")
    exact, report = index_choice.choose_search(vectors, key_product, queries, dtype="f16", rescore=False,
                                               threshold=1.01)  # no width can agree that well
    assert [w["expansion_search"] for w in report["hnsw_widths"]] == list(index_choice.EXPANSIONS)
    assert exact and report["expansion_search"] is None and report["search"] == "exact"


def test_a_small_catalog_searches_exactly_whatever_the_timing(monkeypatch):
    vectors, queries = _clustered(200)  # 102 400 components: under SMALL_DELTA
    monkeypatch.setattr(index_choice, "_time_search", lambda index, q, k: 1.0 if index.exact else 0.01)
    exact, report = index_choice.choose_search(vectors, np.arange(200), queries, dtype="f16", rescore=False,
                                               threshold=0.0)
    assert exact and report["search"] == "exact" and report["hnsw_search_ms"] < 0.8 * report["exact_search_ms"]
