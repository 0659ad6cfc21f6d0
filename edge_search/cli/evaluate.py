"""`edge-search eval`: retrieval quality of a bundle on labelled photos."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_search.cli.output import add_trusted_key, say, trusted_key
from edge_search.files import check_writable_folder


def run_eval(args: argparse.Namespace) -> int:
    from edge_search.evaluation.evaluate import evaluate, read_queries
    from edge_search.core.search import Searcher

    if args.report:  # a report folder that cannot be written fails now, not after every query has run
        check_writable_folder(args.report, "--report")
    queries = read_queries(args.queries)
    searcher = Searcher.from_bundle(args.bundle, trusted_key=trusted_key(args))
    report = evaluate(searcher, queries)
    if args.report:
        from edge_search.evaluation.report import write_report

        write_report(report, Path(args.report), title=f"edge-search eval: {Path(args.bundle).name} on {Path(args.queries).name}")
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
        return 0
    say(f"{report.queries} queries against {searcher.manifest.name if searcher.manifest else args.bundle}")
    if report.caveat:
        say(f"  note: {report.caveat}")
    say("  " + "  ".join(f"recall@{k} {v:.3f}" for k, v in report.recall.items()))
    rule = "calibrated rule" if report.calibrated else f"threshold {report.min_score:.3f}"
    say(f"  MRR {report.mrr:.3f}   no match {report.no_match_share:.1%} of in-catalog photos ({rule})")
    if report.false_reject_of_correct is not None:
        say(f"  false rejects: {report.false_reject_of_correct:.1%} of the photos ranked right")
    if report.named_wrong is not None:
        given = "no name given" if report.right_when_named is None else \
            f"{report.right_when_named:.1%} of the names given were right"
        say(f"  answered right {report.answered_right:.1%} of in-catalog photos; named wrong "
            f"{report.named_wrong:.1%} of all photos; {given}")
    if report.reject_recall is not None:
        say(f"  reject recall: {report.reject_recall:.1%} of {len(report.unknown_ids)} photos of products "
              "the bundle lacks answered no match")
    lat = report.latency_ms
    say(f"  embed {lat['embed_p50']:.1f} / {lat['embed_p95']:.1f} ms, search {lat['search_p50']:.2f} / "
          f"{lat['search_p95']:.2f} ms (p50 / p95)")
    worst = sorted(report.per_category.items(), key=lambda kv: kv[1]["recall@1"])[:5]
    say("  worst categories: " + ", ".join(f"{c} {v['recall@1']:.2f} ({v['queries']})" for c, v in worst))
    if report.confused:
        say("  most confused: " + ", ".join(f"{c['true']} -> {c['predicted']} x{c['count']}" for c in report.confused[:5]))
    for line in report.unknown_ids:
        say(f"  not in the bundle (counted for reject recall only): {line}", file=sys.stderr)
    for line in report.unreadable:
        say(f"  not counted: {line}", file=sys.stderr)
    if args.report:
        say(f"  report: {Path(args.report) / 'report.md'}")
    return 0


def add_parsers(sub) -> None:
    v = sub.add_parser("eval", help="measure retrieval quality on labeled photos")
    v.add_argument("--bundle", required=True, help="bundle directory")
    v.add_argument("--queries", required=True, help="CSV with image,id rows (paths relative to it)")
    v.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    v.add_argument("--report", default=None, metavar="DIR", help="also write DIR/report.md and PNG plots")
    add_trusted_key(v)
    v.set_defaults(func=run_eval)
