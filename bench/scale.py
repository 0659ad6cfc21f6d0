"""Scale-out (issue #15): the catalog build on the local engine against Ray on this machine, the driver's
memory as the catalog grows, and a million-vector index built from streamed shards. One run, JSON out.

    .venv/bin/python bench/scale.py --images 2000 --memory 10000 100000 --vectors 1000000 \
        --out bench-out/scale.json

1. **Throughput** (`throughput`): a generated catalog of `--images` products (bench/update.py's synthetic
   studio images) built on a fixed base's models (`export --base B --rebase`, the committed tiny bundle by
   default: its catalog encoder is its ONNX model) with an empty embedding cache, once per engine, each in
   its own process, interleaved `--rounds` times: wall seconds (Ray's start-up included, and given
   apart), images per second, and Ray / local as a ratio.
2. **Driver memory** (`driver_memory`): for each size in `--memory`, the whole `export --base B --rebase
   --engine ray` build as a user runs it (the workers read, embed and thumbnail; the driver streams their
   results into the embedding cache, then builds the catalog: its vectors on disk, the index from them
   chunk by chunk, the gates, the manifest) in its own process, which writes its own peak RSS (Ray's
   workers are other processes); what one more image costs the driver, beside what the index it built
   holds per image (its files' bytes), and step by step: the peak of the driver's RssAnon in each step of
   the build (bench/driver_phases.py: the Ray pass, reading the vectors back, the index choice, the index,
   the gates, ...). Beside it the index itself (`index_alone`): the same index built alone in a fresh
   process, whose memory (not its smaller file) is what "beyond the index" is measured against: what it
   holds once built, and its build's peak (usearch grows its arrays as vectors arrive), sampled as often
   as the driver is, which is what the driver's peak is compared with. Then the
   nightly build on that bundle (`--base` it, 1 % of the prices
   changed, 1 % new products), sampled the same way: what a base of that size costs the driver.
   `--base-width 512` runs it all on the tiny tower widened to a real model's embedding (the default base's
   64-d index file is a quarter of a 512-d one's).
   `--ray-pass` also measures the Ray embedding pass alone.
3. **Streamed index** (`streamed_index`): `--vectors` synthetic 512-d unit vectors (clustered, seeded),
   written as .npy shards, read back one at a time (memory-mapped) into one usearch HNSW index (f16, the
   library's default connectivity and expansion), in a fresh process: build seconds, peak RSS, file size;
   then search p50/p95 (one query at a time, 1 thread) and recall@10 against exact search on 200 queries.

2 cores cannot show Ray's scaling: both engines share the same two cores, so the ratio measures Ray's
overhead here; what grows with workers is said in docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
from bench.driver_phases import SAMPLE_S, status_kb  # noqa: E402
from bench.update import RELAXED, run, write_catalog  # noqa: E402
from edge_search.files import atomic_write_text  # noqa: E402

SHARD = 50_000  # vectors per shard file
MAKE_WIDE_BASE = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                  "from tests.make_tiny_bundle import build; build(Path(sys.argv[2]), embed_dim=int(sys.argv[3]))")
QUERIES = 200


def child(mode: str, *args) -> dict:
    """This script in a fresh process (`--child MODE ...`): its JSON result and its own peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", mode, *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench/scale.py --child {mode} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- 1. throughput ------------------------------------------------------------------------------------------
def throughput(images: int, base: Path, work: Path, rounds: int) -> dict:
    catalog = write_catalog(work / f"cat-{images}", list(range(images)), {i: 1.0 + i % 7 for i in range(images)})
    time.sleep(2.5)  # the stat cache remembers files only once their ctime is 2 s old: both engines alike
    runs: dict[str, list[dict]] = {"local": [], "ray": []}
    for r in range(rounds):
        for engine in ("local", "ray"):
            out, cache = work / f"b-{engine}-{r}", work / f"cache-{engine}-{r}"
            res = run("export", "--catalog", catalog, "--out", out, "--base", base, "--rebase", "--quiet",
                      "--engine", engine, *RELAXED, env={"EDGE_SEARCH_CACHE_DIR": str(cache)})
            res["images_per_second"] = round(images / res["seconds"], 1)
            runs[engine].append(res)
            shutil.rmtree(out)
            shutil.rmtree(cache)
    best = {e: min(v, key=lambda x: x["seconds"]) for e, v in runs.items()}
    start = child("ray-start")
    return {"images": images, "rounds": rounds,
            "local": [{k: v for k, v in x.items() if k != "stdout"} for x in runs["local"]],
            "ray": [{k: v for k, v in x.items() if k != "stdout"} for x in runs["ray"]],
            "ray_over_local_seconds": round(best["ray"]["seconds"] / best["local"]["seconds"], 3),
            "ray_start_and_stop_seconds": start["seconds"]}


