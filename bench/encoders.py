"""Encoder, index and cold-start benchmark for issue #2's targets, in one run.

    .venv/bin/python bench/encoders.py --out bench-out/encoders.json

Side by side on this machine (batch 1, onnxruntime CPU, 2 threads): each model
timed alone in its own process (export/timing.py), the models alternating
round by round so load drifts hit every model alike:
  * teacher ViT-B-32 image tower, ONNX fp32 and int8
  * student (default mobilenetv3_small_100 -> 512-d), ONNX fp32, int8 and fp16
    (weights stored as float16, computed in float32)
Latency does not depend on weight values, so random weights are used unless
--pretrained is given. The *shipped* student is the form the export's rule
(precision.choose) picks from these same timings. Also: model file sizes, index
bytes per 512-d vector (i8 / f16 / f32, HNSW graph included), search latency
exact vs HNSW, and the time to open a bundle and answer the first query in a
fresh process. Targets (#16, #2): the shipped student >= 30x faster than the
teacher fp32 at the default teacher's 224 px, <= 5 MB; <= 700 bytes per 512-d
vector; open + first query <= 300 ms.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import edge_search  # noqa: F401  (onnxruntime before usearch)
from edge_search.files import atomic_write_text
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def build_models(work: Path, student_arch: str, pretrained: str | None, student_size: int) -> dict[str, Path]:
    import torch
    from edge_search_export.onnx_export import export_onnx
    from edge_search_export.precision import store_fp16
    from edge_search_export.quantize import quantize_int8
    from edge_search_export.student import Embedder, build_student
    from edge_search_export.teacher import load_teacher

    teacher = load_teacher("ViT-B-32", pretrained or "random")
    torch.manual_seed(0)
    student = build_student(student_arch, teacher.embed_dim, student_size)
    rng = np.random.default_rng(0)
    paths = {}
    for name, module, size in (("teacher", Embedder(teacher.visual), 224), ("student", Embedder(student), student_size)):
        fp32, int8 = work / f"{name}.fp32.onnx", work / f"{name}.int8.onnx"
        print(f"exporting {name} ...", file=sys.stderr, flush=True)
        export_onnx(module.eval(), (size, size), fp32)
        calib = rng.standard_normal((16, 3, size, size)).astype(np.float32)
        quantize_int8(fp32, int8, calib)
        paths[f"{name}_fp32"], paths[f"{name}_int8"] = fp32, int8
    store_fp16(paths["student_fp32"], work / "student.fp16.onnx")
    paths["student_fp16"] = work / "student.fp16.onnx"
    return paths


def index_figures(dim: int = 512, n: int = 10_000) -> dict:
    from edge_search.core.index import VectorIndex

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    queries = vecs[:200] + 0.3 * rng.standard_normal((200, dim)).astype(np.float32)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("i8", "f16", "f32"):
            index = VectorIndex.build(vecs, dtype=dtype)
            p = Path(tmp) / f"{dtype}.usearch"
            index.save(p)
            row = {"bytes_per_vector": round(p.stat().st_size / n, 1)}
            for exact in (True, False):
                index.exact = exact
                t = []
                for q in queries:
                    t0 = time.perf_counter()
                    index.search(q, 5)
                    t.append((time.perf_counter() - t0) * 1e3)
                row["exact_ms_p50" if exact else "hnsw_ms_p50"] = round(float(np.median(t)), 4)
            out[dtype] = row
    return {"vectors": n, "dim": dim, "by_dtype": out}


COLD = """
import time, sys
t0 = time.perf_counter()
import edge_search
from edge_search.core.search import Searcher
from edge_search.core.images import load_image
t1 = time.perf_counter()
s = Searcher.from_bundle(sys.argv[1])
r = s.search_image(load_image(sys.argv[2]), k=5)
t2 = time.perf_counter()
print((t1 - t0) * 1e3, (t2 - t1) * 1e3)
"""


def cold_start(bundle: Path, image: Path, repeat: int = 5) -> dict:
    imports, opens = [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", COLD, str(bundle), str(image)], capture_output=True, text=True,
                             check=True).stdout.split()
        imports.append(float(out[0]))
        opens.append(float(out[1]))
    return {"bundle": str(bundle), "import_ms_median": round(float(np.median(imports)), 1),
            "open_and_first_query_ms_median": round(float(np.median(opens)), 1), "runs": repeat}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench-out/encoders.json")
    ap.add_argument("--student", default="mobilenetv3_small_100")
    ap.add_argument("--student-size", type=int, default=224)
    ap.add_argument("--pretrained", default=None, help="teacher weights (tag or file); default random")
    ap.add_argument("--bundle", default=None, help="bundle for the cold-start figure (default: export the demo one)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds: one process per model each")
    ap.add_argument("--calls", type=int, default=20, help="timed calls per model per round (a quarter for the teacher)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from edge_search_export.precision import BUDGET_BYTES, choose

    work = Path(tempfile.mkdtemp(prefix="edge-search-bench-"))
    paths = build_models(work, args.student, args.pretrained, args.student_size)
    side = {name: 224 if name.startswith("teacher") else args.student_size for name in paths}
    from edge_search_export.timing import time_alone

    times = time_alone({n: (p, (side[n], side[n])) for n, p in paths.items()}, args.rounds,
                       {n: max(3, args.calls // 4) if n.startswith("teacher") else args.calls for n in paths},
                       args.threads, progress=True)
    p50 = {n: float(np.median(t)) for n, t in times.items()}
    best = {n: float(np.min(t)) for n, t in times.items()}
    # Shared 2-core VMs add bursts of interference; the best run of each model
    # is the least disturbed estimate, the median the typical one. Both are kept.
    models = {n: {"ms_p50": round(p50[n], 3), "ms_p95": round(float(np.percentile(times[n], 95)), 3),
                  "ms_best": round(best[n], 3), "mb": round(paths[n].stat().st_size / 1e6, 2),
                  "speedup_vs_teacher_fp32": round(p50["teacher_fp32"] / p50[n], 2),
                  "speedup_best_vs_teacher_fp32_best": round(best["teacher_fp32"] / best[n], 2)} for n in paths}

    forms = {f: {"ms_p50": p50[f"student_{f}"], "bytes": paths[f"student_{f}"].stat().st_size}
             for f in ("int8", "fp16")}
    shipped = f"student_{choose(forms, {f: True for f in forms}, BUDGET_BYTES)}"

    if args.bundle:
        bundle = Path(args.bundle)
    else:
        from edge_search_export.demo import run_demo

        print("exporting the demo bundle for the cold-start figure ...", file=sys.stderr, flush=True)
        bundle = run_demo(work / "demo", progress=False).bundle
    image = next((bundle.parent / "queries").glob("*.jpg"), None) or next((bundle / "thumbs").glob("*.jpg"))
    report = {
        "machine": {"threads": args.threads, "rounds": args.rounds, "calls": {n: len(t) for n, t in times.items()},
                    "timing": "each model alone in its own process (export/timing.py), models alternating by round"},
        "models": models,
        "shipped_student": shipped,
        "index": index_figures(),
        "cold_start": cold_start(bundle, image),
    }
    report["targets"] = {
        f"{shipped}_speedup_vs_teacher_fp32 >= 30 (p50)": models[shipped]["speedup_vs_teacher_fp32"],
        f"{shipped}_speedup_vs_teacher_fp32 >= 30 (best)": models[shipped]["speedup_best_vs_teacher_fp32_best"],
        f"{shipped}_mb <= 5": models[shipped]["mb"],
        "i8_bytes_per_512d_vector <= 700": report["index"]["by_dtype"]["i8"]["bytes_per_vector"],
        "open_and_first_query_ms <= 300": report["cold_start"]["open_and_first_query_ms_median"],
    }
    print(f"{'model':<14}{'ms p50':>9}{'ms p95':>9}{'ms best':>9}{'MB':>9}{'x teacher (p50)':>17}{'x (best)':>10}")
    for n, r in models.items():
        print(f"{n + (' *' if n == shipped else ''):<14}{r['ms_p50']:>9.2f}{r['ms_p95']:>9.2f}{r['ms_best']:>9.2f}{r['mb']:>9.2f}"
              f"{r['speedup_vs_teacher_fp32']:>17.1f}{r['speedup_best_vs_teacher_fp32_best']:>10.1f}")
    print(f"{'index dtype':<14}{'bytes/vec':>10}{'exact ms':>10}{'hnsw ms':>10}   ({report['index']['vectors']} x 512-d)")
    for d, r in report["index"]["by_dtype"].items():
        print(f"{d:<14}{r['bytes_per_vector']:>10.1f}{r['exact_ms_p50']:>10.3f}{r['hnsw_ms_p50']:>10.3f}")
    print("* the form the export ships by its rule (precision.choose) on these timings")
    cs = report["cold_start"]
    print(f"cold start: import {cs['import_ms_median']:.0f} ms, open bundle + first query "
          f"{cs['open_and_first_query_ms_median']:.0f} ms (median of {cs['runs']})")
    for k, v in report["targets"].items():
        print(f"target {k}: {v}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
