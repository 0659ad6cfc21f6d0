"""Filters on catalog metadata and their use inside the search (runtime only:
an in-memory searcher over fixed vectors, no export)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_search.errors import FilterError, QueryError, TextQueryError
from edge_search.core.filters import Filter, parse_condition
from edge_search.core.index import VectorIndex
from edge_search.core.manifest import PreprocessCfg
from edge_search.core.products import Product, ProductTable
from edge_search.core.search import RANK_ALL, Searcher


def _products(n: int = 40) -> list[Product]:
    # every 8th product is "Fruit"; prices rise with the position; a meta column on some
    return [Product(id=f"p{i:02d}", name=f"Product {i}", keys=(2 * i, 2 * i + 1), price=round(0.5 + 0.1 * i, 2),
                    category="Fruit" if i % 8 == 0 else "Dairy", meta={"organic": "yes"} if i % 5 == 0 else {})
            for i in range(n)]


class _Fixed:
    """An encoder (image or text) that returns the vector the test chose, whatever the input."""

    embed_dim = 16

    def __init__(self, vector: np.ndarray):
        self.vector = vector

    def embed(self, batch):
        return np.repeat(self.vector[None], len(batch), 0)


def _searcher(with_text: bool = False, dtype: str = "f32") -> tuple[Searcher, np.ndarray]:
    rng = np.random.default_rng(0)
    products = _products()
    vectors = rng.standard_normal((80, 16)).astype(np.float32)
    query = vectors[2].copy()  # product p01's first image
    # products ranked near the query are all Dairy: the Fruit ones are far down the ranking
    for i, p in enumerate(products):
        if p.category == "Fruit":
            vectors[list(p.keys)] = -query + 0.01 * rng.standard_normal((2, 16))
    text = dict(text_encoder=_Fixed(query), text_index=VectorIndex.build(
        rng.standard_normal((len(products), 16)).astype(np.float32), dtype="f32")) if with_text else {}
    s = Searcher(encoder=_Fixed(query), index=VectorIndex.build(vectors, dtype=dtype),
                 products=ProductTable.from_products(products, 80), preprocess_cfg=PreprocessCfg(size=(8, 8)),
                 min_score=-1.0, **text)
    return s, query


def test_parse_conditions_and_operators():
    p = _products()[0]  # Fruit, price 0.5, organic
    ok = lambda *e: Filter.parse(list(e)).allows(p)  # noqa: E731
    assert ok("category=fruit") and ok("category = Fruit") and not ok("category!=Fruit")
    assert ok("price<2.5") and ok("price<=0.5") and ok("price>=0.5") and not ok("price>0.5") and ok("price=0.50")
    assert ok("price<2.5", "category=Fruit") and not ok("price<2.5", "category=Dairy")  # several: all must hold
    assert ok("organic=yes") and not ok("organic=no")
    assert Filter.parse(["organic!=yes"]).allows(_products()[1])  # a product without the column: != holds
    assert not Filter.parse(["organic=yes"]).allows(_products()[1])
    assert str(Filter.parse(["price<2.5", "category=Fruit"])) == "price<2.5 and category=Fruit"
    assert parse_condition("name=Oat Milk 1L").value == "Oat Milk 1L"


@pytest.mark.parametrize("expr, says", [
    ("price", "expected FIELD OP VALUE"), ("=Fruit", "expected FIELD OP VALUE"), ("category=", "expected FIELD OP"),
    ("price<cheap", "'<' needs a number, got 'cheap'"), ("price>=", "expected FIELD OP VALUE"),
])
def test_bad_expressions_are_one_line_errors(expr, says):
    with pytest.raises(FilterError, match=says) as e:
        Filter.parse([expr])
    assert "\n" not in str(e.value) and expr in str(e.value)


def test_unknown_field_is_refused_against_the_catalog():
    table = ProductTable.from_products(_products(), 80)
    assert Filter.parse(["organic=yes"], table)  # a catalog column in meta is a field
    with pytest.raises(FilterError, match=r"unknown field 'colour'.*fields: id, name, category.*organic"):
        Filter.parse(["colour=red"], table)


def test_filter_inside_the_search_still_returns_k():
    s, q = _searcher()
    plain, _ = s.search_vector(q, k=5)
    assert plain[0].id == "p01" and all(h.category == "Dairy" for h in plain)
    # the 5 Fruit products are the very last in the ranking: over-fetching must reach them
    fruit, _ = s.search_vector(q, k=5, filter=Filter.parse(["category=Fruit"]))
    assert [h.id for h in fruit] == sorted((h.id for h in fruit), key=lambda i: -dict(
        (x.id, x.score) for x in fruit)[i])
    assert len(fruit) == 5 and {h.category for h in fruit} == {"Fruit"}
    # fewer match than k: all of them, no more
    cheap, _ = s.search_vector(q, k=5, filter=Filter.parse(["price<0.8"]))
    assert sorted(h.id for h in cheap) == ["p00", "p01", "p02"]
    assert s.search_vector(q, k=5, filter=Filter.parse(["price>100"]))[0] == []
    # several conditions
    both, _ = s.search_vector(q, k=3, filter=Filter.parse(["category=Dairy", "organic=yes"]))
    assert len(both) == 3 and all(h.product.meta.get("organic") == "yes" and h.category == "Dairy" for h in both)


def test_text_search_needs_a_text_model():
    s, _ = _searcher()
    with pytest.raises(TextQueryError, match="has no text model; export it with --with-text"):
        s.search_text("oat milk")
    with pytest.raises(TextQueryError, match="no text model"):
        s.search_image(np.zeros((8, 8, 3), np.uint8), text="organic")


def test_text_search_exact_lookup_and_filter():
    s, q = _searcher(with_text=True)
    r = s.search_text("anything", k=4)
    assert len(r.hits) == 4 and r.hits[0].id == "p01" and not r.hits[0].exact  # the words' vector is p01's image
    for query in ("p33", "PRODUCT 33", "  product 33 "):
        hit = s.search_text(query, k=4).hits[0]
        assert hit.id == "p33" and hit.exact and hit.to_json()["exact"] is True
    # an exact product the filter excludes is not forced in
    r = s.search_text("p33", k=3, filter=Filter.parse(["category=Fruit"]))
    assert len(r.hits) == 3 and all(h.category == "Fruit" and not h.exact for h in r.hits)
    with pytest.raises(TextQueryError, match="empty"):
        s.search_text("  ")


def test_product_text_weight_mixes_the_two_indexes():
    from dataclasses import replace

    from edge_search.core.manifest import TextInfo

    s, q = _searcher(with_text=True)
    info = TextInfo(file="t.onnx", input="tokens", output="embedding", precision="int8", opset=17,
                    context_length=16, tokenizer="tokenizer.json", index="text_index.usearch")
    text_vecs = np.stack([s.text_index.index.get(i) for i in range(len(s.products))]).astype(np.float32)
    text_vecs /= np.linalg.norm(text_vecs, axis=1, keepdims=True)
    image = np.array([max(float(s.index.index.get(k) @ q / np.linalg.norm(s.index.index.get(k)) / np.linalg.norm(q))
                          for k in p.keys) for p in s.products.products])
    words = text_vecs @ (q / np.linalg.norm(q))
    for w in (0.0, 0.5, 1.0):
        s.text_info = replace(info, product_text_weight=w)
        want = np.argsort(-((1 - w) * image + w * words), kind="stable")[:5]
        got = [h.id for h in s.search_text("some words", k=5).hits]
        assert got == [s.products.products[i].id for i in want], w


def test_fused_query_is_a_normalized_weighted_sum():
    s, q = _searcher(with_text=True)
    words = np.random.default_rng(1).standard_normal(16).astype(np.float32)
    s.text_encoder = _Fixed(words)
    img = np.zeros((8, 8, 3), np.uint8)
    photo = [h.id for h in s.search_image(img, k=5, min_score=RANK_ALL).hits]
    assert [h.id for h in s.search_image(img, k=5, text="organic", alpha=1.0).hits] == photo
    only_words = [h.id for h in s.search_vector(words / np.linalg.norm(words), k=5, min_score=RANK_ALL)[0]]
    assert [h.id for h in s.search_image(img, k=5, text="organic", alpha=0.0).hits] == only_words
    z = s.fuse(q, words, 0.7)
    assert np.isclose(np.linalg.norm(z), 1) and np.allclose(z, (0.7 * q + 0.3 * words) / np.linalg.norm(0.7 * q + 0.3 * words))
    with pytest.raises(QueryError, match="^alpha must be between 0 and 1, got 1.5$"):  # the setting, not a flag
        s.search_image(img, text="organic", alpha=1.5)
    with pytest.raises(QueryError, match="^alpha must be between 0 and 1"):
        s.fuse(q, words, -0.1)