def ray_start() -> dict:
    from edge_search_export.engine import EngineSettings, RayEngine

    t0 = time.perf_counter()
    with RayEngine(EngineSettings(name="ray")):
        pass
    return {"seconds": round(time.perf_counter() - t0, 2)}


# --- 2. the driver's memory -----------------------------------------------------------------------------------
def prefill(catalog: str, base: str, cache: str) -> dict:
    """The Ray embedding pass alone, as `export --base B --engine ray` runs it."""
    from dataclasses import replace

    from edge_search.core.catalog import read_catalog
    from edge_search_export.catalog_build import load_base, prefill_on_ray
    from edge_search_export.embed_cache import EmbeddingCache
    from edge_search_export.engine import EngineSettings, RayEngine

    b = load_base(Path(base))
    rows = read_catalog(catalog, read_images=False)
    before = peak_mb()
    t0 = time.perf_counter()
    with EmbeddingCache(cache) as c, RayEngine(EngineSettings(name="ray")) as engine, \
            tempfile.TemporaryDirectory() as thumbs:
        built, embedded, made = prefill_on_ray(engine, rows, replace(b.models, folder=b.bundle.root), c,
                                               thumbs_dir=Path(thumbs), known_thumbs=b.thumbs, progress=False)
        seconds = time.perf_counter() - t0
    return {"images": len(built.rows), "embedded": embedded, "thumbnails": made, "seconds": round(seconds, 1),
            "peak_rss_mb_before_pass": before, "peak_rss_mb": peak_mb()}


def index_alone(count: str, dim: str, dtype: str, exact: str, rescore: str) -> dict:
    """The index a catalog build of `count` images makes, built alone in this fresh process as the build
    makes it (VectorIndex.build_keyed, 8 192 rows at a time) from random unit vectors: what the index
    itself holds in memory (RssAnon growth; usearch's own count beside it). Its file is smaller: usearch
    grows its node arrays to the next power of two and allocates its vectors and links in arenas."""
    from edge_search.core.index import VectorIndex
    from edge_search_export.heap import return_large_blocks

    return_large_blocks()  # as the catalog build does
    n, d = int(count), int(dim)
    rng = np.random.default_rng(0)

    def chunks():
        for start in range(0, n, 8192):
            rows = min(8192, n - start)
            yield np.arange(start, start + rows), rng.standard_normal((rows, d)).astype(np.float32)

    before = _anon_mb()
    with _peak_anon() as peak:
        index = VectorIndex.build_keyed(chunks(), count=n, dim=d, dtype=dtype, exact=exact == "True",
                                        rescore=rescore == "True")
    return {"count": n, "anon_mb": round(_anon_mb() - before, 1), "peak_anon_mb": round(peak[0] - before, 1),
            "usearch_memory_mb": round(index.index.memory_usage / 2**20, 1)}


@contextlib.contextmanager
def _peak_anon():
    """[the highest RssAnon in MB] while the block runs, read as often as the build's driver is read."""
    peak, done = [_anon_mb()], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _anon_mb())
            time.sleep(SAMPLE_S)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()
        peak[0] = max(peak[0], _anon_mb())


def _anon_mb() -> float:
    return status_kb("RssAnon") / 1024


def index_bytes(bundle: Path) -> int:
    """The bundle's index files (the usearch file, f16 rescoring vectors, a delta segment). The index holds
    more in memory while it is built: see index_alone."""
    m = json.loads((bundle / "manifest.json").read_text())
    return sum((bundle / name).stat().st_size for name in m["files"]
               if name.endswith(".usearch") or name.endswith(".f16.npy"))


