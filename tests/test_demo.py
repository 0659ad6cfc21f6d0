"""`edge-search demo`'s report: a "no match" answer is a miss, not a crash
(the full demo exports a ViT-B-32 and runs minutes: run it by hand, README)."""

from __future__ import annotations

from pathlib import Path

from edge_search.demo import DemoReport
from edge_search.products import Product
from edge_search.search import SearchHit, SearchResult


def _answer(pid: str | None) -> SearchResult:
    hits = [] if pid is None else [SearchHit(id=pid, name=pid, score=0.9, price=None, category=None,
                                             product=Product(id=pid, name=pid, keys=(0,)))]
    return SearchResult(hits=hits, timings_ms={"embed": 1.0, "search": 0.1}, best_score=0.9)


def test_top1_counts_no_match_as_a_miss():
    report = DemoReport(bundle=Path("b"), random_teacher=True, fallback_reason=None, export_seconds=1.0)
    report.queries = [("a.jpg", "apple", _answer("apple")), ("b.jpg", "pear", _answer(None)),
                      ("c.jpg", "milk", _answer("apple")), ("d.jpg", "tea", _answer("tea"))]
    assert report.top1 == 0.5
