"""Soak test of the headless kiosk: a generated camera for a long time.

    .venv/bin/python bench/soak.py --bundle BUNDLE --frames 100000 --out bench-out/soak.json

The real kiosk loop (`loop.run_kiosk`: the capture thread of `frames.Capture`,
the quality check, the bundle's ONNX model and index) runs on a generated
camera: sample products held up in turn, each for `--hold` frames with a
little jitter, so the quality check searches every new view. Every `--drop-every`
frames the camera stops sending and cannot be opened for a moment (a
simulated unplug); the capture thread must pick it up again by itself.

Measured: resident memory (RSS) and open file descriptors after warm-up and
at the end, frames per second in the first and last windows after warm-up,
lookups, drops and reconnects. Pass: RSS grows < 5 %, no descriptor is
leaked, the last window's fps is at least 80 % of the first's, and every
drop was followed by a reconnect.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import edge_search  # noqa: F401  (onnxruntime before usearch)
import cv2
import numpy as np

from edge_search.kiosk.frames import Capture, SourceError, SourceSpec
from edge_search.kiosk.loop import FrameSeen, Lookup, KioskLoop, run_kiosk
from edge_search_export.sample_catalog import PRODUCTS, draw_product
from edge_search.core.search import Searcher
from edge_search.files import atomic_write_text


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class GeneratedCamera:
    """Frames of the sample products, each held for `hold` frames with jitter;
    `gone` is set while the simulated camera is unplugged."""

    def __init__(self, hold: int = 200, size: tuple[int, int] = (320, 240), variants: int = 8, fps: float = 1000.0):
        self.hold, self.n, self.interval = hold, 0, 1.0 / fps
        self.next_due = time.monotonic()
        rng = np.random.default_rng(0)
        self.frames = []
        for i in range(len(PRODUCTS)):
            base = cv2.resize(draw_product(i), (size[1], size[1]))
            canvas = np.full((size[1], size[0], 3), 90, np.uint8)
            views = []
            for _ in range(variants):
                dx, dy = rng.integers(-3, 4, 2)
                img = canvas.copy()
                x0 = (size[0] - size[1]) // 2 + int(dx)
                img[:, max(0, x0):x0 + size[1]] = np.roll(base, int(dy), axis=0)[:, : size[0] - max(0, x0)]
                views.append(img)
            self.frames.append(views)
        self.gone = threading.Event()
        self.opened = 0

    def opener(self, spec: SourceSpec) -> "GeneratedCamera.Reader":
        if self.gone.is_set():
            raise SourceError(f"camera {spec.target}: not found (unplugged)")
        self.opened += 1
        return GeneratedCamera.Reader(self)

    class Reader:
        fps = 30.0

        def __init__(self, cam: "GeneratedCamera"):
            self.cam = cam

        def read(self):
            cam = self.cam
            if cam.gone.is_set():
                return None  # the camera stopped sending frames
            # a camera sends at its own rate (an unpaced generator would spin on the GIL)
            cam.next_due = max(cam.next_due + cam.interval, time.monotonic() - 0.05)
            delay = cam.next_due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            cam.n += 1
            product = (cam.n // cam.hold) % len(cam.frames)
            return cam.frames[product][cam.n % len(cam.frames[product])]

        def close(self) -> None:
            pass


def soak(bundle: Path, frames: int, *, hold: int = 200, drop_every: int = 10_000, outage_s: float = 0.2,
         warmup: int | None = None, windows: int = 10, threads: int = 1, retry_s: float = 0.1,
         camera_fps: float = 1000.0) -> dict:
    searcher = Searcher.from_bundle(bundle, threads=threads)
    kiosk_loop = KioskLoop(searcher, k=3)
    cam = GeneratedCamera(hold=hold, fps=camera_fps)
    capture = Capture(SourceSpec("camera", 0, "generated camera 0"), opener=cam.opener, retry_s=retry_s)
    warmup = warmup if warmup is not None else max(1000, frames // 20)
    window = max(1, (frames - warmup) // windows)
    seen = lookups = drops = reconnects = 0
    lost = False
    before: dict = {}
    window_fps: list[float] = []
    window_start = None
    capture.start()
    t_start = time.perf_counter()
    try:
        for event in run_kiosk(capture, kiosk_loop, max_frames=frames, stop_at_end=False, poll_s=0.05):
            if isinstance(event, FrameSeen):
                seen += 1
                if seen == warmup:
                    before = {"rss_mb": rss_mb(), "fds": open_fds()}
                    window_start = (time.perf_counter(), seen)
                elif window_start and seen - window_start[1] == window:
                    # outages are not frame rate: their time is subtracted below
                    window_fps.append(window / (time.perf_counter() - window_start[0]))
                    window_start = (time.perf_counter(), seen)
                if drop_every and seen % drop_every == 0 and not lost and seen < frames - drop_every // 4:
                    drops += 1
                    cam.gone.set()
                    threading.Timer(outage_s, cam.gone.clear).start()
            elif isinstance(event, Lookup):
                lookups += 1
            elif getattr(event, "state", None) == "lost":
                lost = True
                if window_start:  # the outage is not part of the frame rate
                    t_lost = time.perf_counter()
            elif getattr(event, "state", None) == "live":
                if lost:
                    reconnects += 1
                    if window_start:
                        window_start = (window_start[0] + time.perf_counter() - t_lost, window_start[1])
                lost = False
    finally:
        capture.stop()
    seconds = time.perf_counter() - t_start
    after = {"rss_mb": rss_mb(), "fds": open_fds()}
    growth = (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"] if before else float("nan")
    first, last = (window_fps[0], window_fps[-1]) if window_fps else (float("nan"), float("nan"))
    report = {
        "bundle": str(bundle), "camera_fps": camera_fps, "frames": seen, "lookups": lookups, "seconds": round(seconds, 1),
        "fps_overall": round(seen / seconds, 1), "warmup_frames": warmup,
        "rss_mb": {"after_warmup": round(before.get("rss_mb", float("nan")), 1), "end": round(after["rss_mb"], 1),
                   "growth": round(growth, 4)},
        "fds": {"after_warmup": before.get("fds"), "end": after["fds"]},
        "fps_windows": [round(f, 1) for f in window_fps], "fps_first_window": round(first, 1),
        "fps_last_window": round(last, 1), "fps_last_over_first": round(last / first, 3) if window_fps else None,
        "camera": {"drops": drops, "reconnects": reconnects, "opened": cam.opened,
                   "frames_dropped_by_capture": capture.dropped},
    }
    report["pass"] = {
        "rss_growth_under_5pct": bool(growth < 0.05),
        "no_fd_leak": bool(before and after["fds"] <= before["fds"]),
        "fps_not_degraded": bool(window_fps and last >= 0.8 * first),
        "every_drop_reconnected": reconnects == drops,
    }
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--hold", type=int, default=200, help="frames each product is held up")
    ap.add_argument("--drop-every", type=int, default=15_000, help="unplug the camera every N frames (0: never)")
    ap.add_argument("--camera-fps", type=float, default=1000.0, help="the generated camera's frame rate")
    ap.add_argument("--out", default="bench-out/soak.json")
    args = ap.parse_args()
    report = soak(Path(args.bundle), args.frames, hold=args.hold, drop_every=args.drop_every,
                  camera_fps=args.camera_fps)
    report["command"] = " ".join(["python", "bench/soak.py", *sys.argv[1:]])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if all(report["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