def run_sampled(*args, env=None, every: float = SAMPLE_S) -> dict:
    """One `edge-search` call in a child process, its memory read from /proc every `every` s: peak RSS (the
    kernel's high-water mark) and the peaks of its parts. RssAnon is the driver's own memory; RssShmem is
    Ray's object store (shared memory every Ray process maps: the driver reads its results from there
    without copying, and the pages it touched stay counted until the store reuses them); RssFile is
    mapped files (libraries, the index being saved), which the kernel can drop; ChildRssAnon the largest of
    its own child processes (the Ray pass runs in one, export/ray_pass.py), Ray's excluded. The child runs under
    bench/driver_phases.py, which also gives RssAnon's peak in each step of the build."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        phases = os.path.join(tmp, "phases.json")
        proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "driver_phases.py"), phases, *map(str, args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})})
        peaks, out, err = _sample(proc, every)
        if proc.returncode != 0:
            raise SystemExit(f"edge-search {' '.join(map(str, args))} failed:\n{err[-2000:]}")
        with open(phases) as f:
            sampled = json.load(f)
    return {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": sampled["peak_rss_mb"],
            **{f"peak_{k.lower()}_mb": round(v / 1024, 1) for k, v in peaks.items() if k != "VmHWM"},
            "phases_anon_mb": sampled["phases_anon_mb"], "phases_file_mb": sampled["phases_file_mb"]}


def _sample(proc: subprocess.Popen, every: float) -> tuple[dict, str, str]:
    """The peaks of a running child's memory parts, read from /proc until it exits; and its output."""
    peaks = {"VmHWM": 0, "RssAnon": 0, "RssFile": 0, "RssShmem": 0, "ChildRssAnon": 0}
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in peaks:
                        peaks[key] = max(peaks[key], int(value.split()[0]))
            # the build's own child processes (the Ray pass runs in one: export/ray_pass.py), not Ray's
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                for pid in f.read().split():
                    peaks["ChildRssAnon"] = max(peaks["ChildRssAnon"], status_kb("RssAnon", pid))
        except (OSError, ValueError):
            pass
        time.sleep(every)
    out, err = proc.communicate()
    return peaks, out, err


