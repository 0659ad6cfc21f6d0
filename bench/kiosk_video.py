"""The kiosk end to end on a hand-held video of store photos and no-product scenes (issue #12, item 1).

    .venv/bin/python bench/kiosk_video.py --bundle bench-out/grocery-lr6e-4/bundle \
        --data ../shared/datasets/grocery-store --split val --out bench-out/kiosk-video-val.json

Renders one video: every photo of the split (each held for `--held` frames, with a hand's tremor: small
seeded shifts and a slight zoom from frame to frame) in a seeded order, with `--scenes` no-product
scenes of the same split (bench/negatives.py: border crops, blurred photos, generated textures) held the
same way between them. Then runs `edge-search run --bundle B --source VIDEO --no-tui -k 1`, the kiosk as
a user runs it (quality gate, steadiness, the bundle's rule, the retries), and reads its JSON lines. For
every shown item: whether the kiosk searched it at all, and what it named. A product is answered right
when every name shown for it was its own; named wrong when any name shown was another product's. A scene
is named when any name was shown. Shares with 95 % bootstrap intervals over the items shown (photos
resampled, bench/stats.py). Nothing here is tuned: a measurement of the bundle and the kiosk's defaults.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench import script, stats  # noqa: E402
from bench.grocery_data import DEFAULT_DATA, dev_split, write_queries  # noqa: E402
from bench.negatives import build_negatives  # noqa: E402
from edge_search.core.images import load_image  # noqa: E402
from edge_search.errors import EdgeSearchError  # noqa: E402
from edge_search.evaluation.evaluate import read_queries  # noqa: E402

SIDE = 320  # the video's frame side
FPS = 10
TREMOR_PX = 1.5  # per-frame shift of a hand holding still (standard deviation, pixels)
ZOOM = (1.0, 1.12)  # how much of the photo fills the frame, drawn per shown item


class VideoError(EdgeSearchError):
    """The video cannot be written or the kiosk run failed."""


def _square(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return cv2.resize(rgb[top:top + s, left:left + s], (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def held_frames(rgb: np.ndarray, held: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`held` frames of one photo in a hand: a zoom drawn once, a small drift from frame to frame."""
    base = _square(rgb)
    zoom = rng.uniform(*ZOOM)
    offset = np.zeros(2)
    frames = []
    for _ in range(held):
        offset += rng.normal(0, TREMOR_PX, 2)
        m = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), 0.0, zoom)
        m[:, 2] += offset
        frames.append(cv2.warpAffine(base, m, (SIDE, SIDE), borderMode=cv2.BORDER_REFLECT))
    return frames


