"""`edge-search run`: the kiosk, on screen or as JSON lines."""

from __future__ import annotations

import argparse
import json
import sys

from edge_search.cli.output import PROG, add_trusted_key, flags_named, say, trusted_key
from edge_search.core.query import DEFAULT_K
from edge_search.errors import EdgeSearchError


def run_kiosk_command(args: argparse.Namespace) -> int:
    from edge_search.kiosk.session import open_session

    if args.max_frames is not None and args.max_frames < 1:
        raise EdgeSearchError(f"--max-frames must be at least 1, got {args.max_frames}")
    with flags_named():  # a bad -k or --min-score fails before any screen or camera
        session = open_session(args.bundle, source=args.source, k=args.k, min_score=args.min_score,
                               filter=args.filter, save_frames=args.save_frames, trusted_key=trusted_key(args),
                               realtime=not args.no_tui, retries=args.retries, confirm=args.confirm)
    if args.no_tui:
        return _headless(session, args.max_frames)
    from edge_search.kiosk.tui import build_app  # textual is imported only for the screen

    app = build_app(session, max_frames=args.max_frames)
    app.run()
    if app.fatal:
        raise EdgeSearchError(app.fatal)
    return 0


def _headless(session, max_frames: int | None) -> int:
    """One JSON line per search on stdout; warnings and the closing tally on stderr."""
    from edge_search.kiosk.loop import BundleSwapFailed, BundleSwapped, Lookup, open_or_fail, run_kiosk
    from edge_search.kiosk.session import RunTally

    session.load()
    open_or_fail(session.source)
    tally = RunTally()
    try:
        for event in run_kiosk(session.source, session.loop, max_frames=max_frames, saver=session.saver,
                               watcher=session.watcher):
            tally.add(event)
            if isinstance(event, Lookup):
                print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)
            elif isinstance(event, BundleSwapped):
                say(f"{PROG}: {event.text}", file=sys.stderr, flush=True)
            elif isinstance(event, BundleSwapFailed):
                say(f"{PROG}: warning: {event.text}", file=sys.stderr, flush=True)
            elif getattr(event, "state", None) == "lost":  # a camera or stream: retried, so a warning
                say(f"{PROG}: warning: {event.text}", file=sys.stderr, flush=True)
            elif getattr(event, "state", None) == "failed":  # a file that broke part way
                raise EdgeSearchError(event.message)
    except KeyboardInterrupt:  # a camera run ends with Ctrl-C: still say what it did
        say(f"{PROG}: {tally.text}", file=sys.stderr, flush=True)
        raise
    finally:
        session.source.stop()
    say(f"{PROG}: {tally.text}", file=sys.stderr, flush=True)
    return 0


def add_parsers(sub) -> None:
    r = sub.add_parser("run", help="the kiosk: live camera lookup on screen (or JSON lines with --no-tui)")
    r.add_argument("--bundle", required=True, help="bundle directory")
    r.add_argument("--source", default="0",
                   help="camera index, video file, folder of images (played in name order) or stream URL (default 0)")
    r.add_argument("-k", type=int, default=DEFAULT_K,
                   help=f"products to show (default {DEFAULT_K}; + and - change it on screen)")
    r.add_argument("--min-score", type=float, default=None, help="below this score: no match (default: the bundle's)")
    r.add_argument("--no-tui", action="store_true",
                   help="no screen: one JSON line per search on stdout (files and folders: every frame, in order)")
    r.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames from the source")
    r.add_argument("--save-frames", default=None, metavar="DIR",
                   help="write each searched frame to DIR as JPEG (by default frames never leave memory)")
    r.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="only products where EXPR holds, e.g. category=Fruit, price<2.5 (repeatable; c clears on screen)")
    # the names of edge_search.kiosk.loop.RETRY_RULES, plus off (that module is not imported to parse flags)
    r.add_argument("--retries", choices=("agree", "any", "off"), default="agree",
                   help="when the rule refuses a whole frame, search a centre crop and an equalized copy: agree "
                        "(default) names only the product the whole frame ranked first, any whatever passes, off "
                        "never retries (docs/benchmarks: bench/retries.py)")
    r.add_argument("--confirm", action="store_true",
                   help="name a product only when the centre of the frame ranks it first too: one more search per "
                        "answer, far fewer wrong names and fewer right ones (docs/benchmarks: bench/retries.py)")
    add_trusted_key(r)
    r.set_defaults(func=run_kiosk_command)
