"""`edge-search search`: photos and words -> products, as text or JSON lines."""

from __future__ import annotations

import argparse
import json

from edge_search.cli.output import add_trusted_key, fmt_price, say, trusted_key
from edge_search.display import printable
from edge_search.errors import EdgeSearchError


def _refusal(searcher, result, min_score: float | None) -> str:
    """Words for why a photo got "no match" (the calibrated rule has three reasons)."""
    cal = None if min_score is not None else searcher.calibration
    if cal is not None and cal.negative_margin is not None and \
            result.best_score - result.negative_score < cal.negative_margin:
        return (f"it looks like a scene with no product: nearest such scene {result.negative_score:.3f}, "
                f"best product {result.best_score:.3f}")
    if cal is not None and result.margin < cal.min_margin:
        return f"the top two products are {result.margin:.3f} apart, under the {cal.min_margin:.3f} needed"
    threshold = searcher.min_score if min_score is None else min_score
    return f"best score {result.best_score:.3f} is below {'its floor' if cal else f'{threshold:.3f}'}"


def run_search(args: argparse.Namespace) -> int:
    from edge_search.core.filters import Filter
    from edge_search.core.search import QueryParams, Searcher

    if not args.images and args.text is None:
        raise EdgeSearchError("search needs IMAGE(s), --text WORDS, or both")
    if args.alpha is not None and not (args.images and args.text is not None):
        raise EdgeSearchError("--alpha weighs a photo against words: give IMAGE(s) and --text")
    QueryParams(k=args.k, min_score=args.min_score)  # a bad -k fails before the bundle is loaded
    searcher = Searcher.from_bundle(args.bundle, trusted_key=trusted_key(args))
    flt = Filter.parse(args.filter, searcher.products) if args.filter else None
    queries = args.images or [None]
    for image in queries:
        if image is None:
            result = searcher.search_text(args.text, k=args.k, min_score=args.min_score, filter=flt)
        else:
            result = searcher.search_image(image, k=args.k, min_score=args.min_score, filter=flt, text=args.text,
                                           alpha=args.alpha)
        label = image if image is not None else args.text
        if args.json:
            line = {"query": label,
                    "results": [h.to_json() for h in result.hits],
                    "no_match": result.no_match,
                    "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()}}
            if image is not None and args.text is not None:
                line["text"] = args.text
            if flt:
                line["filter"] = str(flt)
            print(json.dumps(line, ensure_ascii=False), flush=True)
            continue
        say(label if image is None or args.text is None else f"{image} + {args.text!r}")
        if flt:
            say(f"  filter: {flt}")
        if result.no_match:
            if not result.hits and result.best_score == float("-inf"):
                say("  no product passes the filter")
            else:
                say(f"  no match ({_refusal(searcher, result, args.min_score)})")
        for rank, h in enumerate(result.hits, 1):
            mark = " (exact)" if h.exact else ""
            say(f"  {rank}. {h.score:6.3f}  {printable(h.id):<24} {printable(h.name) + mark:<32} {fmt_price(h.price):>8}")
        t = result.timings_ms
        say(f"  embed {t['embed']:.1f} ms, search {t['search']:.2f} ms")
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("search", help="find the products shown in photos")
    s.add_argument("--bundle", required=True, help="bundle directory")
    s.add_argument("images", nargs="*", metavar="IMAGE")
    s.add_argument("--text", default=None, metavar="WORDS",
                   help="search by words; with IMAGE, steer the photo by the words (needs a --with-text bundle)")
    s.add_argument("--alpha", type=float, default=None,
                   help="photo + words: weight of the photo, 0..1 (default: the bundle's, 0.9 when exported now)")
    s.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="keep products where EXPR holds: category=Fruit, price<2.5 (=, !=, <, <=, >, >=; repeatable)")
    s.add_argument("-k", type=int, default=5, help="products to return (default 5)")
    s.add_argument("--min-score", type=float, default=None, help="below this score: no match (default: the bundle's)")
    s.add_argument("--json", action="store_true", help="one JSON object per line per query")
    add_trusted_key(s)
    s.set_defaults(func=run_search)
