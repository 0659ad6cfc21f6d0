"""Time one ONNX image model alone in this process: what a device running only that model sees.

    python -m bench.one_model MODEL.onnx SIDE CALLS THREADS   -> JSON list of ms per call

bench/encoders.py runs one of these per model per round, alternating models round by
round: in one process, a large model's sessions slowed a small one's calls about 2x
(its weights through the caches, its idle worker threads), which no device running
the small model alone would see; separate processes keep each figure its own.
"""

from __future__ import annotations

import json
import sys
import time

import edge_search  # noqa: F401  (onnxruntime before usearch)
import numpy as np
from edge_search.core.encoder import OnnxEncoder


def time_model(path: str, side: int, calls: int, threads: int, warmup: int = 3) -> list[float]:
    enc = OnnxEncoder(path, input_name="image", output_name="embedding", threads=threads)
    batch = np.random.default_rng(1).standard_normal((1, 3, side, side)).astype(np.float32)
    for _ in range(warmup):
        enc.embed(batch)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        enc.embed(batch)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main(argv: list[str]) -> int:
    path, side, calls, threads = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    print(json.dumps(time_model(path, side, calls, threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
