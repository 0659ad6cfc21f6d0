"""A longer run of the fuzzing suite (tests/bench/test_fuzz.py), reporting how many cases ran.

    .venv/bin/python bench/fuzz.py --examples 300 --out bench-out/fuzz.json

Runs the same properties as the test suite with `--examples` hypothesis
examples each (the tests default to 40), in a fresh pytest process, and
writes {cases per family, total, crashes, hangs, peak memory, passed,
seconds} as JSON. A crash is a failed property (an exception that is not
one of ours, a message of more than one line, a partial write); a hang is a
case slower than the suite's HANG_S; peak memory is the pytest process's
maximum resident set (and the largest of any process it started).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=300, help="hypothesis examples per property")
    ap.add_argument("--out", default="bench-out/fuzz.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        counts = Path(tmp) / "counts.json"
        env = {**os.environ, "EDGE_SEARCH_FUZZ_EXAMPLES": str(args.examples), "EDGE_SEARCH_FUZZ_COUNTS": str(counts)}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(REPO / "tests" / "bench" / "test_fuzz.py")], cwd=REPO, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        report = json.loads(counts.read_text()) if counts.exists() else {"cases": {}, "total": 0}
    summary = [line for line in proc.stdout.splitlines() if " passed" in line or " failed" in line]
    failed = re.search(r"(\d+) failed", summary[-1]) if summary else None
    report.update(crashes=int(failed.group(1)) if failed else (0 if proc.returncode == 0 else None),
                  hangs=report.get("hangs", 0),
                  # the pytest process itself (every in-process case) vs any process it started (the fixture's
                  # export through the CLI loads torch; index cases run in children)
                  peak_rss_mb=report.get("peak_rss_mb"),
                  peak_rss_mb_any_process=round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1))
    report.update(examples_per_property=args.examples, passed=proc.returncode == 0,
                  pytest=summary[-1] if summary else proc.stdout[-500:], seconds=round(seconds, 1),
                  command=f"python bench/fuzz.py --examples {args.examples}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from edge_search.files import atomic_write_text  # after the run: the parent stays light while it measures

    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if proc.returncode != 0:
        print(proc.stdout[-4000:], file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
