"""`edge-search ARGS` in this process, its memory sampled by phase: what bench/scale.py's driver memory
runs, so that what one more catalog image costs the driver is given step by step, not only as a peak.

    python bench/driver_phases.py OUT.json export --catalog C --out B ...

A thread reads this process's RssAnon and RssFile every SAMPLE_S seconds with the step of ours the main
thread is in (the innermost of PHASES on its stack; "other" when none is); at exit OUT.json gets each
step's highest RssAnon and RssFile (mapped files) in MB and the process's peak RSS (the kernel's
high-water mark VmHWM, which counts mapped files too).
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import threading
import time

# (phase, the function whose frame marks it), matched innermost first
PHASES = (
    ("read_catalog", "read_catalog"),
    ("ray_pass", "prefill_on_ray"),
    ("ray_pass", "prefill_apart"),  # the pass in a child process (export/ray_pass.py): the driver waits
    ("read_vectors", "stream_catalog"),
    ("lineage", "catalog_changes"),
    ("index_choice", "choose_search"),
    ("index", "write_index"),
    ("thumbnails", "shown_thumbnails"),
    ("self_retrieval", "self_retrieval"),
    ("no_match_rule", "calibrate_no_match"),
    ("build_record", "write_build_record"),
    ("read_back", "check_named"),
    ("publish", "staged_directory"),
    ("remember_files", "remember_files"),
)
MARKS = {fn: phase for phase, fn in PHASES}
# the index's build peaks for a moment each time usearch grows its arrays: read at 0.1 s, two runs' peaks at
# 100 000 images differed by 16 MB
SAMPLE_S = 0.02


def status_kb(key: str = "RssAnon", pid: str = "self") -> int:
    """A field of /proc/PID/status in KB (0 when the process is gone; bench/scale.py reads its children)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _anon_kb() -> int:
    return status_kb("RssAnon")


def _phase(frame) -> str:
    while frame is not None:
        phase = MARKS.get(frame.f_code.co_name)
        if phase is not None:
            return phase
        frame = frame.f_back
    return "other"


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    main_thread = threading.get_ident()
    peaks: dict[str, int] = {}
    files: dict[str, int] = {}  # RssFile beside it: mapped files (libraries, models, column and index files)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            phase = _phase(sys._current_frames().get(main_thread))
            peaks[phase] = max(peaks.get(phase, 0), _anon_kb())
            files[phase] = max(files.get(phase, 0), status_kb("RssFile"))
            time.sleep(SAMPLE_S)

    def write() -> None:
        done.set()
        # VmHWM, not getrusage's ru_maxrss: that one survives exec, so it would report the parent's size
        # when the parent that started this process was the larger
        peak_kb = status_kb("VmHWM")
        report = {"phases_anon_mb": {p: round(kb / 1024, 1) for p, kb in peaks.items()},
                  "phases_file_mb": {p: round(kb / 1024, 1) for p, kb in files.items()},
                  "peak_rss_mb": round(peak_kb / 1024, 1)}
        with open(out + ".tmp", "w") as f:
            json.dump(report, f)
        os.replace(out + ".tmp", out)

    threading.Thread(target=sample, daemon=True).start()
    atexit.register(write)
    sys.argv = ["edge-search", *args]
    runpy.run_module("edge_search", run_name="__main__")


if __name__ == "__main__":
    main()
