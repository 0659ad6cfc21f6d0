"""What every command shares at the edge: printing safe lines, logging, the trusted key option."""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edge_search.display import printable
from edge_search.errors import QueryError

PROG = "edge-search"


def say(text: object = "", *, file=None, flush: bool = False) -> None:
    """Print one human-readable line: catalog text (ids, names, categories, bundle names) can hold
    terminal escapes, so every control character is shown escaped (display.printable)."""
    print(printable(text), file=file if file is not None else sys.stdout, flush=flush)


class _PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def setup_logging() -> None:
    # Libraries under the export (open_clip, huggingface_hub, the quantizer)
    # log chatter on the root logger; users see only our own warnings.
    logging.basicConfig(level=logging.CRITICAL)
    ours = logging.getLogger("edge_search")
    ours.setLevel(logging.WARNING)  # --quiet hides progress bars, never warnings
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter(f"{PROG}: %(levelname)s: %(message)s"))
    ours.handlers[:] = [handler]
    ours.propagate = False


# the core names a query setting as its Python API does; the user typed the flag
QUERY_FLAGS = {"k": "-k", "min_score": "--min-score", "alpha": "--alpha"}


@contextmanager
def flags_named() -> Iterator[None]:
    """A query setting the core refuses is told with the flag that set it."""
    try:
        yield
    except QueryError as e:
        raise e.named(QUERY_FLAGS.get(e.setting, e.setting)) from None


def fmt_price(price: float | None) -> str:
    return "" if price is None else f"{price:.2f}"


def add_trusted_key(parser: argparse.ArgumentParser) -> None:
    from edge_search.core.signing import TRUSTED_KEY_ENV, default_trusted_key_path

    parser.add_argument("--trusted-key", default=None, metavar="PUB",
                        help=f"refuse bundles not signed by this Ed25519 public key (default: "
                             f"${TRUSTED_KEY_ENV}, else {default_trusted_key_path()} if present)")


def trusted_key(args: argparse.Namespace) -> Path | None:
    """The trusted public key: --trusted-key, else the environment, else the config file."""
    from edge_search.core.signing import resolve_trusted_key

    return resolve_trusted_key(getattr(args, "trusted_key", None))
