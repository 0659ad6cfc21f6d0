"""`edge-search run`: the kiosk, on screen or as JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_search.cli.output import PROG, add_trusted_key, say, trusted_key
from edge_search.errors import EdgeSearchError


def run_kiosk_command(args: argparse.Namespace) -> int:
    from edge_search.kiosk.frames import open_source
    from edge_search.kiosk.loop import (BundleSwapFailed, BundleSwapped, BundleWatcher, FrameSaver, Lookup, KioskLoop,
                        check_k, open_or_fail, run_kiosk)
    from edge_search.core.bundle import Bundle
    from edge_search.core.filters import Filter
    from edge_search.core.search import Searcher

    from edge_search.core.search import QueryParams

    check_k(args.k)  # before any screen or camera: the kiosk's own rules, then the searcher's
    QueryParams(k=args.k, min_score=args.min_score)
    if args.max_frames is not None and args.max_frames < 1:
        raise EdgeSearchError(f"--max-frames must be at least 1, got {args.max_frames}")
    trusted = trusted_key(args)
    # a wrong path or an untrusted bundle fails here, in one line, before any screen
    Bundle.open(Path(args.bundle), verify=False, trusted_key=trusted)
    flt = Filter.parse(args.filter) if args.filter else None  # fields are checked once the bundle is open
    # headless output must not depend on this machine's speed: files and folders hand over every frame
    source = open_source(args.source, realtime=not args.no_tui)
    saver = FrameSaver(args.save_frames) if args.save_frames else None
    # a new active bundle (DIR/current switched by install) is loaded aside and swapped in between frames
    watcher = BundleWatcher(args.bundle, lambda path: Searcher.from_bundle(path, trusted_key=trusted))
    if not args.no_tui:
        from edge_search.kiosk.tui import build_app  # textual is imported only for the screen

        app = build_app(source=source, loader=lambda: Searcher.from_bundle(args.bundle, trusted_key=trusted),
                        k=args.k, min_score=args.min_score, saver=saver, max_frames=args.max_frames,
                        filter=flt, watcher=watcher)
        app.run()
        if app.fatal:
            raise EdgeSearchError(app.fatal)
        return 0
    searcher = Searcher.from_bundle(args.bundle, trusted_key=trusted)
    kiosk_loop = KioskLoop(searcher, k=args.k, min_score=args.min_score)
    kiosk_loop.filter = Filter.parse(args.filter, searcher.products) if flt else None
    open_or_fail(source)
    try:
        for event in run_kiosk(source, kiosk_loop, max_frames=args.max_frames, saver=saver, watcher=watcher):
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
    finally:
        source.stop()
    return 0


def add_parsers(sub) -> None:
    r = sub.add_parser("run", help="the kiosk: live camera lookup on screen (or JSON lines with --no-tui)")
    r.add_argument("--bundle", required=True, help="bundle directory")
    r.add_argument("--source", default="0",
                   help="camera index, video file, folder of images (played in name order) or stream URL (default 0)")
    r.add_argument("-k", type=int, default=5, help="products to show (default 5; + and - change it on screen)")
    r.add_argument("--min-score", type=float, default=None, help="below this score: no match (default: the bundle's)")
    r.add_argument("--no-tui", action="store_true",
                   help="no screen: one JSON line per search on stdout (files and folders: every frame, in order)")
    r.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames from the source")
    r.add_argument("--save-frames", default=None, metavar="DIR",
                   help="write each searched frame to DIR as JPEG (by default frames never leave memory)")
    r.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="only products where EXPR holds, e.g. category=Fruit, price<2.5 (repeatable; c clears on screen)")
    add_trusted_key(r)
    r.set_defaults(func=run_kiosk_command)
