"""How many threads this device runs a bundle's image model fastest at: timed at install, recorded.

Which thread count answers fastest depends on the device, not the bundle: on
the 2-core development machine the MobileNetV3-S student ran 1.5 ms at 2
threads and 2.6 ms at 1 (224 px), yet some small models at 128 px ran faster
at 1 (docs/benchmarks/students.md), and a one-core kiosk gains nothing from 2.
`install` times the image model at 1 .. min(MAX_THREADS, CPUs) threads, one
session at a time (a second live session slows the one being timed), the
counts alternating round by round, and records the fastest p50 under the
cache folder, named by the model file's sha256. `Searcher.from_bundle` uses the
recorded count when no count is given; with none recorded, DEFAULT_THREADS.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from edge_search.core.encoder import DEFAULT_THREADS, OnnxEncoder
from edge_search.errors import EdgeSearchError
from edge_search.files import default_cache_dir, read_regular, write_cache_record

FOLDER = "device-threads"
MAX_THREADS = 4
MAX_RECORD_BYTES = 1 << 16


def _record_path(model_sha256: str) -> Path:
    return default_cache_dir() / FOLDER / f"{model_sha256}.json"


def time_calls(enc, batch: np.ndarray, calls: int, warmup: int = 2) -> list[float]:
    """ms per `enc.embed(batch)`, after `warmup` untimed calls (export/timing.py times with it too)."""
    for _ in range(warmup):
        enc.embed(batch)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        enc.embed(batch)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def time_thread_counts(model: Path, *, input_name: str, output_name: str, size: tuple[int, int],
                       counts: list[int] | None = None, rounds: int = 3, calls: int = 8) -> dict[int, float]:
    """Batch-1 p50 ms of the model at each thread count."""
    counts = counts or list(range(1, min(MAX_THREADS, os.cpu_count() or 1) + 1))
    batch = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    times: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(rounds):
        for n in counts:
            enc = OnnxEncoder(model, input_name=input_name, output_name=output_name, threads=n)
            times[n] += time_calls(enc, batch, calls)
            del enc  # one live session at a time
    return {n: round(float(np.median(v)), 3) for n, v in times.items()}


def fastest(p50: dict[int, float]) -> int:
    """The count with the lowest p50; within 5 % of it, the fewest threads (they leave the rest of the
    device to the camera and the screen)."""
    best = min(p50.values())
    return min(n for n, ms in p50.items() if ms <= best * 1.05)


def record_threads(model_sha256: str, p50: dict[int, float]) -> int | None:
    """Write the fastest count for this model; returns it, or None when the cache folder cannot be
    written (the runtime then uses DEFAULT_THREADS)."""
    choice = fastest(p50)
    record = {"model_sha256": model_sha256, "threads": choice, "p50_ms": {str(k): v for k, v in p50.items()},
              "cpus": os.cpu_count()}
    return choice if write_cache_record(_record_path(model_sha256), record) else None


def recorded_threads(model_sha256: str | None) -> int:
    """The count install recorded for this model on this device, else DEFAULT_THREADS. A record that
    is unreadable, not ours, or names a count outside 1 .. MAX_THREADS is ignored."""
    if not model_sha256:
        return DEFAULT_THREADS
    try:
        record = json.loads(read_regular(_record_path(model_sha256), limit=MAX_RECORD_BYTES))
    except (EdgeSearchError, OSError, ValueError):
        return DEFAULT_THREADS
    n = record.get("threads") if isinstance(record, dict) and record.get("model_sha256") == model_sha256 else None
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        return DEFAULT_THREADS
    return n
