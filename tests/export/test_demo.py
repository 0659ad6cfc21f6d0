"""`edge-search demo`'s report: a "no match" answer is a miss, not a crash
(the demo itself, end to end as the README runs it: test_demo_command.py)."""

from __future__ import annotations

from pathlib import Path

from edge_search_export.demo import DemoReport
from edge_search.core.products import Product
from edge_search.core.search import SearchHit, SearchResult


def _answer(pid: str | None) -> SearchResult:
    hits = [] if pid is None else [SearchHit(id=pid, name=pid, score=0.9, price=None, category=None,
                                             product=Product(id=pid, name=pid, keys=(0,)))]
    return SearchResult(hits=hits, timings_ms={"embed": 1.0, "search": 0.1}, best_score=0.9)


def test_top1_counts_no_match_as_a_miss():
    report = DemoReport(bundle=Path("b"), random_teacher=True, fallback_reason=None, export_seconds=1.0)
    report.queries = [("a.jpg", "apple", _answer("apple")), ("b.jpg", "pear", _answer(None)),
                      ("c.jpg", "milk", _answer("apple")), ("d.jpg", "tea", _answer("tea"))]
    assert report.top1 == 0.5


def test_the_demo_marks_right_wrong_and_no_match_apart_under_a_legend():
    from edge_search_export.commands import DEMO_LEGEND, demo_lines

    report = DemoReport(bundle=Path("b"), random_teacher=False, fallback_reason=None, export_seconds=1.0)
    report.queries = [("q/apple.jpg", "apple", _answer("apple")), ("q/pear.jpg", "pear", _answer(None)),
                      ("q/milk.jpg", "milk", _answer("apple")), ("q/tea.jpg", "tea", _answer("tea"))]
    lines = demo_lines(report)
    legend = lines.index(f"each photo shows one catalog product: {DEMO_LEGEND}")
    rows = lines[legend + 1:legend + 5]
    assert [r.split()[:2] for r in rows] == [["ok", "apple.jpg"], ["no", "match"], ["wrong", "milk.jpg"],
                                             ["ok", "tea.jpg"]]
    assert "pear.jpg" in rows[1] and "-> apple (0.900)" in rows[2]
    assert all(mark in DEMO_LEGEND for mark in ("ok =", "wrong =", "no match ="))
    assert lines[legend + 5] == "top-1 on 4 photos: 50%" and not any(ln.startswith("note:") for ln in lines)


def test_export_and_demo_help_show_every_default_that_means_something():
    import argparse
    import re

    from edge_search_export.commands import add_demo_parser, add_export_parser

    sub = argparse.ArgumentParser(prog="edge-search").add_subparsers()
    add_export_parser(sub)
    add_demo_parser(sub)
    export, demo = (sub.choices[c].format_help() for c in ("export", "demo"))
    flat = lambda text: " ".join(text.split())  # noqa: E731  (help wraps at the terminal's width)
    for flag, default in (("--epochs EPOCHS", "30"), ("--views-per-image VIEWS_PER_IMAGE", "16"),
                          ("--seed SEED", "0"), ("--quantize {auto,int8,fp16,none}", "auto"), ("--finetune-epochs", "20")):
        tail = flat(export).split(flag + " ", 2)[-1]
        assert f"(default: {default})" in tail.split(" --")[0], flag
    assert "(default: edge-search-demo)" in flat(demo) and "(default: 20)" in flat(demo)
    for text in (export, demo):  # switches, empty lists and unset options say what happens in words instead
        for meaningless in ("(default: None)", "(default: False)", "(default: [])"):
            assert meaningless not in flat(text), meaningless
        assert not re.search(r"\(default[^)]*\) \(default", flat(text))  # never a default said twice
