"""What every bench script ends with: its JSON report written whole, and its errors as one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from edge_search.errors import EdgeSearchError
from edge_search.files import atomic_write_text


def write_report(path: Path, report: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")


def run(main: Callable[[], int], name: str) -> None:
    """`main()`'s exit status; one of our errors is one line on stderr, named by the script."""
    try:
        sys.exit(main())
    except EdgeSearchError as e:
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
