"""Catalog updates (issue #14): a catalog build from scratch against an update on a base, and what devices
download: a full pack against a delta pack. One run, figures as ratios.

    .venv/bin/python bench/update.py --products 10000 --out bench-out/update.json [--base tests/data/tiny-bundle]

A generated catalog of N products (one synthetic studio image each: the sample products' drawings with a
per-product colour, label and number) is built on a fixed base's models (`export --base`, the committed
tiny bundle by default, whose catalog encoder is its ONNX model: no torch), twice:
- **scratch**: the catalog build with an empty embedding cache;
- **update**: 1 % of products added, 1 % removed and 10 % repriced, built on the scratch bundle with the
  cache the scratch build filled; and a **price-only** update (10 % repriced). The catalogs share one
  folder of image files, as a retailer's nightly catalogs do: the scratch build records each file's sha256
  under its stat, and the update reads only the files written since (the 1 % added).
The update is built as devices get it (the base's index file plus a delta segment and removed keys) and
again re-based (`--rebase`: one fresh segment, as a scratch build of the same catalog would index it).
Then `pack` of the updated bundle whole and as a delta on the scratch bundle, and of the price-only update
as a delta. Each build runs as the CLI runs it, in its own process; its own peak resident memory is
written by that process as it exits. The model's gates are relaxed (a random tiny model does not name
synthetic products; this measures time and bytes, not quality).
Search: the same query set (catalog images, the added ones among them) through the delta bundle and the
re-based one: top-10 products equal, scores within 1e-3, and p95 latency of each, interleaved, as a
ratio. The re-basing threshold: p95 of the scratch bundle's own index with synthetic delta segments of
1 to 20 % of it (half as many removed keys), against that index alone.
Targets (#14): update <= 10 % of scratch time; delta <= 3 % of the full pack; price-only delta <= 1 %;
search p95 with the delta <= 1.2 x the re-based index's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
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
TARGETS = {"update_time_ratio": 0.10, "delta_bytes_ratio": 0.03, "price_only_delta_bytes_ratio": 0.01,
           "search_p95_ratio": 1.2}
SHARES = (0.01, 0.05, 0.10, 0.20)  # synthetic delta sizes, as shares of the base segment
# the child reports its own peak RSS as it exits (RUSAGE_CHILDREN would give the largest child so far)
CHILD = ("import atexit, resource, runpy, sys; atexit.register(lambda: sys.stderr.write("
         "'\\n__peak_rss_kb %d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)); "
         "sys.argv = ['edge-search'] + sys.argv[1:]; runpy.run_module('edge_search', run_name='__main__')")


def product_image(i: int) -> np.ndarray:
    img = draw_product(i % len(PRODUCTS), size=160)
    rng = np.random.default_rng(i)
    tint = rng.integers(-60, 60, size=3)
    img = np.clip(img.astype(np.int16) + tint, 0, 255).astype(np.uint8)
    cv2.putText(img, f"{i:06d}", (20, 150), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def write_catalog(folder: Path, ids: list[int], prices: dict[int, float], images: Path | None = None) -> Path:
    """FOLDER/catalog.csv of these products, their images in `images` (default FOLDER/images), written
    once: catalogs sharing a folder share the image files, as a retailer's nightly catalogs do."""
    images = images or folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "name", "price", "category"])
        for i in ids:
            image = images / f"{i:06d}.jpg"
            if not image.exists():
                image.write_bytes(encode_jpeg(product_image(i), quality=85))
            w.writerow([f"p{i:06d}", image, f"Product {i}", f"{prices[i]:.2f}", PRODUCTS[i % len(PRODUCTS)][3]])
    return path


