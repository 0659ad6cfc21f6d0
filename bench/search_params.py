"""HNSW search settings chosen by measurement (issue #16): at N synthetic 512-d vectors, each
expansion_search in turn, search latency at 1 thread and recall@10 against exact search.

    .venv/bin/python bench/search_params.py --vectors 1000000 --out bench-out/search-params.json
        [--dtype f16] [--rescore] [--connectivity 16] [--expansions 64 128 256 512] [--keep DIR]

The vectors are bench/scale.py's clustered unit vectors (written as shards and
streamed into the index, so the build never holds them all as float32); the
queries are held out, near the same centres. The index is built once (all
cores; --keep DIR keeps it and its shards, and a later run with the same DIR
and settings searches it again without building); every expansion is then
timed on the same queries, one query at a time, 1 thread, the expansions taking
turns query by query so the machine's load drifts hit them alike. Exact top-10
is found shard by shard. Chosen: the smallest expansion whose recall@10 reaches
TARGET_RECALL; the issue's target is that its p50 is <= TARGET_P50_MS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import numpy as np  # noqa: E402
from usearch.index import Index  # noqa: E402

from bench.scale import make_shards  # noqa: E402
from edge_search.files import atomic_write_text  # noqa: E402

TARGET_RECALL = 0.99
TARGET_P50_MS = 1.0
K = 10


def exact_top(shards: list[Path], queries: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-k keys by cosine (unit vectors), shard by shard."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_k = np.zeros((len(queries), k), np.int64)
    key = 0
    for path in shards:
        v = np.load(path, mmap_mode="r")
        s = queries @ np.asarray(v).T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        all_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        all_k = np.concatenate([best_k, top + key], 1)
        pick = np.argsort(-all_s, 1)[:, :k]
        best_s, best_k = np.take_along_axis(all_s, pick, 1), np.take_along_axis(all_k, pick, 1)
        key += len(v)
    return best_k


def build(shards: list[Path], out: Path, dtype: str, connectivity: int, expansion_add: int) -> dict:
    t0 = time.perf_counter()
    index = Index(ndim=512, metric="cos", dtype=dtype, connectivity=connectivity, expansion_add=expansion_add)
    key = 0
    for i, path in enumerate(shards):
        v = np.load(path, mmap_mode="r")
        index.add(np.arange(key, key + len(v), dtype=np.uint64), np.ascontiguousarray(v), threads=os.cpu_count() or 1)
        key += len(v)
        print(f"  built {key:,} vectors ({time.perf_counter() - t0:.0f} s)", end="\r", flush=True)
    print()
    index.save(str(out))
    return {"build_seconds": round(time.perf_counter() - t0, 1), "file_mb": round(out.stat().st_size / 2**20, 1)}


def sweep(index: Index, queries: np.ndarray, exact: np.ndarray, expansions: list[int],
          shards: list[Path] | None = None, factor: int = 4) -> dict[int, dict]:
    """Each expansion's latency and recall@10; with `shards`, HNSW fetches factor x 10 candidates and they
    are rescored exactly from the memory-mapped vectors (what an i8 index with f16 rescoring does)."""
    rows = [np.load(p, mmap_mode="r") for p in shards] if shards else None
    per = len(rows[0]) if rows else 0

    def one(q: np.ndarray) -> np.ndarray:
        m = index.search(q, K * factor if rows else K, threads=1)
        keys = np.asarray(m.keys)
        if rows:
            cand = np.stack([rows[k // per][k % per] for k in keys.tolist()])
            keys = keys[np.argsort(-(cand @ q), kind="stable")[:K]]
        return keys

    ms: dict[int, list[float]] = {e: [] for e in expansions}
    found: dict[int, list[np.ndarray]] = {e: [] for e in expansions}
    for e in expansions:  # warm-up: the graph's pages in memory for every expansion
        index.expansion_search = e
        for q in queries[:20]:
            one(q)
    for q in queries:
        for e in expansions:
            index.expansion_search = e
            t0 = time.perf_counter()
            keys = one(q)
            ms[e].append((time.perf_counter() - t0) * 1e3)
            found[e].append(keys)
    out = {}
    for e in expansions:
        recall = float(np.mean([len(set(f.tolist()) & set(x.tolist())) / K for f, x in zip(found[e], exact)]))
        out[e] = {"search_ms_p50": round(float(np.percentile(ms[e], 50)), 3),
                  "search_ms_p95": round(float(np.percentile(ms[e], 95)), 3), "recall_at_10": round(recall, 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--dtype", default="f16", choices=("f16", "i8", "f32"))
    ap.add_argument("--connectivity", type=int, default=16)
    ap.add_argument("--expansion-add", type=int, default=128)
    ap.add_argument("--expansions", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--rescore", action="store_true",
                    help="fetch 4 x 10 candidates and rescore them exactly (for an i8 index, as i8+f16 rescoring)")
    ap.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the shards and the index here")
    ap.add_argument("--out", type=Path, default=Path("bench-out/search-params.json"))
    args = ap.parse_args(argv)
    import tempfile

    tmp = None
    work = args.keep
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="search-params-")
        work = Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    shards_dir = work / f"shards-{args.vectors}"
    if not (shards_dir / "queries.npy").exists():
        shards_dir.mkdir(exist_ok=True)
        print(f"writing {args.vectors:,} vectors ...", flush=True)
        shards, queries = make_shards(args.vectors, shards_dir)
        np.save(shards_dir / "queries.npy", queries)
    shards = sorted(shards_dir.glob("shard-*.npy"))
    queries = np.load(shards_dir / "queries.npy")
    path = work / f"index-{args.vectors}-{args.dtype}-c{args.connectivity}-a{args.expansion_add}.usearch"
    built = {"build_seconds": None, "file_mb": round(path.stat().st_size / 2**20, 1)} if path.exists() else \
        build(shards, path, args.dtype, args.connectivity, args.expansion_add)
    index = Index.restore(str(path), view=True)
    print(f"exact top-{K} of {len(queries)} queries ...", flush=True)
    exact = exact_top(shards, queries)
    load = os.getloadavg()
    results = sweep(index, queries, exact, args.expansions, shards if args.rescore else None)
    chosen = next((e for e in args.expansions if results[e]["recall_at_10"] >= TARGET_RECALL), None)
    report = {"vectors": args.vectors, "dtype": args.dtype, "rescored": args.rescore, "connectivity": args.connectivity,
              "expansion_add": args.expansion_add, "queries": len(queries), "threads": 1, **built,
              "load_average": [round(x, 2) for x in load], "expansions": {str(e): r for e, r in results.items()},
              "target": {"recall_at_10": TARGET_RECALL, "p50_ms": TARGET_P50_MS},
              "chosen_expansion_search": chosen,
              "meets_target": chosen is not None and results[chosen]["search_ms_p50"] <= TARGET_P50_MS}
    print(f"{args.vectors:,} x 512 {args.dtype}{' + exact rescoring of 4 x 10' if args.rescore else ''}, connectivity {args.connectivity}, expansion_add "
          f"{args.expansion_add}: file {built['file_mb']} MB, built in {built['build_seconds']} s; load {load[0]:.2f}")
    print(f"{'expansion':>10} {'p50 ms':>8} {'p95 ms':>8} {'recall@10':>10}")
    for e in args.expansions:
        r = results[e]
        print(f"{e:>10} {r['search_ms_p50']:>8.3f} {r['search_ms_p95']:>8.3f} {r['recall_at_10']:>10.4f}")
    print(f"chosen: {chosen} (smallest with recall@10 >= {TARGET_RECALL}); target p50 <= {TARGET_P50_MS} ms: "
          f"{'met' if report['meets_target'] else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
