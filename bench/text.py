"""Text queries on the device (issue #5): latency of the int8 text tower for
short phrases, and how well words find products.

    .venv/bin/python bench/text.py --bundle BUNDLE [--rounds 200] [--threads 2] [--out bench-out/text.json]

Latency: each phrase of SHORT_PHRASES in turn, after a warm-up, timed as the
runtime answers `edge-search search --text` (tokenize + text tower, then
the index search), batch 1, on `--threads` onnxruntime threads; p50 / p95 in
ms. Recall: product names, and names + descriptions, as queries against the
bundle (exact id/name lookup off, so the embeddings are measured, not the
lookup). Runtime dependencies only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import numpy as np  # noqa: E402

from edge_search.core.search import Searcher  # noqa: E402
from edge_search.files import atomic_write_text  # noqa: E402

# what a shopper types at a kiosk: one to four words
SHORT_PHRASES = ("oat milk", "red apple", "green apple", "organic", "smaller pack", "bananas", "orange juice",
                 "yoghurt", "lactose free milk", "ripe avocado", "sweet potato", "tomatoes on the vine")
TARGET_P95_MS = 10.0


def text_latency(searcher: Searcher, rounds: int = 200, phrases: tuple[str, ...] = SHORT_PHRASES) -> dict:
    for p in phrases:  # warm-up: first runs allocate
        searcher.search_text(p, k=5)
    embed, total = [], []
    for i in range(rounds):
        p = phrases[i % len(phrases)]
        t0 = time.perf_counter()
        r = searcher.search_text(p, k=5)
        total.append((time.perf_counter() - t0) * 1e3)
        embed.append(r.timings_ms["embed"])
    pct = lambda v, q: round(float(np.percentile(v, q)), 3)  # noqa: E731
    return {"embed_p50": pct(embed, 50), "embed_p95": pct(embed, 95), "query_p50": pct(total, 50),
            "query_p95": pct(total, 95), "rounds": rounds, "phrases": len(phrases),
            "target_query_p95_ms": TARGET_P95_MS, "meets_target": pct(total, 95) <= TARGET_P95_MS}


def text_recall(searcher: Searcher, queries: list[tuple[str, str]], ks: tuple[int, ...] = (1, 5)) -> dict:
    """(words, product id) pairs -> recall@k through the runtime's own text search."""
    ranks = []
    for words, pid in queries:
        ids = [h.id for h in searcher.search_text(words, k=max(ks), exact_lookup=False).hits]
        ranks.append(ids.index(pid) if pid in ids else max(ks))
    ranks = np.asarray(ranks)
    return {**{f"recall@{k}": round(float((ranks < k).mean()), 4) for k in ks}, "queries": len(queries)}


def product_queries(searcher: Searcher) -> dict[str, list[tuple[str, str]]]:
    ps = searcher.products.products
    return {"names": [(p.name, p.id) for p in ps],
            "names_descriptions": [(f"{p.name}. {p.description}" if p.description else p.name, p.id) for p in ps]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the figures here as JSON")
    args = ap.parse_args(argv)
    searcher = Searcher.from_bundle(args.bundle, threads=args.threads)
    if not searcher.has_text:
        print(f"bench/text.py: {args.bundle} has no text model; export it with --with-text", file=sys.stderr)
        return 2
    report = {"bundle": str(args.bundle), "threads": args.threads,
              "text_model": {"precision": searcher.text_info.precision,
                             "mb": round((Path(args.bundle) / searcher.text_info.file).stat().st_size / 1e6, 2)},
              "latency_ms": text_latency(searcher, args.rounds),
              "recall": {name: text_recall(searcher, q) for name, q in product_queries(searcher).items()}}
    lat = report["latency_ms"]
    print(f"text query ({report['text_model']['precision']}, {report['text_model']['mb']} MB, {args.threads} threads): "
          f"embed p50 {lat['embed_p50']:.2f} ms, whole query p50 {lat['query_p50']:.2f} / p95 {lat['query_p95']:.2f} ms "
          f"(target p95 <= {TARGET_P95_MS:.0f} ms: {'met' if lat['meets_target'] else 'MISSED'})")
    for name, r in report["recall"].items():
        print(f"text -> product, {name}: recall@1 {r['recall@1']:.3f}, @5 {r['recall@5']:.3f} ({r['queries']} queries)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