def run(*args, env=None) -> dict:
    """One `edge-search` call in a child process: wall seconds and that process's own peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"edge-search {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    peak = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("__peak_rss_kb ")]
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak[-1] / 1024, 1) if peak else None,
            "stdout": proc.stdout.strip().splitlines()}


def percentiles(ms: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p95_ms": round(float(np.percentile(ms, 95)), 4)}


def same_up_to_ties(ha, hb, tol: float = 1e-5) -> bool:
    """Two rankings agree but for the order of equal scores: the same scores rank by rank, and the same
    products above the last (boundary) score, where equal scores may be cut at k differently."""
    if len(ha) != len(hb) or any(abs(x.score - y.score) > tol for x, y in zip(ha, hb)):
        return False
    if not ha:
        return True
    cut = min(ha[-1].score, hb[-1].score) + tol
    return {h.id for h in ha if h.score > cut} == {h.id for h in hb if h.score > cut}


def compare_search(delta_bundle: Path, rebased_bundle: Path, images: list[Path], rounds: int = 3) -> dict:
    """The same queries through both bundles: top-10 product ids and scores, and interleaved latencies of
    the search alone (the query vectors are embedded once)."""
    from edge_search.core.images import load_image
    from edge_search.core.preprocess import preprocess_batch
    from edge_search.core.query import RANK_ALL
    from edge_search.core.search import Searcher

    a, b = Searcher.from_bundle(delta_bundle, threads=1), Searcher.from_bundle(rebased_bundle, threads=1)
    vecs = np.concatenate([a.encoder.embed(preprocess_batch([load_image(p) for p in images[i:i + 64]],
                                                            a.preprocess_cfg)) for i in range(0, len(images), 64)])
    same_ids = same_but_ties = 0
    worst = 0.0
    for v in vecs:
        ha, _ = a.search_vector(v, k=10, min_score=RANK_ALL)
        hb, _ = b.search_vector(v, k=10, min_score=RANK_ALL)
        same_ids += [h.id for h in ha] == [h.id for h in hb]
        same_but_ties += same_up_to_ties(ha, hb)
        worst = max([worst] + [abs(x.score - y.score) for x, y in zip(ha, hb)])
    times: dict[str, list[float]] = {"delta": [], "rebased": []}
    for _ in range(rounds):
        for v in vecs:
            for name, s in (("delta", a), ("rebased", b)):
                t0 = time.perf_counter()
                s.search_vector(v, k=10, min_score=RANK_ALL)
                times[name].append((time.perf_counter() - t0) * 1e3)
    out = {"queries": len(vecs), "same_top10_ids": round(same_ids / len(vecs), 4),
           "same_top10_up_to_ties": round(same_but_ties / len(vecs), 4),
           "max_score_difference": round(worst, 6), "delta": percentiles(times["delta"]),
           "rebased": percentiles(times["rebased"])}
    out["p95_ratio"] = round(out["delta"]["p95_ms"] / out["rebased"]["p95_ms"], 3)
    return out


def share_sweep(bundle: Path, queries: int = 500, seed: int = 0) -> dict:
    """p95 of a search of this bundle's index (k = 10) with synthetic delta segments of each share of it
    (vectors near random catalog vectors; half as many removed keys), against the index alone."""
    from edge_search.core.bundle import Bundle
    from edge_search.core.index import SegmentedIndex, VectorIndex, open_index

    b = Bundle.open(bundle, verify=False)
    info = b.manifest.index
    base = open_index(info, b.path)
    n = len(base)
    rng = np.random.default_rng(seed)
    own = np.asarray(base.index.get(np.arange(n, dtype=np.uint64)), dtype=np.float32)
    q = own[rng.choice(n, queries)] + 0.05 * rng.standard_normal((queries, own.shape[1])).astype(np.float32)
    indexes = {"none": base}
    for share in SHARES:
        m = int(n * share)
        added = own[rng.choice(n, m)] + 0.05 * rng.standard_normal((m, own.shape[1])).astype(np.float32)
        delta = VectorIndex.build(added, dtype=info.dtype, exact=info.exact, rescore=info.rescore_file is not None,
                                  first_key=n)
        removed = np.sort(rng.choice(n, m // 2, replace=False)).astype(np.int64)
        indexes[f"{share:.0%}"] = SegmentedIndex(base=base, delta=delta, removed=removed)
    times: dict[str, list[float]] = {k: [] for k in indexes}
    for v in q:
        for name, index in indexes.items():
            t0 = time.perf_counter()
            index.search(v[None], 10)
            times[name].append((time.perf_counter() - t0) * 1e3)
    out = {k: percentiles(v) for k, v in times.items()}
    for k in SHARES:
        out[f"{k:.0%}"]["p95_ratio"] = round(out[f"{k:.0%}"]["p95_ms"] / out["none"]["p95_ms"], 3)
    return {"vectors": n, "exact": info.exact, "dtype": info.dtype, "queries": queries, "by_share": out}


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
    scratch_csv = write_catalog(work / "scratch", ids, prices, work / "images")
    gen_s = time.perf_counter() - t0

    removed = set(rng.sample(ids, n // 100))
    added = list(range(n, n + n // 100))
    repriced = rng.sample([i for i in ids if i not in removed], n // 10)
    new_prices = {**prices, **{i: round(prices[i] * 1.1, 2) for i in repriced}}
    update_csv = write_catalog(work / "update", [i for i in ids if i not in removed] + added, new_prices,
                               work / "images")
    price_csv = write_catalog(work / "price", ids, new_prices, work / "images")

    # a retailer's image files predate the build that first hashes them; the cache vouches only for files
    # written safely before that build began (embed_cache.STAT_MARGIN_NS)
    time.sleep(2.5)
    cache = {"EDGE_SEARCH_CACHE_DIR": str(work / "cache")}
    figures: dict = {"products": n, "generate_catalog_s": round(gen_s, 1), "base": str(args.base),
                     "load_average_start": os.getloadavg()[0]}
    figures["scratch"] = run("export", "--catalog", scratch_csv, "--out", work / "B", "--base", args.base,
                             "--quiet", *RELAXED, env=cache)
    figures["update"] = run("export", "--catalog", update_csv, "--out", work / "B2", "--base", work / "B",
                            "--quiet", *RELAXED, env=cache)
    figures["price_only"] = run("export", "--catalog", price_csv, "--out", work / "B3", "--base", work / "B",
                                "--quiet", *RELAXED, env=cache)
    figures["rebased"] = run("export", "--catalog", update_csv, "--out", work / "B2r", "--base", work / "B",
                             "--rebase", "--quiet", *RELAXED, env=cache)
    sample = sorted(rng.sample([i for i in ids if i not in removed], min(300, n // 2))) + added[:100]
    figures["search"] = compare_search(work / "B2", work / "B2r",
                                       [work / "images" / f"{i:06d}.jpg"
                                        for i in sample])
    figures["rebase_sweep"] = share_sweep(work / "B")
    run("pack", work / "B2", "--out", work / "full.tar")
    run("pack", work / "B2", "--base", work / "B", "--out", work / "delta.tar")
    run("pack", work / "B3", "--base", work / "B", "--out", work / "price.tar")
    full, delta, price = ((work / f).stat().st_size for f in ("full.tar", "delta.tar", "price.tar"))
    b2 = json.loads((work / "B2" / "manifest.json").read_text())
    figures["changes"] = b2["lineage"]["change_counts"]
    figures["bytes"] = {"full_pack": full, "delta_pack": delta, "price_only_delta_pack": price,
                        "index": (work / "B2" / "index.usearch").stat().st_size,
                        "products_jsonl": (work / "B2" / "products.jsonl").stat().st_size,
                        "manifest": (work / "B2" / "manifest.json").stat().st_size,
                        "delta_members": members(work / "delta.tar"),
                        "price_only_members": members(work / "price.tar")}
    figures["ratios"] = {"update_time_ratio": round(figures["update"]["seconds"] / figures["scratch"]["seconds"], 4),
                         "delta_bytes_ratio": round(delta / full, 4),
                         "price_only_delta_bytes_ratio": round(price / full, 4),
                         "search_p95_ratio": figures["search"]["p95_ratio"]}
    figures["index_delta"] = b2["index"].get("delta")
    figures["targets"] = {k: {"target": v, "met": figures["ratios"][k] <= v} for k, v in TARGETS.items()}
    figures["load_average_end"] = os.getloadavg()[0]
    for k in ("scratch", "update", "price_only", "rebased"):
        figures[k]["embedded_line"] = next((line for line in figures[k].pop("stdout") if "embedded" in line), "")

    print(f"{n} products; scratch build {figures['scratch']['seconds']} s, update {figures['update']['seconds']} s "
          f"({figures['ratios']['update_time_ratio']:.1%} of scratch; target <= 10 %)")
    print(f"  {figures['scratch']['embedded_line']} | update: {figures['update']['embedded_line']}")
    print(f"full pack {full / 1e6:.1f} MB; delta {delta / 1e6:.2f} MB ({figures['ratios']['delta_bytes_ratio']:.1%}, "
          f"target <= 3 %); price-only delta {price / 1e6:.2f} MB "
          f"({figures['ratios']['price_only_delta_bytes_ratio']:.1%}, target <= 1 %)")
    for label, key in (("delta", "delta_members"), ("price-only delta", "price_only_members")):
        print(f"  {label}: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in figures["bytes"][key].items()))
    srch = figures["search"]
    print(f"search, delta segment vs re-based ({srch['queries']} queries): same top-10 ids "
          f"{srch['same_top10_ids']:.1%} ({srch['same_top10_up_to_ties']:.1%} but for the order of equal scores), "
          f"max score difference {srch['max_score_difference']:.2g}; p95 "
          f"{srch['delta']['p95_ms']:.3f} vs {srch['rebased']['p95_ms']:.3f} ms ({srch['p95_ratio']:.2f}x, target <= 1.2x)")
    sweep = figures["rebase_sweep"]
    print(f"re-basing: p95 of the {sweep['vectors']}-vector index ({'exact' if sweep['exact'] else 'HNSW'}) with a "
          f"delta of " + ", ".join(f"{k} {v['p95_ratio']:.2f}x" for k, v in sweep["by_share"].items() if k != "none"))
    print("peak RSS of each build: " + ", ".join(f"{k} {figures[k]['peak_rss_mb']} MB"
                                                 for k in ("scratch", "update", "price_only", "rebased"))
          + f"; load average {figures['load_average_start']:.1f} -> {figures['load_average_end']:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(figures, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
