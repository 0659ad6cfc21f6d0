"""Start-up of the device runtime (issue #16): a fresh process, from nothing to the first answer.

    .venv/bin/python bench/startup.py --bundle BUNDLE [--sizes 1000 100000] [--runs 15] [--out bench-out/startup.json]

The kiosk restarts after every power cut, so what counts is a new process:
each run starts a fresh interpreter (this file with --child) that times, in
order,
  imports      the modules the kiosk's answer path loads (edge_search with
               onnxruntime first, the searcher, the bundle, OpenCV, numpy);
               interpreter start-up itself is reported apart ("python")
  manifest     Bundle.open without checksums, as the kiosk opens an installed
               bundle (install verified it)
  products     the product table (products.jsonl)
  searcher     Searcher.from_bundle on that bundle: its check (below), the
               onnxruntime session, the index opened as a memory map
  first_answer search_image on a 640x480 JPEG (decode, preprocess, embed,
               search): the first inference of a new session
"open -> first answer" is manifest + products + searcher + first_answer.
Targets: imports <= 300 ms, open -> first answer <= 150 ms (p50 of --runs).

Three ways to start, each its own row:
  restart     what the kiosk and `search` do on every start but the first: the
              bundle's files are unchanged since a full check passed on them
              (core/checked.py), so none is hashed again
  first       the first start after an install: every file hashed, every
              product line parsed against the key file, every thumbnail hashed
              (--first-runs fresh processes, each with an empty cache folder)
  unchecked   no check at all (Searcher.from_bundle(verify=False)), for scale

The catalog sizes are made from BUNDLE: its model, preprocessing and rule,
with N products (its own first, then numbered copies sharing its thumbnails)
and N vectors (its own, then clustered synthetic unit vectors), in exact
search up to EXACT_UP_TO products and HNSW above (as the export's rule picks
on these CPUs); the text tower is left out (its start-up is not on the image
path). Sizes take turns run by run, so the machine's load drift hits them
alike. The timed process imports runtime dependencies only.
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()  # before any import this file makes: the child's clock starts here

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET_IMPORTS_MS = 300.0
TARGET_OPEN_TO_ANSWER_MS = 150.0
EXACT_UP_TO = 20_000
STAGES = ("manifest", "products", "searcher", "first_answer")


def child(bundle: str, photo: str, threads: int, mode: str) -> None:
    """One fresh process's timings, printed as one JSON line."""
    t0 = time.perf_counter()
    import edge_search  # noqa: F401  (onnxruntime first)
    import cv2  # noqa: F401
    import numpy  # noqa: F401

    from edge_search.core.bundle import Bundle
    from edge_search.core.search import Searcher
    t1 = time.perf_counter()
    opened = Bundle.open(bundle, verify=False)
    t2 = time.perf_counter()
    opened.product_table()
    t3 = time.perf_counter()
    searcher = Searcher.from_bundle(opened, verify=mode != "unchecked", threads=threads)
    t4 = time.perf_counter()
    result = searcher.search_image(photo, k=5)
    t5 = time.perf_counter()
    ms = lambda a, b: round((b - a) * 1e3, 2)  # noqa: E731
    print(json.dumps({"to_main": ms(T_PROCESS, t0), "imports": ms(t0, t1), "manifest": ms(t1, t2),
                      "products": ms(t2, t3), "searcher": ms(t3, t4), "first_answer": ms(t4, t5),
                      "open_to_first_answer": ms(t1, t5), "hits": len(result.hits)}))


