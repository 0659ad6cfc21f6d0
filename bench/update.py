"""Catalog updates (issue #14): a catalog build from scratch against an update on a base, and what devices
download: a full pack against a delta pack. One run, figures as ratios.

    .venv/bin/python bench/update.py --products 10000 --out bench-out/update.json [--base tests/data/tiny-bundle]

A generated catalog of N products (one synthetic studio image each: the sample products' drawings with a
per-product colour, label and number) is built on a fixed base's models (`export --base`, the committed
tiny bundle by default, whose catalog encoder is its ONNX model: no torch), twice:
- **scratch**: the catalog build with an empty embedding cache;
- **update**: 1 % of products added, 1 % removed and 10 % repriced, built on the scratch bundle with the
  cache the scratch build filled; and a **price-only** update (10 % repriced).
Then `pack` of the updated bundle whole and as a delta on the scratch bundle, and of the price-only update
as a delta. Each build runs as the CLI runs it, in its own process; its peak resident memory is read
from the child's rusage. The model's gates are relaxed (a random tiny model does not name synthetic
products; this measures time and bytes, not quality).
Targets (#14): update <= 10 % of scratch time; delta <= 3 % of the full pack; price-only delta <= 1 %.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
from edge_search.core.images import encode_jpeg  # noqa: E402
from edge_search.files import atomic_write_text  # noqa: E402
from edge_search_export.sample_catalog import PRODUCTS, draw_product  # noqa: E402

RELAXED = ["--gate", "catalog_self_top1=0", "--gate", "catalog_views_top1=0", "--gate", "int8_top1_agreement=0"]
TARGETS = {"update_time_ratio": 0.10, "delta_bytes_ratio": 0.03, "price_only_delta_bytes_ratio": 0.01}


def product_image(i: int) -> np.ndarray:
    img = draw_product(i % len(PRODUCTS), size=160)
    rng = np.random.default_rng(i)
    tint = rng.integers(-60, 60, size=3)
    img = np.clip(img.astype(np.int16) + tint, 0, 255).astype(np.uint8)
    cv2.putText(img, f"{i:06d}", (20, 150), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def write_catalog(folder: Path, ids: list[int], prices: dict[int, float]) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "name", "price", "category"])
        for i in ids:
            image = folder / "images" / f"{i:06d}.jpg"
            if not image.exists():
                image.write_bytes(encode_jpeg(product_image(i), quality=85))
            w.writerow([f"p{i:06d}", image, f"Product {i}", f"{prices[i]:.2f}", PRODUCTS[i % len(PRODUCTS)][3]])
    return path


def run(*args, env=None) -> dict:
    """One `edge-search` call in a child process: wall seconds and the child's peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edge_search", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"edge-search {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far (KiB)
    return {"seconds": round(seconds, 2), "peak_rss_mb_so_far": round(max(peak, before) / 1024, 1),
            "stdout": proc.stdout.strip().splitlines()}


def members(archive: Path) -> dict[str, int]:
    """Bytes of each member of a pack (thumbnails together), largest first: what a device downloads."""
    import tarfile

    out: dict[str, int] = {}
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            key = "thumbs/*" if m.name.startswith("thumbs/") else m.name
            out[key] = out.get(key, 0) + m.size
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=int, default=10_000)
    ap.add_argument("--base", type=Path, default=REPO / "tests" / "data" / "tiny-bundle")
    ap.add_argument("--out", type=Path, default=Path("bench-out/update.json"))
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    args = ap.parse_args()
    n = args.products
    work = Path(args.workdir or tempfile.mkdtemp(prefix="edge-search-update-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    prices = {i: round(rng.uniform(0.5, 20), 2) for i in range(int(n * 1.02) + 1)}
    ids = list(range(n))
    t0 = time.perf_counter()
    scratch_csv = write_catalog(work / "scratch", ids, prices)
    gen_s = time.perf_counter() - t0

    removed = set(rng.sample(ids, n // 100))
    added = list(range(n, n + n // 100))
    repriced = rng.sample([i for i in ids if i not in removed], n // 10)
    new_prices = {**prices, **{i: round(prices[i] * 1.1, 2) for i in repriced}}
    update_csv = write_catalog(work / "update", [i for i in ids if i not in removed] + added, new_prices)
    price_csv = write_catalog(work / "price", ids, new_prices)

    cache = {"EDGE_SEARCH_CACHE_DIR": str(work / "cache")}
    figures: dict = {"products": n, "generate_catalog_s": round(gen_s, 1), "base": str(args.base),
                     "load_average_start": os.getloadavg()[0]}
    figures["scratch"] = run("export", "--catalog", scratch_csv, "--out", work / "B", "--base", args.base,
                             "--quiet", *RELAXED, env=cache)
    figures["update"] = run("export", "--catalog", update_csv, "--out", work / "B2", "--base", work / "B",
                            "--quiet", *RELAXED, env=cache)
    figures["price_only"] = run("export", "--catalog", price_csv, "--out", work / "B3", "--base", work / "B",
                                "--quiet", *RELAXED, env=cache)
    run("pack", work / "B2", "--out", work / "full.tar")
    run("pack", work / "B2", "--base", work / "B", "--out", work / "delta.tar")
    run("pack", work / "B3", "--base", work / "B", "--out", work / "price.tar")
    full, delta, price = ((work / f).stat().st_size for f in ("full.tar", "delta.tar", "price.tar"))
    b2 = json.loads((work / "B2" / "manifest.json").read_text())
    figures["changes"] = {k: len(v) for k, v in b2["lineage"]["changes"].items()}
    figures["bytes"] = {"full_pack": full, "delta_pack": delta, "price_only_delta_pack": price,
                        "index": (work / "B2" / "index.usearch").stat().st_size,
                        "products_jsonl": (work / "B2" / "products.jsonl").stat().st_size,
                        "manifest": (work / "B2" / "manifest.json").stat().st_size,
                        "delta_members": members(work / "delta.tar"),
                        "price_only_members": members(work / "price.tar")}
    figures["ratios"] = {"update_time_ratio": round(figures["update"]["seconds"] / figures["scratch"]["seconds"], 4),
                         "delta_bytes_ratio": round(delta / full, 4),
                         "price_only_delta_bytes_ratio": round(price / full, 4)}
    figures["targets"] = {k: {"target": v, "met": figures["ratios"][k] <= v} for k, v in TARGETS.items()}
    figures["load_average_end"] = os.getloadavg()[0]
    for k in ("scratch", "update", "price_only"):
        figures[k]["embedded_line"] = next((line for line in figures[k].pop("stdout") if "embedded" in line), "")

    print(f"{n} products; scratch build {figures['scratch']['seconds']} s, update {figures['update']['seconds']} s "
          f"({figures['ratios']['update_time_ratio']:.1%} of scratch; target <= 10 %)")
    print(f"  {figures['scratch']['embedded_line']} | update: {figures['update']['embedded_line']}")
    print(f"full pack {full / 1e6:.1f} MB; delta {delta / 1e6:.2f} MB ({figures['ratios']['delta_bytes_ratio']:.1%}, "
          f"target <= 3 %); price-only delta {price / 1e6:.2f} MB "
          f"({figures['ratios']['price_only_delta_bytes_ratio']:.1%}, target <= 1 %)")
    for label, key in (("delta", "delta_members"), ("price-only delta", "price_only_members")):
        print(f"  {label}: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in figures["bytes"][key].items()))
    print(f"peak child RSS {figures['update']['peak_rss_mb_so_far']} MB; load average "
          f"{figures['load_average_start']:.1f} -> {figures['load_average_end']:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(figures, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
