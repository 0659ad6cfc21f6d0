"""Non-product "negative" images for the grocery benchmark (issue #12, item 1).

    .venv/bin/python bench/negatives.py --data ../shared/datasets/grocery-store --split val --out DIR --count 300

What a kiosk camera sees when nothing is held up, built only from what the
benchmark has: border crops of a split's store photos (shelves, floor,
counters, hands, sleeves at the edges of the frame), whole photos blurred
beyond recognition, and generated textures (noise, gradients, flat colours,
stripes, checkerboards, text-like print). Each split draws from its own
photos and its own seed, so training negatives ("train": the dev split's fit
photos) never share a source photo with the measuring ones ("dev", "val").

No package's bundled sample photos are used (skimage, sklearn, ...): those are
kept for an independent check of the rule.

Writes JPEGs into a temporary folder renamed to OUT when complete; a second
call with the same split, count and seed returns the existing files.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import script  # noqa: E402
from bench.grocery_data import DEFAULT_DATA, dev_split  # noqa: E402
from edge_search.errors import EdgeSearchError  # noqa: E402
from edge_search.files import staged_directory  # noqa: E402

SPLITS = ("train", "dev", "val")
SIDE = 224  # written size: larger than any benchmark model's input
# share of each kind; the photo-derived kinds come first (they are what a kiosk sees most)
KINDS = (("border", 0.35), ("blur", 0.25), ("texture", 0.4))
TEXTURES = ("noise", "gradient", "flat", "stripes", "checkerboard", "text")
STAMP = "negatives.json"


class NegativesError(EdgeSearchError):
    """A negatives folder that cannot be built."""


def split_photos(data_root: Path, split: str, seed: int = 0) -> list[Path]:
    """The store photos a split's negatives are cut from: train = the dev split's
    fit photos, dev = its dev photos, val = the val photos."""
    if split not in SPLITS:
        raise NegativesError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    listing = Path(data_root) / ("val.txt" if split == "val" else "train.txt")
    if not listing.is_file():
        raise NegativesError(f"{listing}: not found (is --data the grocery-store folder?)")
    rows = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[0]:
            rows.append((Path(data_root) / parts[0], parts[1]))
    if split != "val":
        fit, dev = dev_split(rows, seed=0)  # the dev split is fixed; `seed` only draws the negatives
        rows = fit if split == "train" else dev
    return [p for p, _ in rows]


def _border_crop(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square from the frame's edge or corner: the product sits mid-frame in
    these photos, so the margins show what surrounds it."""
    h, w = rgb.shape[:2]
    s = int(min(h, w) * rng.uniform(0.15, 0.28))  # small: a larger corner often holds a whole fruit
    edge = rng.integers(0, 8)  # 4 corners, 4 edge midpoints
    xs = (0, w - s, w - s, 0, (w - s) // 2, w - s, (w - s) // 2, 0)
    ys = (0, 0, h - s, h - s, 0, (h - s) // 2, h - s, (h - s) // 2)
    jx, jy = (int(v) for v in rng.integers(-s // 8, s // 8 + 1, size=2))
    x0 = int(np.clip(xs[edge] + jx, 0, w - s))
    y0 = int(np.clip(ys[edge] + jy, 0, h - s))
    return cv2.resize(rgb[y0:y0 + s, x0:x0 + s], (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)


def _blurred(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The whole photo out of focus well past recognition (sigma 6-12 % of the side)."""
    img = cv2.resize(rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    sigma = SIDE * rng.uniform(0.06, 0.12)
    return cv2.GaussianBlur(img, (0, 0), sigma)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _texture(kind: str, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / SIDE
    a, b = _colour(rng), _colour(rng)
    if kind == "noise":
        sigma = rng.uniform(10, 80)
        base = a if rng.random() < 0.5 else np.full(3, rng.uniform(40, 220), np.float32)
        shape = (SIDE, SIDE, 3) if rng.random() < 0.5 else (SIDE, SIDE, 1)
        img = base + rng.normal(0, sigma, shape)
        if rng.random() < 0.5:  # smoothed noise looks like grain, wood, fabric
            img = cv2.GaussianBlur(np.ascontiguousarray(np.broadcast_to(img, (SIDE, SIDE, 3))), (0, 0),
                                   rng.uniform(1, 6))
    elif kind == "gradient":
        if rng.random() < 0.5:
            theta = rng.uniform(0, np.pi)
            t = np.cos(theta) * xx + np.sin(theta) * yy
        else:
            cx, cy = rng.uniform(0, 1, 2)
            t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = a + (b - a) * t[..., None]
    elif kind == "flat":
        img = np.broadcast_to(a, (SIDE, SIDE, 3)) + rng.normal(0, rng.uniform(0, 4), (SIDE, SIDE, 1))
    elif kind == "stripes":
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(0.03, 0.25)
        t = (np.cos(theta) * xx + np.sin(theta) * yy) / period
        mask = (t % 1.0) < rng.uniform(0.3, 0.7)
        img = np.where(mask[..., None], a, b)
    elif kind == "checkerboard":
        cells = int(rng.integers(3, 16))
        mask = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(bool)
        img = np.where(mask[..., None], a, b)
    else:  # text-like print: lines of random letters on a paper-like ground
        ground = rng.uniform(180, 255, size=3) if rng.random() < 0.8 else _colour(rng)
        img = np.ascontiguousarray(np.broadcast_to(ground, (SIDE, SIDE, 3))).astype(np.uint8)
        ink = tuple(int(v) for v in (rng.uniform(0, 80, size=3) if rng.random() < 0.8 else _colour(rng)))
        font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
                               cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX]))
        scale = rng.uniform(0.35, 1.1)
        step = int(28 * scale) + 6
        letters = string.ascii_letters + string.digits + "     .,"
        for y in range(int(rng.integers(10, 24)), SIDE, step):
            line = "".join(rng.choice(list(letters), size=int(rng.integers(10, 40))))
            cv2.putText(img, line, (int(rng.integers(-20, 12)), y), font, scale, ink, 1, cv2.LINE_AA)
        if rng.random() < 0.5:
            m = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), rng.uniform(-20, 20), 1.0)
            img = cv2.warpAffine(img, m, (SIDE, SIDE), borderMode=cv2.BORDER_REFLECT)
        return img
    return np.clip(img, 0, 255).astype(np.uint8)


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise NegativesError(f"{path}: cannot read image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def scenes(photos: list[Path], count: int, rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
    """`count` no-product scenes, (kind, RGB image) each, in KINDS' shares: border crops and blurred
    copies of `photos` (each drawn from them by `rng`), and generated textures."""
    counts = [int(round(share * count)) for _, share in KINDS]
    counts[-1] = count - sum(counts[:-1])
    for kind in (k for (k, _), n in zip(KINDS, counts) for _ in range(n)):
        if kind == "texture":
            name = str(rng.choice(TEXTURES))
            yield name, _texture(name, rng)
        else:
            src = photos[int(rng.integers(0, len(photos)))]
            yield kind, (_border_crop if kind == "border" else _blurred)(_read_rgb(src), rng)


def build_negatives(data_root: Path, out_dir: Path, *, split: str, count: int, seed: int) -> list[Path]:
    """Write `count` negative images for `split` into `out_dir` -> their paths (sorted).

    Deterministic in (split, count, seed); the split also enters the seed, so
    two splits never draw alike even with the same `seed`."""
    if count < 1:
        raise NegativesError(f"count must be >= 1, got {count}")
    out_dir = Path(out_dir)
    want = {"split": split, "count": count, "seed": seed, "kinds": dict(KINDS)}
    stamp = out_dir / STAMP
    if stamp.is_file():
        try:
            done = json.loads(stamp.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            done = None
        files = sorted(out_dir.glob("*.jpg"))
        if done == want and len(files) == count:
            return files
        raise NegativesError(f"{out_dir}: holds other negatives ({done}); choose another --out or remove it")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise NegativesError(f"{out_dir}: exists and is not a negatives folder; choose another --out")
    photos = split_photos(data_root, split)
    if not photos:
        raise NegativesError(f"{data_root}: no {split} photos")
    rng = np.random.default_rng([seed, SPLITS.index(split), 5150])
    # staged beside out_dir and renamed into place whole (out_dir is absent or empty, checked above)
    with staged_directory(out_dir, force=True) as tmp:
        for i, (name, img) in enumerate(scenes(photos, count, rng)):
            path = tmp / f"{split}-{i:05d}-{name}.jpg"
            if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise NegativesError(f"{path}: cannot write")
        (tmp / STAMP).write_text(json.dumps(want, indent=2) + "\n", encoding="utf-8")
    return sorted(out_dir.glob("*.jpg"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="the grocery-store dataset folder (read in place)")
    ap.add_argument("--split", required=True, choices=SPLITS)
    ap.add_argument("--out", required=True, help="folder to create (must not hold other files)")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paths = build_negatives(Path(args.data), Path(args.out), split=args.split, count=args.count, seed=args.seed)
    print(f"{len(paths)} {args.split} negatives in {args.out}")
    return 0


if __name__ == "__main__":
    script.run(main, "bench/negatives.py")