def grow(src: Path, size: int, out: Path, seed: int = 1) -> Path:
    """BUNDLE with `size` products and vectors (see the module's doc)."""
    import edge_search  # noqa: F401
    import numpy as np
    from usearch.index import Index

    from edge_search.core.bundle import Bundle
    from edge_search.core.index import VectorIndex, unit
    from edge_search.core.products import ProductTable, key_file_bytes
    from edge_search.files import sha256_file

    bundle = Bundle.open(src)
    m = bundle.manifest
    if m.index.delta is not None or m.index.rescore_file:
        raise SystemExit(f"{src}: give a bundle with one index segment and no rescoring file")
    shutil.copytree(src, out, copy_function=os.link)
    manifest = json.loads((src / "manifest.json").read_text())
    manifest.pop("text", None)
    for name in [k for k in manifest["files"] if k.startswith("text")]:
        manifest["files"].pop(name)
        (out / name).unlink()
    (out / "manifest.sig").unlink(missing_ok=True)

    rows = [json.loads(line) for line in (src / m.products_file).read_text().splitlines()]
    products = out / m.products_file
    products.unlink()
    with products.open("w") as f:
        for i in range(size):
            p = dict(rows[i % len(rows)])
            if i >= len(rows):
                p["id"], p["name"] = f"{p['id']}-{i}", f"{p['name']} #{i}"
            p["keys"] = [i]
            f.write(json.dumps(p, ensure_ascii=False) + "\n")

    own = np.asarray(Index.restore(str(src / m.index.file)).get(np.arange(m.index.count, dtype=np.uint64)),
                     dtype=np.float32)
    rng = np.random.default_rng(seed)
    extra = size - len(own)
    centres = rng.standard_normal((max(1, size // 100), own.shape[1])).astype(np.float32)
    synth = centres[rng.integers(0, len(centres), max(extra, 0))]
    synth += 0.8 * rng.standard_normal(synth.shape).astype(np.float32)
    vectors = unit(np.concatenate([own, synth]))[:size]
    exact = size <= EXACT_UP_TO
    index_path = out / m.index.file
    index_path.unlink()
    if exact:
        VectorIndex.build(vectors, dtype=m.index.dtype).save(index_path)
    else:  # a multi-threaded build: the graph's order does not change its speed, and one thread takes minutes
        index = Index(ndim=vectors.shape[1], metric="cos", dtype=m.index.dtype, expansion_add=64)
        index.add(np.arange(size, dtype=np.uint64), vectors, threads=os.cpu_count() or 1)
        index.save(str(index_path))
    manifest["index"].update(count=size, exact=exact)
    manifest["products"]["count"] = size
    rewritten = [m.products_file, m.index.file]
    if m.products_keys is not None:  # key i shows product i
        (out / m.products_keys).unlink()
        (out / m.products_keys).write_bytes(key_file_bytes(ProductTable(products=(), key_to_product=np.arange(size))))
        rewritten.append(m.products_keys)
    for name in rewritten:
        manifest["files"][name] = {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size}
    (out / "manifest.json").unlink()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    Bundle.open(out)  # what the runs will open must be a whole, consistent bundle
    return out


def photo_file(folder: Path) -> Path:
    """A 640x480 JPEG of a sample product on a textured shelf, as a kiosk frame."""
    import cv2
    import numpy as np

    from edge_search_export.sample_catalog import draw_product

    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(60, 200, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    frame[80:400, 160:480] = cv2.cvtColor(draw_product(0), cv2.COLOR_RGB2BGR)
    path = folder / "frame.jpg"
    cv2.imwrite(str(path), frame)
    return path


def run_child(bundle: Path, photo: Path, threads: int, mode: str = "unchecked", cache: Path | None = None) -> dict:
    """One fresh process's figures; `cache` is its EDGE_SEARCH_CACHE_DIR (where checked records are)."""
    env = {**os.environ, **({"EDGE_SEARCH_CACHE_DIR": str(cache)} if cache else {})}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", str(bundle), str(photo), str(threads), mode],
                          capture_output=True, text=True, cwd=REPO, env=env)
    wall = (time.perf_counter() - t0) * 1e3
    if proc.returncode != 0:
        raise SystemExit(f"bench/startup.py: the run on {bundle} failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall"] = round(wall, 2)
    return out


def summary(runs: list[dict]) -> dict:
    keys = ("to_main", "imports", *STAGES, "open_to_first_answer", "process_wall")
    q = lambda v, p: round(float(sorted(v)[min(len(v) - 1, int(p * len(v)))]), 2)  # noqa: E731
    return {k: {"p50": round(statistics.median(r[k] for r in runs), 2), "p95": q([r[k] for r in runs], 0.95)}
            for k in keys}


def python_start_ms(runs: int) -> float:
    """A bare interpreter's start and exit, for scale."""
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        ms.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(ms), 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--first-runs", type=int, default=3, help="runs of the first start after an install (slow)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads, as the kiosk's default")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = ap.parse_args(argv)
    from edge_search.files import STAT_MARGIN_NS

    runs: dict[tuple[int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        work = Path(tmp)
        photo = photo_file(work)
        print(f"making bundles of {', '.join(map(str, args.sizes))} products from {args.bundle} ...", flush=True)
        bundles = {n: grow(args.bundle, n, work / f"bundle-{n}") for n in args.sizes}
        time.sleep(STAT_MARGIN_NS / 1e9 + 0.5)  # files older than the margin: a full check is recorded
        checked = work / "checked"
        for n, b in bundles.items():  # the first start records the check; the page cache holds the files
            run_child(b, photo, args.threads, "restart", checked)
        plan = [(n, mode) for mode in ("restart", "unchecked") for n in args.sizes]
        for i in range(args.runs):  # sizes and modes take turns
            for n, mode in plan:
                runs.setdefault((n, mode), []).append(run_child(bundles[n], photo, args.threads, mode, checked))
            print(f"  run {i + 1}/{args.runs}", end="\r", flush=True)
        for i in range(args.first_runs):
            for n in args.sizes:
                runs.setdefault((n, "first"), []).append(
                    run_child(bundles[n], photo, args.threads, "first", work / f"empty-{n}-{i}"))
        print()
        bare = python_start_ms(5)
    report = {"bundle": str(args.bundle), "runs": args.runs, "first_runs": args.first_runs, "threads": args.threads,
              "python_start_exit_ms": bare, "load_average": os.getloadavg(),
              "cpu": platform.processor() or platform.machine(),
              "targets": {"imports_ms": TARGET_IMPORTS_MS, "open_to_first_answer_ms": TARGET_OPEN_TO_ANSWER_MS},
              "starts": {}}
    print(f"bare python start+exit {bare:.0f} ms; p50 (p95) ms over fresh processes, load {os.getloadavg()[0]:.2f}")
    print(f"{'products':>9} {'start':>9} {'imports':>12} {'manifest':>11} {'products':>11} {'searcher':>13} "
          f"{'1st answer':>11} {'open->answer':>13} {'process':>12}")
    for mode in ("restart", "first", "unchecked"):
        for n in args.sizes:
            s = summary(runs[(n, mode)])
            s["runs"] = len(runs[(n, mode)])
            s["meets_imports_target"] = s["imports"]["p50"] <= TARGET_IMPORTS_MS
            s["meets_open_to_first_answer_target"] = s["open_to_first_answer"]["p50"] <= TARGET_OPEN_TO_ANSWER_MS
            report["starts"].setdefault(mode, {})[str(n)] = s
            cell = lambda k, w: f"{s[k]['p50']:.0f} ({s[k]['p95']:.0f})".rjust(w)  # noqa: E731
            print(f"{n:>9} {mode:>9} {cell('imports', 12)} {cell('manifest', 11)} {cell('products', 11)} "
                  f"{cell('searcher', 13)} {cell('first_answer', 11)} {cell('open_to_first_answer', 13)} "
                  f"{cell('process_wall', 12)}")
    if args.out:
        from edge_search.files import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        sys.path.insert(0, str(REPO))
        sys.exit(main())
