"""`edge-search search`: photos and words -> products, as text or JSON lines."""

from __future__ import annotations

import argparse
import json

from edge_search.cli.output import add_trusted_key, flags_named, fmt_price, say, trusted_key
from edge_search.core.query import DEFAULT_K, QueryParams
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


def _shortfall(searcher, result, k: int, min_score: float | None) -> str | None:
    """Words for why fewer than k products are listed, or None when k are."""
    from edge_search.core.search import Short

    n, short = len(result.hits), result.short
    if short is None:
        return None
    if short is Short.NO_MATCH:
        return f"no match ({_refusal(searcher, result, min_score)})"
    if short is Short.FILTER:
        return "no product passes the filter" if not n else f"{n} of {k}: no other product passes the filter"
    if short is Short.BELOW:
        rule = f"--min-score {min_score:g}" if min_score is not None else f"the bundle's rule ({searcher.min_score:.3f})"
        return f"{n} of {k}: the rest scored below {rule}"
    return f"{n} of {k}: the bundle has only {n} products"


def _table(hits) -> list[str]:
    """The hits as aligned columns under a header, whatever the widths of ranks, ids and names."""
    head = ("#", "score", "id", "name", "price", "where")
    rows = [(str(rank), f"{h.score:.3f}", printable(h.id), printable(h.name) + (" (exact)" if h.exact else ""),
             fmt_price(h.price), printable(h.where)) for rank, h in enumerate(hits, 1)]
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(6)]
    where = any(r[5] for r in rows)  # a column only for bundles that say where products are
    return [(f"  {r[0]:>{w[0]}}{' ' if r is head else '.'} {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}}  "
             f"{r[4]:>{w[4]}}" + (f"  {r[5]}" if where else "")).rstrip() for r in [head, *rows]]


def run_search(args: argparse.Namespace) -> int:
    from edge_search.core.filters import Filter
    from edge_search.core.search import Searcher

    if not args.images and args.text is None:
        raise EdgeSearchError("search needs IMAGE(s), --text WORDS, or both")
    if args.alpha is not None and not (args.images and args.text is not None):
        raise EdgeSearchError("--alpha weighs a photo against words: give IMAGE(s) and --text")
    with flags_named():  # a bad -k, --min-score or --alpha fails before the bundle is loaded
        QueryParams(k=args.k, min_score=args.min_score, alpha=args.alpha)
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
        if result.hits:
            for row in _table(result.hits):
                say(row)
        why = _shortfall(searcher, result, args.k, args.min_score)
        if why:
            say(f"  {why}")
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
    s.add_argument("-k", type=int, default=DEFAULT_K, help=f"products to return (default {DEFAULT_K})")
    s.add_argument("--min-score", type=float, default=None, help="below this score: no match (default: the bundle's)")
    s.add_argument("--json", action="store_true", help="one JSON object per line per query")
    add_trusted_key(s)
    s.set_defaults(func=run_search)