def render(items: list[tuple[Path, str | None]], held: int, path: Path, seed: int) -> Path:
    """The video of `items` (image, product id or None for a scene), `held` frames each, in this order."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIDE, SIDE))
    if not writer.isOpened():
        raise VideoError(f"{path}: OpenCV cannot write an mp4v video here")
    rng = np.random.default_rng([seed, 31])
    try:
        for image, _ in items:
            for f in held_frames(load_image(image), held, rng):
                writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def outcomes(lines: list[dict], items: list[tuple[Path, str | None]], held: int) -> list[dict]:
    """Per shown item, from the kiosk's JSON lines: searches made, the names shown."""
    out = [{"product": pid, "searches": 0, "named": []} for _, pid in items]
    for d in lines:
        item = out[d["frame"] // held]
        item["searches"] += 1
        if not d["no_match"] and d["results"]:
            item["named"].append(d["results"][0]["id"])
    return out


def figures(shown: list[dict]) -> dict:
    products = [s for s in shown if s["product"] is not None]
    scenes = [s for s in shown if s["product"] is None]
    p_idx, s_idx = stats.resamples(len(products), stream=70), stats.resamples(len(scenes), stream=71)
    searched = np.asarray([s["searches"] > 0 for s in products])
    wrong = np.asarray([any(n != s["product"] for n in s["named"]) for s in products])
    right = np.asarray([bool(s["named"]) and not w for s, w in zip(products, wrong)])
    named = right | wrong
    out = {"products_shown": len(products), "scenes_shown": len(scenes),
           "products_searched": stats.share(searched, p_idx).to_json(),
           "answered_right": stats.share(right, p_idx).to_json(),
           "named_wrong": stats.share(wrong, p_idx).to_json(),
           "right_when_named": stats.share(right, p_idx, within=named).to_json(),
           "searches_per_product": round(float(np.mean([s["searches"] for s in products])), 2)}
    if scenes:
        out["scenes_searched"] = stats.share(np.asarray([s["searches"] > 0 for s in scenes]), s_idx).to_json()
        out["scenes_named"] = stats.share(np.asarray([bool(s["named"]) for s in scenes]), s_idx).to_json()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--split", choices=["dev", "val"], default="val")
    ap.add_argument("--queries", type=Path, default=None,
                    help="a query CSV (image,id) to show instead of the split's photos (its scenes still come "
                         "from --split)")
    ap.add_argument("--photos", type=int, default=0, help="photos shown (0: every photo of the split)")
    ap.add_argument("--scenes", type=int, default=100, help="no-product scenes shown between them")
    ap.add_argument("--held", type=int, default=12, help="frames each item is held in view")
    ap.add_argument("--kiosk", nargs=argparse.REMAINDER, default=[], metavar="FLAG",
                    help="last: flags passed on to edge-search run, e.g. --kiosk --confirm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench-out/kiosk-video.json"))
    a = ap.parse_args(argv)
    if a.held < 4 or a.scenes < 0 or a.photos < 0:
        ap.error("--held must be 4 or more (the kiosk waits for a steady view); --photos and --scenes >= 0")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.queries:
            rows = read_queries(a.queries)
        else:
            rows = read_queries(write_queries(a.data, tmp / "csv", "train" if a.split == "dev" else "val"))
            if a.split == "dev":
                rows = dev_split(rows)[1]
        rng = np.random.default_rng([a.seed, 30])
        if a.photos:
            rows = [rows[i] for i in sorted(rng.choice(len(rows), min(a.photos, len(rows)), replace=False))]
        scenes = build_negatives(a.data, tmp / "scenes", split=a.split, count=a.scenes, seed=a.seed) \
            if a.scenes else []
        items = [(q.image.resolve(), q.id) for q in rows] + [(p, None) for p in scenes]
        items = [items[i] for i in rng.permutation(len(items))]
        video = render(items, a.held, tmp / "shown.mp4", a.seed)
        cmd = [sys.executable, "-m", "edge_search", "run", "--bundle", str(a.bundle), "--source", str(video),
               "--no-tui", "-k", "1", *a.kiosk]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise VideoError(f"edge-search run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    shown = outcomes(lines, items, a.held)
    report = {"command": " ".join([".venv/bin/python", "bench/kiosk_video.py"] +
                                  (argv if argv is not None else sys.argv[1:])),
              "bundle": str(a.bundle), "split": a.split, "held_frames": a.held, "fps": FPS, "seed": a.seed,
              "bootstrap_seed": stats.SEED,
              "kiosk": "edge-search run --no-tui -k 1 " + (" ".join(a.kiosk) if a.kiosk else "(its defaults)"),
              "kiosk_summary": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "",
              **figures(shown), "items": [{"image": str(img), **s} for (img, _), s in zip(items, shown)]}
    for key in ("products_searched", "answered_right", "named_wrong", "right_when_named", "scenes_searched",
                "scenes_named"):
        if key in report:
            print(f"{key:18s} {stats.fmt(report[key])}")
    print(report["kiosk_summary"])
    script.write_report(a.out, report)
    return 0


if __name__ == "__main__":
    script.run(main, "bench/kiosk_video.py")
