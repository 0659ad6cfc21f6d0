"""Exact search's top-1, as the index choice compares candidates with it: found a chunk of the catalog at a
time (no queries x catalog matrix), the same answers as over the whole catalog at once."""

from __future__ import annotations

import numpy as np
import pytest

import edge_search_export.index_choice as index_choice
from edge_search.core.index import VectorIndex
from edge_search_export.index_choice import ExactTop1, _agreement


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
    shifted = ExactTop1(unit=exact.unit, queries=exact.queries, best=np.array([2, 2]), best_score=np.array([1.0, 1.0]))
    assert _agreement(index, queries, shifted, key_product) == 0.5  # the first query's answer (row 0/1) is not row 2's