def driver_memory(sizes: list[int], base: Path, work: Path, pass_alone: bool) -> dict:
    out = {}
    for n in sizes:
        catalog = write_catalog(work / f"mem-{n}", list(range(n)), {i: 1.0 for i in range(n)},
                                images=work / "mem-images")
        res = {}
        if pass_alone:
            res["ray_pass"] = child("prefill", catalog, base, work / f"mem-cache-{n}")
            res["ray_pass"]["images_per_second"] = round(n / res["ray_pass"]["seconds"], 1)
            shutil.rmtree(work / f"mem-cache-{n}")
        # the whole build, as a user runs it: the Ray pass, then the catalog build and its index on the driver
        bundle = work / f"mem-bundle-{n}"
        build = run_sampled("export", "--catalog", catalog, "--out", bundle, "--base", base, "--rebase", "--quiet",
                            "--engine", "ray", *RELAXED, env={"EDGE_SEARCH_CACHE_DIR": str(work / f"mem-cache-{n}")})
        build["images_per_second"] = round(n / build["seconds"], 1)
        build["index_mb"] = round(index_bytes(bundle) / 2**20, 1)
        m = json.loads((bundle / "manifest.json").read_text())
        build["index"] = {k: m["index"].get(k) for k in ("count", "dtype", "exact")}
        res["build"] = build
        res["index_alone"] = child("index-alone", n, m["model"]["embed_dim"], m["index"]["dtype"],
                                   bool(m["index"]["exact"]), m["index"].get("rescore_file") is not None)
        # the nightly build on it: 1 % of the prices changed and 1 % new products (the new images embedded on
        # Ray, the rest from the cache), its layout matched against the base's build record
        changed = list(range(n)) + list(range(n, n + n // 100))
        prices = {i: (2.0 if i % 100 == 7 else 1.0) for i in changed}
        nightly_catalog = write_catalog(work / f"mem-nightly-{n}", changed, prices, images=work / "mem-images")
        nightly = run_sampled("export", "--catalog", nightly_catalog, "--out", work / f"mem-nightly-bundle-{n}",
                              "--base", bundle, "--quiet", "--engine", "ray", *RELAXED,
                              env={"EDGE_SEARCH_CACHE_DIR": str(work / f"mem-cache-{n}")})
        nm = json.loads((work / f"mem-nightly-bundle-{n}" / "manifest.json").read_text())
        nightly["segmented"] = nm["index"].get("delta") is not None
        nightly["changes"] = nm["lineage"]["change_counts"]
        res["nightly"] = nightly
        out[str(n)] = res
        shutil.rmtree(work / f"mem-cache-{n}")
        shutil.rmtree(bundle)
        shutil.rmtree(work / f"mem-nightly-bundle-{n}")
    if len(sizes) > 1:
        lo, hi = str(min(sizes)), str(max(sizes))
        per = 1024 / (int(hi) - int(lo))
        for step in ("build", "nightly"):
            b_lo, b_hi = out[lo][step], out[hi][step]
            for part in ("rss", "rssanon", "rssshmem", "rssfile", "childrssanon"):
                out[f"{step}_{part}_kb_per_image"] = round((b_hi[f"peak_{part}_mb"] - b_lo[f"peak_{part}_mb"]) * per, 2)
            # each step's RssAnon peak: what one more image costs the driver while that step runs
            out[f"{step}_phases_anon_kb_per_image"] = {
                p: round((b_hi["phases_anon_mb"][p] - b_lo["phases_anon_mb"][p]) * per, 2)
                for p in b_hi["phases_anon_mb"] if p in b_lo["phases_anon_mb"]}
            out[f"{step}_phases_file_kb_per_image"] = {
                p: round((b_hi["phases_file_mb"][p] - b_lo["phases_file_mb"][p]) * per, 2)
                for p in b_hi["phases_file_mb"] if p in b_lo["phases_file_mb"]}
        out["index_kb_per_image"] = round((out[hi]["build"]["index_mb"] - out[lo]["build"]["index_mb"]) * per, 2)
        # the same index built alone: what the index itself holds in memory once built, and at its build's
        # peak (usearch grows its arrays as vectors arrive): the driver's peak is compared with the latter
        out["index_in_memory_kb_per_image"] = round(
            (out[hi]["index_alone"]["anon_mb"] - out[lo]["index_alone"]["anon_mb"]) * per, 2)
        out["index_build_peak_kb_per_image"] = round(
            (out[hi]["index_alone"]["peak_anon_mb"] - out[lo]["index_alone"]["peak_anon_mb"]) * per, 2)
        out["index_usearch_memory_kb_per_image"] = round(
            (out[hi]["index_alone"]["usearch_memory_mb"] - out[lo]["index_alone"]["usearch_memory_mb"]) * per, 2)
        if pass_alone:
            out["ray_pass_kb_per_image"] = round(
                (out[hi]["ray_pass"]["peak_rss_mb"] - out[lo]["ray_pass"]["peak_rss_mb"]) * per, 2)
    return out


# --- 3. a million vectors from streamed shards -----------------------------------------------------------
def make_shards(count: int, folder: Path, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    """Clustered unit vectors (as image embeddings are), written shard by shard; and QUERIES held-out
    queries near them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((count // 20 + 1, 512)).astype(np.float32)
    paths = []
    for start in range(0, count, SHARD):
        n = min(SHARD, count - start)
        v = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, 512)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        paths.append(folder / f"shard-{start // SHARD:04d}.npy")
        np.save(paths[-1], v.astype(np.float32))
    q = centres[rng.integers(0, len(centres), QUERIES)] + 0.6 * rng.standard_normal((QUERIES, 512)).astype(np.float32)
    return paths, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def streamed_index(shards: list[str], out: str, threads: int) -> dict:
    from usearch.index import Index

    before = peak_mb()
    t0 = time.perf_counter()
    index = Index(ndim=512, metric="cos", dtype="f16")
    key = 0
    for path in shards:
        v = np.load(path, mmap_mode="r")
        index.add(np.arange(key, key + len(v), dtype=np.uint64), np.ascontiguousarray(v), threads=threads)
        key += len(v)
    index.save(out)
    return {"vectors": key, "build_seconds": round(time.perf_counter() - t0, 1), "threads": threads,
            "peak_rss_mb_before_build": before, "peak_rss_mb": peak_mb(), "file_mb": round(os.path.getsize(out) / 2**20, 1),
            "connectivity": index.connectivity, "expansion_add": index.expansion_add,
            "expansion_search": index.expansion_search}


def search_index(path: str, shards: list[str], queries: str) -> dict:
    from usearch.index import Index

    index = Index.restore(path, view=True)
    q = np.load(queries)
    ms, found = [], []
    for row in q:
        t0 = time.perf_counter()
        m = index.search(row, 10, threads=1)
        ms.append((time.perf_counter() - t0) * 1000)
        found.append(np.asarray(m.keys))
    # exact top-10 by cosine, shard by shard (never the whole matrix at once)
    best_s = np.full((len(q), 10), -np.inf, np.float32)
    best_k = np.zeros((len(q), 10), np.int64)
    key = 0
    for path in shards:
        v = np.load(path, mmap_mode="r")
        s = q @ np.asarray(v).T
        top = np.argpartition(-s, 10, axis=1)[:, :10]
        all_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        all_k = np.concatenate([best_k, top + key], 1)
        pick = np.argsort(-all_s, 1)[:, :10]
        best_s, best_k = np.take_along_axis(all_s, pick, 1), np.take_along_axis(all_k, pick, 1)
        key += len(v)
    recall = float(np.mean([len(set(f.tolist()) & set(e.tolist())) / 10 for f, e in zip(found, best_k)]))
    return {"queries": len(q), "search_ms_p50": round(float(np.percentile(ms, 50)), 3),
            "search_ms_p95": round(float(np.percentile(ms, 95)), 3), "recall_at_10_vs_exact": round(recall, 4)}


def million(count: int, work: Path, threads: int) -> dict:
    folder = work / "shards"
    folder.mkdir()
    t0 = time.perf_counter()
    shards, queries = make_shards(count, folder)
    np.save(folder / "queries.npy", queries)
    made = round(time.perf_counter() - t0, 1)
    build = child("index", str(work / "index.usearch"), threads, *shards)
    search = child("search", str(work / "index.usearch"), str(folder / "queries.npy"), *shards)
    build["build_wall_seconds"], search["search_wall_seconds"] = build.pop("wall_seconds"), search.pop("wall_seconds")
    return {"shard_vectors": SHARD, "shards": len(shards), "shard_mb": round(SHARD * 512 * 4 / 2**20, 1),
            "generate_seconds": made, **build, **search}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        mode, args = sys.argv[2], sys.argv[3:]
        if mode == "ray-start":
            res = ray_start()
        elif mode == "prefill":
            res = prefill(*args)
        elif mode == "index-alone":
            res = index_alone(*args)
        elif mode == "index":
            res = streamed_index(args[2:], args[0], int(args[1]))
        else:
            res = search_index(args[0], args[2:], args[1])
        print(json.dumps({**res, "peak_rss_mb": res.get("peak_rss_mb", peak_mb())}))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000, help="catalog images for the local vs Ray throughput")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved builds per engine")
    ap.add_argument("--memory", type=int, nargs="*", default=[10_000, 100_000], help="catalog sizes for the driver")
    ap.add_argument("--ray-pass", action="store_true", help="also measure the Ray embedding pass alone")
    ap.add_argument("--vectors", type=int, default=1_000_000, help="vectors of the streamed index (0: skip)")
    ap.add_argument("--index-threads", type=int, default=2, help="threads adding to the streamed index")
    ap.add_argument("--base", type=Path, default=REPO / "tests" / "data" / "tiny-bundle")
    ap.add_argument("--base-width", type=int, default=None,
                    help="instead of --base, the tiny bundle rebuilt with this embedding width (512: a ViT-B-32's)")
    ap.add_argument("--out", type=Path, default=Path("bench-out/scale.json"))
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    a = ap.parse_args()
    if a.base_width is not None and a.base_width < 1:
        ap.error(f"--base-width must be 1 or more, got {a.base_width}")
    import ray

    work = Path(a.workdir or tempfile.mkdtemp(prefix="scale-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.base_width is not None:
        # the tiny model's 64-d index is 0.27 KB per image; what a real model's width costs the driver
        # beside its index is measured on the same tiny tower with a wider projection. Built in a child:
        # a process's peak RSS survives exec, so this one must not load torch before it starts the builds
        a.base = work / f"base-{a.base_width}d"
        shutil.rmtree(a.base, ignore_errors=True)
        made = subprocess.run([sys.executable, "-c", MAKE_WIDE_BASE, str(REPO), str(a.base), str(a.base_width)],
                              capture_output=True, text=True)
        if made.returncode != 0:
            raise SystemExit(f"bench/scale.py: the {a.base_width}-d base could not be made "
                             f"(it needs the [export] extra):\n{made.stderr[-2000:]}")
    report = {"command": " ".join(["bench/scale.py"] + sys.argv[1:]), "cpus": os.cpu_count(),
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "ray": ray.__version__,
              "python": platform.python_version(), "base": str(a.base),
              "embed_dim": json.loads((a.base / "manifest.json").read_text())["model"]["embed_dim"]}
    try:
        if a.images:
            report["throughput"] = throughput(a.images, a.base, work, a.rounds)
            print(json.dumps({"throughput": report["throughput"]}, indent=1), flush=True)
        if a.memory:
            report["driver_memory"] = driver_memory(a.memory, a.base, work, a.ray_pass)
            print(json.dumps({"driver_memory": report["driver_memory"]}, indent=1), flush=True)
        if a.vectors:
            report["streamed_index"] = million(a.vectors, work, a.index_threads)
            print(json.dumps({"streamed_index": report["streamed_index"]}, indent=1), flush=True)
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
