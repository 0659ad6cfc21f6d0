"""The `edge-search` command: parses arguments, calls the core, prints.

One module per command group (search, inspect, eval, run, shipping); this
one builds the parser and is the only place that turns our errors into
messages and exit codes. Commands that other installed parts provide (the
export stage's `export` and `demo`) are found through the
`edge_search.commands` entry-point group, so the runtime never names them.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import entry_points

from edge_search import __version__
from edge_search.cli import evaluate, inspect, kiosk, search, shipping
from edge_search.cli.output import PROG, say, setup_logging
from edge_search.display import printable
from edge_search.errors import EdgeSearchError

PLUGIN_GROUP = "edge_search.commands"


def _add_plugins(sub) -> None:
    """Each entry point names a function that adds its sub-command(s) to `sub`."""
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            add = ep.load()
        except Exception as e:  # a broken plugin must not take the runtime's own commands down with it
            reason = f"{type(e).__name__}: {e}"
            broken = sub.add_parser(ep.name, help=f"(could not be loaded: {reason})")
            broken.set_defaults(func=lambda args, name=ep.name, why=reason: _broken_plugin(name, why))
            continue
        add(sub)


def _broken_plugin(name: str, reason: str) -> int:
    raise EdgeSearchError(f"the '{name}' command could not be loaded ({reason}); reinstall edge-search")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="On-device visual product search.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    search.add_parsers(sub)
    inspect.add_parsers(sub)
    _add_plugins(sub)
    evaluate.add_parsers(sub)
    kiosk.add_parsers(sub)
    shipping.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        return args.func(args)
    except EdgeSearchError as e:
        say(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        say(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        # the file system's own failures (a full disk, a folder we may not write, a symlink loop) that no
        # core function mapped: still one line naming the path, never a traceback
        where = e.filename if e.filename is not None else "edge-search"
        say(f"{PROG}: error: {printable(where)}: {printable(e.strerror or e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
