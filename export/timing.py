"""Batch-1 latency of ONNX image models, each timed alone in a fresh process.

    python -m edge_search_export.timing MODEL.onnx HxW CALLS THREADS   -> JSON list of ms per call

In one process, a second model's sessions slowed a small model's calls about 2x
(a ViT-B-32 beside the MobileNetV3-S student: 6.9 vs 1.7 ms p50; an int8 beside
an fp16 student: 7.3 vs 3.1 ms): its weights through the caches, its idle worker
threads. A device runs one model, so each model is timed in its own process, the
models alternating round by round so load drift hits all alike. This module
imports no torch, so a child starts in a fraction of a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_search.core.encoder import OnnxEncoder
from edge_search.core.threads import time_calls
from edge_search.errors import ExportError

INPUT, OUTPUT = "image", "embedding"  # as onnx_export names them (importing it would import torch)


def time_here(path: str | Path, size: tuple[int, int], calls: int, threads: int, warmup: int = 3) -> list[float]:
    enc = OnnxEncoder(path, input_name=INPUT, output_name=OUTPUT, threads=threads)
    batch = np.random.default_rng(1).standard_normal((1, 3, *size)).astype(np.float32)
    return time_calls(enc, batch, calls, warmup)


def time_alone(models: dict[str, tuple[Path, tuple[int, int]]], rounds: int, calls: int | dict[str, int],
               threads: int, progress: bool = False) -> dict[str, list[float]]:
    """ms per call of each model (name -> (file, input height and width)), each round one fresh process
    per model."""
    times: dict[str, list[float]] = {n: [] for n in models}
    for r in range(rounds):
        if progress:
            print(f"timing round {r + 1}/{rounds} ({len(models)} models, {threads} threads) ...", file=sys.stderr,
                  flush=True)
        for n, (path, (h, w)) in models.items():
            k = calls[n] if isinstance(calls, dict) else calls
            proc = subprocess.run([sys.executable, "-m", "edge_search_export.timing", str(path), f"{h}x{w}", str(k),
                                   str(threads)], capture_output=True, text=True)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
                raise ExportError(f"{path}: timing it failed ({last})")
            times[n] += json.loads(proc.stdout)
    return times


def main(argv: list[str]) -> int:
    path, size, calls, threads = argv[0], argv[1], int(argv[2]), int(argv[3])
    h, _, w = size.partition("x")
    print(json.dumps(time_here(path, (int(h), int(w)), calls, threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
