"""`edge-search demo`'s report: a "no match" answer is a miss, not a crash
(the full demo exports a ViT-B-32 and runs minutes: run it by hand, README)."""

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


def test_the_readmes_main_command_runs_end_to_end(tmp_path):
    """`edge-search demo` as the README runs it, in a fresh process on a tmp workdir (fewer
    distillation epochs to keep CI short; the same code path). Online it uses the pretrained
    teacher, offline a random one: both must end with a verified bundle that answers all 12 photos."""
    import re

    import pytest

    pytest.importorskip("open_clip", reason="the demo needs the [export] extra")
    from conftest import run_cli

    work = tmp_path / "demo"
    proc = run_cli("demo", "--workdir", work, "--epochs", "1", "--quiet", timeout=1200)
    lines = proc.stdout.splitlines()
    answers = [ln for ln in lines if ln.startswith(("  ok ", "  -- "))]
    assert len(answers) == 12 and f"bundle: {work / 'bundle'}" in proc.stdout
    hits = sum(ln.startswith("  ok ") for ln in answers)
    top1 = re.search(r"top-1 on 12 photos: (\d+)%", proc.stdout)
    assert top1 and int(top1.group(1)) == round(100 * hits / 12)
    assert ("PIPELINE CHECK" in proc.stdout) == ("note: " in proc.stdout)
    assert "files verified" in run_cli("inspect", work / "bundle").stdout
