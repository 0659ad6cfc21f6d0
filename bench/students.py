"""Choose the student by measurement (issue #16): candidate backbones x input sides x numeric forms.

    .venv/bin/python bench/students.py --teacher-checkpoint bench-out/teacher/r18-e7-neg600/teacher.pt \
        --out bench-out/students

For each candidate timm backbone (`--candidates`, default CANDIDATES: ReLU/ReLU6
families that quantize well, MobileNetV3/V4, LCNet, RepGhost, MNASNet, ...) and
input side (`--sides`), projected into the teacher's space as the export builds
it, and each numeric form the export can ship (fp32, int8, fp16-stored weights;
export/precision.py):
  * latency at batch 1, 1 and 2 threads, each model timed alone in its own
    process (export/timing.py), all models alternating round by round in one
    run, beside a ViT-B-32 image tower in ONNX fp32 at 224 px (random weights:
    latency does not depend on them), so each point has its ratio to it;
  * the file size;
  * fidelity after a short distillation against one fixed teacher (the export's
    own teacher and student steps, bench/student_recipe.prepare: the fit photos as
    distillation images, the dev split held out): on the dev photos, the cosine
    between the student's and the teacher's vectors, the top-1 agreement (the
    student's query against the teacher-embedded catalog names the product the
    teacher names), and R@1 photo -> studio image, with 95 % bootstrap intervals.
    Distilled at the sides in `--fidelity-sides` (each side needs its own teacher
    targets); other sides are timed only.
The Pareto front (faster and more faithful, among points within 5 MB) is printed;
the best point is the most faithful (top-1 agreement, then cosine) among those
within 5 MB whose backbone and form run at least 30x faster than the ViT-B-32 at
p50, 2 threads, at `--target-side` (224: the side the default ViT-B-32 teacher
gives the student; issue #16's target). Writes OUT/students.json and
OUT/students.md (the table the docs include); `--render` rewrites the table and
the choice from OUT/students.json without measuring again.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/grocery.py

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import numpy as np  # noqa: E402

from bench import stats  # noqa: E402
from bench.grocery_data import read_classes  # noqa: E402
from bench.student_recipe import add_setup_arguments  # noqa: E402
from edge_search.files import atomic_write_text  # noqa: E402

CANDIDATES = ("mobilenetv3_small_100", "mobilenetv3_small_075", "mobilenetv4_conv_small",
              "mobilenetv4_conv_small_050", "mobilenetv2_050", "lcnet_075", "repghostnet_050", "mnasnet_small")
FORMS = ("fp32", "int8", "fp16")
BUDGET_MB = 5.0
TARGET_RATIO = 30.0
REFERENCE = "reference fp32"
DEFAULT_MD = REPO / "docs" / "benchmarks" / "students.md"  # the --reference image tower (default ViT-B-32), timed beside every point


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def point_name(arch: str, side: int, form: str) -> str:
    return f"{arch}@{side} {form}"


def pareto_front(points: dict[str, dict]) -> list[str]:
    """Names of the points no other point beats on both latency (ms_p50, lower) and fidelity
    (top1_agreement, higher) while at least as good on the other; points without fidelity are left out."""
    measured = {n: p for n, p in points.items() if p.get("top1_agreement") is not None}
    front = []
    for n, p in measured.items():
        dominated = any(q["ms_p50"] <= p["ms_p50"] and q["top1_agreement"] >= p["top1_agreement"]
                        and (q["ms_p50"] < p["ms_p50"] or q["top1_agreement"] > p["top1_agreement"])
                        for m, q in measured.items() if m != n)
        if not dominated:
            front.append(n)
    return sorted(front, key=lambda n: measured[n]["ms_p50"])


def best_point(points: dict[str, dict], reference_ms: float, at_side: int | None = None,
               budget_mb: float = BUDGET_MB, ratio: float = TARGET_RATIO) -> str | None:
    """The most faithful measured point (top-1 agreement, then mean cosine, then speed) within the size
    budget whose backbone and form run at least `ratio` times faster than the reference at `at_side` (the
    side the default teacher gives a student; the point's own side when not timed there); None when no
    measured point qualifies."""
    ok = []
    for n, p in points.items():
        if p.get("top1_agreement") is None or p["mb"] > budget_mb:
            continue
        timed = points.get(point_name(p["arch"], at_side, p["form"]), p) if at_side else p
        if timed["mb"] <= budget_mb and reference_ms / timed["ms_p50"] >= ratio:
            ok.append(n)
    if not ok:
        return None
    return max(ok, key=lambda n: (points[n]["top1_agreement"], points[n]["mean_cosine"], -points[n]["ms_p50"]))


def fidelity(q_s: np.ndarray, q_t: np.ndarray, cat_t: np.ndarray, products: np.ndarray, idx) -> dict:
    """The student's dev vectors against the teacher's: cosine, top-1 agreement, R@1 (teacher-embedded
    catalog, one image per product), each over the dev photos with a bootstrap interval."""
    cos = (q_s * q_t).sum(1)
    s_top, t_top = (q_s @ cat_t.T).argmax(1), (q_t @ cat_t.T).argmax(1)
    return {"mean_cosine": round(float(cos.mean()), 4),
            "top1_agreement": stats.share(s_top == t_top, idx).to_json(),
            "recall@1": stats.share(s_top == products, idx).to_json(),
            "teacher_recall@1": stats.share(t_top == products, idx).to_json()}


def build_forms(module, side: int, stem: Path, calib: np.ndarray) -> dict[str, Path]:
    from edge_search_export.onnx_export import export_onnx
    from edge_search_export.precision import store_fp16
    from edge_search_export.quantize import quantize_int8

    files = {form: stem.with_name(f"{stem.name}.{form}.onnx") for form in FORMS}
    export_onnx(module.eval(), (side, side), files["fp32"])
    quantize_int8(files["fp32"], files["int8"], calib)
    store_fp16(files["fp32"], files["fp16"])
    return files


def render(report: dict) -> str:
    pts, front, best = report["points"], set(report["pareto_front"]), report["best"]
    ref = report["reference_ms_p50"]
    lines = [f"Written by `bench/students.py` on {report['date']}; the command: `{report['command']}` "
             f"(load {report['loadavg_start'][0]:.1f} → {report['loadavg_end'][0]:.1f}).", "",
             f"Latency: batch 1, each model alone in its own process, {report['rounds']} alternating rounds; "
             f"the reference ({report['reference']}, ONNX fp32, {report['reference_side']} px) p50 {ref['2']:.1f} ms (2 threads), {ref['1']:.1f} ms (1 thread). Fidelity on "
             f"{report['dev_photos']} dev photos after {report['distill']['epochs']} distillation epochs "
             f"({report['distill']['views']} views) against the teacher `{report['teacher_checkpoint']}` "
             f"(its dev R@1 {stats_text(report['teacher_recall@1']) if report['teacher_recall@1'] else '–'}); 95 % bootstrap intervals over the photos. "
             f"◆ Pareto front (within {BUDGET_MB:g} MB); ★ best: most faithful within {BUDGET_MB:g} MB whose "
             f"backbone and form run ≥ {TARGET_RATIO:g}× the reference at p50 at {report['target_side']} px "
             f"(the side the default teacher gives the student).", "",
             "| student | side | form | MB | ms p50 (2 thr) | ms p50 (1 thr) | × reference (2 thr) | top-1 agreement "
             "| mean cosine | dev R@1 | |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, p in sorted(pts.items(), key=lambda kv: kv[1]["ms_p50"]):
        mark = ("★" if n == best else "") + ("◆" if n in front else "")
        lines.append(f"| {p['arch']} | {p['side']} | {p['form']} | {p['mb']:.2f} | {p['ms_p50']:.2f} | "
                     f"{p['ms_p50_1thread']:.2f} | {ref['2'] / p['ms_p50']:.1f} | "
                     + (f"{stats_text(p['top1_agreement_ci'])} | {p['mean_cosine']:.4f} | {stats_text(p['recall@1'])}"
                        if p.get("top1_agreement") is not None else "– | – | –") + f" | {mark} |")
    return "\n".join(lines) + "\n"


def stats_text(s: dict) -> str:
    return f"{100 * s['value']:.1f} % [{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_setup_arguments(ap, negatives=0, dev_negatives=20, checkpoint_required=False)
    ap.add_argument("--candidates", default=",".join(CANDIDATES), help="timm backbones, comma-separated")
    ap.add_argument("--sides", default=[128, 160, 224], type=_ints, help="input sides timed")
    ap.add_argument("--fidelity-sides", default=[128], type=_ints, help="input sides distilled and measured")
    ap.add_argument("--epochs", type=int, default=3, help="distillation epochs per candidate (short: a ranking)")
    ap.add_argument("--views-per-image", type=int, default=4)
    ap.add_argument("--classes", type=int, default=None, help="only N products, spread over the list (a miniature)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=15, help="timed calls per model per round and thread count")
    ap.add_argument("--target-side", type=int, default=224,
                    help="the best point must reach the speed target at this side (the default teacher's)")
    ap.add_argument("--md", default=None, help="also write the table here (default: docs/benchmarks/students.md, "
                    "OUT/students.md only with --classes)")
    ap.add_argument("--render", action="store_true", help="only rewrite the table and choice from OUT/students.json")
    ap.add_argument("--reference", default="ViT-B-32", help="the image tower every point is timed against "
                    "(an open_clip name or config; random weights)")
    args = ap.parse_args(argv)
    if args.render:
        report = json.loads((Path(args.out) / "students.json").read_text())
        return write_report(Path(args.out), report, args.target_side, _md(args))
    if not args.teacher_checkpoint:
        ap.error("--teacher-checkpoint is required (except with --render)")
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]

    import torch

    from bench.student_recipe import prepare
    from edge_search.core.encoder import OnnxEncoder
    from edge_search.core.preprocess import preprocess_batch
    from edge_search_export.onnx_export import export_onnx
    from edge_search_export.pipeline import distill_set, student_step
    from edge_search_export.student import Embedder, build_student
    from edge_search_export.teacher import load_teacher
    from edge_search_export.timing import time_alone

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    load, t0 = os.getloadavg(), time.perf_counter()
    if args.classes:  # a miniature: N products spread over the list, as bench/grocery.py --classes
        ids = [c["id"] for c in read_classes(Path(args.data))]
        args.class_ids = ids[::max(1, len(ids) // args.classes)][:args.classes]
    d = prepare(args, out, views_per_image=args.views_per_image, epochs=args.epochs)
    idx = stats.resamples(len(d.dev), stream=60)
    t = d.teacher_step
    embed_dim = t.teacher.embed_dim

    # --- distil at the fidelity sides, export every form -------------------
    paths: dict[str, tuple[Path, int]] = {}
    points: dict[str, dict] = {}
    distill_info, teacher_r1 = {}, None
    for side in args.fidelity_sides:
        cfg = replace(d.cfg, image_size=side)
        shared = distill_set(cfg, t, progress=True)
        calib = preprocess_batch(t.images[:64] + shared.extra[:64], shared.preprocess)
        dev_in = preprocess_batch(d.dev_images, shared.preprocess)
        for arch in candidates:
            torch.manual_seed(args.seed)  # every student starts from its own seed-0 weights
            s = student_step(replace(cfg, student=arch), t, True, inputs=shared)
            distill_info = {"epochs": args.epochs, "views": int(len(shared.bank.crops))}
            files = build_forms(s.module, side, models / f"{arch}@{side}", calib)
            for form, f in files.items():
                q_s = OnnxEncoder(f, input_name="image", output_name="embedding", threads=args.threads).embed(dev_in)
                fid = fidelity(q_s, d.q_t, d.cat_t, d.dev_products, idx)
                n = point_name(arch, side, form)
                paths[n] = (f, side)
                points[n] = {"arch": arch, "side": side, "form": form, "mb": round(f.stat().st_size / 1e6, 3),
                             "mean_cosine": fid["mean_cosine"], "top1_agreement": fid["top1_agreement"]["value"],
                             "top1_agreement_ci": fid["top1_agreement"], "recall@1": fid["recall@1"],
                             "distill_seconds": s.info["distillation"]["seconds"]}
            print(json.dumps({n: {k: points[n][k] for k in ("mb", "mean_cosine", "top1_agreement")}
                              for n in points if n.startswith(f"{arch}@{side} ")}), flush=True)
            teacher_r1 = fid["teacher_recall@1"]
    # --- time-only sides: random weights, same graphs ----------------------
    rng = np.random.default_rng(args.seed)
    for side in [s for s in args.sides if s not in args.fidelity_sides]:
        for arch in candidates:
            torch.manual_seed(args.seed)
            calib = rng.standard_normal((16, 3, side, side)).astype(np.float32)
            files = build_forms(Embedder(build_student(arch, embed_dim, side)), side, models / f"{arch}@{side}", calib)
            for form, f in files.items():
                n = point_name(arch, side, form)
                paths[n] = (f, side)
                points[n] = {"arch": arch, "side": side, "form": form, "mb": round(f.stat().st_size / 1e6, 3)}
    reference = load_teacher(args.reference, "random")
    ref_side = int(reference.preprocess.size[0])  # its own input: 224 for ViT-B-32
    vit = models / f"reference-{Path(args.reference).stem}.fp32.onnx"
    export_onnx(Embedder(reference.visual).eval(), (ref_side, ref_side), vit)
    paths[REFERENCE] = (vit, ref_side)

    # --- one timing run over every point and the reference -----------------
    calls = {n: max(3, args.calls // 5) if n == REFERENCE else args.calls for n in paths}
    sized = {n: (f, (side, side)) for n, (f, side) in paths.items()}
    times = {(n, th): v for th in (1, 2)
             for n, v in time_alone(sized, args.rounds, calls, th, progress=True).items()}
    ref = {str(th): round(float(np.median(times[(REFERENCE, th)])), 3) for th in (1, 2)}
    for n, p in points.items():
        p["ms_p50"] = round(float(np.median(times[(n, 2)])), 3)
        p["ms_p50_1thread"] = round(float(np.median(times[(n, 1)])), 3)
        p["x_reference_p50"] = round(ref["2"] / p["ms_p50"], 2)
    report = {"command": " ".join([".venv/bin/python", "bench/students.py"] + (argv or sys.argv[1:])),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "teacher_checkpoint": args.teacher_checkpoint, "teacher_recall@1": teacher_r1,
              "dev_photos": len(d.dev), "distill": distill_info, "rounds": args.rounds,
              "reference": args.reference, "reference_side": ref_side, "reference_ms_p50": ref, "points": points,
              "seconds": round(time.perf_counter() - t0, 1), "bootstrap_seed": stats.SEED,
              "loadavg_start": [round(x, 2) for x in load], "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    return write_report(out, report, args.target_side, _md(args))


def _md(args) -> Path | None:
    return Path(args.md) if args.md else (None if args.classes else DEFAULT_MD)


def write_report(out: Path, report: dict, target_side: int, md: Path | None) -> int:
    points = report["points"]
    report["pareto_front"] = pareto_front({n: p for n, p in points.items() if p["mb"] <= BUDGET_MB})
    report["target_side"] = target_side
    report["best"] = best_point(points, report["reference_ms_p50"]["2"], target_side)
    atomic_write_text(out / "students.json", json.dumps(report, indent=2, default=str) + "\n")
    table = render(report)
    atomic_write_text(out / "students.md", table)
    if md is not None:
        atomic_write_text(md, "# Student candidates\n\n" + table)
    print(table)
    print(f"Pareto front: {', '.join(report['pareto_front'])}\nbest: {report['best']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
