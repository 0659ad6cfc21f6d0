"""The query settings' one owner (`core.query`): their check, the messages
that name the setting and never a flag, and why a result holds fewer than k
products. Runtime only: an in-memory searcher over fixed vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import edge_search  # noqa: F401  (onnxruntime before usearch)
from edge_search.cli.output import flags_named
from edge_search.core.filters import Filter
from edge_search.core.index import VectorIndex
from edge_search.core.manifest import PreprocessCfg
from edge_search.core.products import Product, ProductTable
from edge_search.core.query import DEFAULT_K, RANK_ALL, QueryParams
from edge_search.core.search import Searcher, Short
from edge_search.errors import QueryError

IMAGE = np.zeros((8, 8, 3), np.uint8)


class Fixed:
    """An image encoder that returns the vector the test chose."""

    embed_dim = 4

    def __init__(self):
        self.next = np.ones(4, np.float32)

    def embed(self, batch):
        return np.repeat(self.next[None], len(batch), 0).astype(np.float32)


def searcher(min_score: float = 0.2) -> Searcher:
    # products a, b, c along the first three axes; a query's score for each is its coordinate (unit queries)
    table = ProductTable.from_products([Product(id=x, name=x, keys=(i,)) for i, x in enumerate("abc")], 3)
    return Searcher(encoder=Fixed(), index=VectorIndex.build(np.eye(4, dtype=np.float32)[:3], dtype="f32"),
                    products=table, preprocess_cfg=PreprocessCfg(size=(8, 8)), min_score=min_score)


def ask(s: Searcher, vec, **kw):
    s.encoder.next = np.asarray(vec, np.float32)
    return s.search_image(IMAGE, **kw)


@pytest.mark.parametrize("kw, says", [
    ({"k": 0}, "k must be a whole number of at least 1, got 0"),
    ({"k": 2.5}, "k must be a whole number of at least 1, got 2.5"),
    ({"k": True}, "k must be a whole number of at least 1, got True"),
    ({"min_score": math.nan}, "min_score must be a finite number (or -inf: answer every query), got nan"),
    ({"min_score": math.inf}, "min_score must be a finite number (or -inf: answer every query), got inf"),
    ({"alpha": 1.5}, "alpha must be between 0 and 1, got 1.5"),
    ({"alpha": math.nan}, "alpha must be between 0 and 1, got nan"),
])
def test_the_searcher_refuses_bad_settings_in_its_own_words(kw, says):
    s = searcher()
    with pytest.raises(QueryError) as e:
        s.search_image(IMAGE, **kw)
    assert str(e.value) == says and "-" not in str(e.value).split(" must")[0]  # no "-k", no "--alpha"
    if "alpha" not in kw:  # the other ways in take the same check
        with pytest.raises(QueryError, match=f"^{e.value.setting} must"):
            s.search_vector(np.ones(4, np.float32), **kw)


def test_the_cli_edge_names_its_flag_and_the_kiosk_its_limit():
    with pytest.raises(QueryError, match=r"^-k must be a whole number of at least 1, got 0$"):
        with flags_named():
            QueryParams(k=0)
    with pytest.raises(QueryError, match=r"^--alpha must be between 0 and 1, got -0.5$"):
        with flags_named():
            QueryParams(alpha=-0.5)
    with pytest.raises(QueryError, match=r"^k must be at most 20 \(the most shown at once\), got 21$"):
        QueryParams(k=21, max_k=20)
    assert QueryParams().k == DEFAULT_K == 5 and QueryParams(min_score=RANK_ALL).min_score == -math.inf


def test_a_result_says_why_it_holds_fewer_than_k():
    s = searcher(min_score=0.2)
    full = ask(s, [0.6, 0.5, 0.4, math.sqrt(0.23)], k=3)  # scores 0.6, 0.5, 0.4: all above 0.2
    assert [h.id for h in full.hits] == ["a", "b", "c"] and full.short is None
    below = ask(s, [0.9, 0.3, 0.1, 0.3], k=3)  # 0.9, 0.3 pass; c's 0.1 is under the bundle's 0.2
    assert [h.id for h in below.hits] == ["a", "b"] and below.short is Short.BELOW
    refused = ask(s, [0.1, 0.05, 0.0, math.sqrt(1 - 0.0125)], k=3)  # the best, 0.1, is under 0.2
    assert refused.hits == [] and refused.short is Short.NO_MATCH and refused.best_score == pytest.approx(0.1)
    catalog = ask(s, [0.9, 0.3, 0.1, 0.3], k=5, min_score=RANK_ALL)  # three products, five asked for
    assert [h.id for h in catalog.hits] == ["a", "b", "c"] and catalog.short is Short.CATALOG
    nothing = ask(s, [0.9, 0.3, 0.1, 0.3], k=3, filter=Filter.parse(["id=zzz"]))
    assert nothing.hits == [] and nothing.short is Short.FILTER and nothing.best_score == -math.inf
    some = ask(s, [0.9, 0.3, 0.1, 0.3], k=3, min_score=RANK_ALL, filter=Filter.parse(["id!=b"]))
    assert [h.id for h in some.hits] == ["a", "c"] and some.short is Short.FILTER
    flat = ask(s, [0.9, 0.3, 0.1, 0.3], k=3, min_score=0.5)  # an explicit cut-off: the rest below it
    assert [h.id for h in flat.hits] == ["a"] and flat.short is Short.BELOW
