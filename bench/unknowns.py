"""The shipped bundle's no-match rules with every product left out once (issue #12, item 1).

    .venv/bin/python bench/unknowns.py --run bench-out/grocery-distil-cast --split val --out bench-out/unknowns \
        --md docs/benchmarks/unknowns.md

grocery.md's `no_match` table leaves one seeded set of products out of the index; the photos of the few
it holds are all its unknown-product figure rests on. Here every rule is fitted once as grocery.py fits it
(`export/calibrate.py` on the export's calibration photos, the full catalog, the train negatives, each at
the bundle's 5 % budget), then applied with each of --rotate left-out sets taken out of the index: a seeded
partition of the catalog (the sets `bench/site_photos.py --rotate` uses), so every photo of the split is
an unknown-product query once and a kept product's photo a known query in every other set. Outcomes are
pooled over the sets; intervals resample products (a product's photos, in every set, together:
`stats.clustered_share`) and scenes. Nothing is chosen from the figures. Writes OUT/result.json and a
Markdown table (--md).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/grocery.py

import argparse  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import numpy as np  # noqa: E402

from bench import script, stats  # noqa: E402
from bench.grocery import REFERENCE_TEACHER, _embed, _searcher, every_product_out  # noqa: E402
from bench.negatives import build_negatives  # noqa: E402
from bench.pooled import partition  # noqa: E402
from bench.site_photos import calibration_set, grocery_run, run_models, write_result  # noqa: E402
from edge_search.core.images import load_image  # noqa: E402
from edge_search.evaluation.evaluate import read_queries  # noqa: E402
from edge_search.files import atomic_write_text  # noqa: E402

FIGURES = ("false_reject_of_correct", "answered_right", "unknown_rejected", "named_wrong", "right_when_named",
           "scenes_rejected")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, metavar="DIR", help="a bench/grocery.py --out (its bundle is measured)")
    ap.add_argument("--out", required=True, metavar="DIR")
    ap.add_argument("--md", default=None, help="also write the table here (default OUT/unknowns.md)")
    ap.add_argument("--split", choices=("dev", "val"), default="dev")
    ap.add_argument("--rotate", type=int, default=8, metavar="N", help="left-out sets (at least 2)")
    ap.add_argument("--teacher", default=str(REFERENCE_TEACHER), help="the run's teacher config")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the run's --seed")
    args = ap.parse_args(argv)
    if args.rotate < 2:
        ap.error("--rotate must be at least 2")
    run, report = grocery_run(ap, args.run)
    return _measure(args, run, Path(args.out), report)


def _measure(args, run: Path, out: Path, report: dict) -> int:
    from edge_search_export.calibrate import RULES, calibrate_no_match
    from edge_search_export.config import NoMatchSettings

    t0 = time.perf_counter()
    rm = run_models(run, report, args.teacher, args.threads, args.seed)
    student, products, pp = rm.student, rm.products, rm.student.manifest.preprocess
    ids = [p.id for p in products]
    cal_vecs, cal_truth, train_negs = calibration_set(run, rm, args.seed)
    rows = read_queries(run / "data" / f"{args.split}.csv")
    vecs = _embed(student.encoder, [load_image(r.image) for r in rows], pp)
    # the split's no-product scenes as grocery.py cuts them
    scene_dir = build_negatives(Path(report["dataset"]["data"]), out / "negatives" / f"{args.split}-300-seed{args.seed}",
                                split=args.split, count=300, seed=args.seed)
    scenes = _embed(student.encoder, [load_image(p) for p in scene_dir], pp)
    full = _searcher(student.encoder, rm.bundle_catalog, products, pp)
    fits = {}
    for name in RULES:
        if RULES[name][2] and train_negs is None:
            continue
        rule, floor, fit = calibrate_no_match(full, cal_vecs, cal_truth, NoMatchSettings(rule=name), source="bench",
                                              seed=args.seed, negatives=train_negs)
        if rule is not None:
            fits[name] = (rule, floor)
    chosen = student.manifest.calibration.rule if student.manifest.calibration else None
    groups = partition(ids, args.rotate, args.seed)
    pooled = every_product_out(student.encoder, rm.bundle_catalog, products, pp, fits, train_negs, vecs,
                               [r.id for r in rows], scenes, groups)
    by_rule = {name: {**x, "chosen_by_export": name == chosen} for name, x in pooled.items()}
    known_measured = sum(sum(r.id not in left for r in rows) for left in map(set, groups))
    command = ".venv/bin/python bench/unknowns.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = {"command": command, "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "run": str(run),
              "run_command": report.get("command", "?"), "split": args.split, "left_out": groups,
              "photos": {"split": len(rows), "known_measured": known_measured, "unknown": len(rows)},
              "rules": by_rule, "bootstrap": {"rounds": stats.ROUNDS, "seed": stats.SEED},
              "seconds": round(time.perf_counter() - t0, 1)}
    write_result(out, result, Path(args.md) if args.md else out / "unknowns.md", _markdown)
    for name, x in by_rule.items():
        print(f"{name}{' (chosen)' if x['chosen_by_export'] else ''}: refused of correct "
              f"{stats.fmt(x['false_reject_of_correct'])}; unknown refused {stats.fmt(x['unknown_rejected'])}; "
              f"scenes refused {stats.fmt(x['scenes_rejected'])}")
    return 0


def _markdown(r: dict, path: Path) -> None:
    split, sets = r["split"], r["left_out"]
    lines = [f"# No match with every product left out once ({split})", "",
             f"Written by `bench/unknowns.py` on {r['written']}; do not edit by hand. Every figure comes from one "
             "run of this command (from the repository root), which rewrites this file and its `result.json`:", "",
             f"    {r['command']}", "",
             f"The bundle, its calibration photos and train negatives are those of `{r['run']}` (`{r['run_command']}`). "
             "Every rule is fitted once as grocery.md's `no_match` table fits it (the export's calibration photos, "
             "the full catalog, the train negatives, the 5 % budget), then applied with each of "
             f"{len(sets)} left-out sets ({min(map(len, sets))}–{max(map(len, sets))} products, a seeded partition "
             f"of the catalog) taken out of the index: every {split} photo ({r['photos']['split']}) is an "
             "unknown-product query once, and a kept product's photo a known query in each other set "
             f"({r['photos']['known_measured']} known queries pooled). *Scenes*: 300 no-product scenes cut from "
             f"{split} photos (`bench/negatives.py`), in every set. 95 % intervals resample products (a product's "
             f"photos in every set together) and scenes: {r['bootstrap']['rounds']} resamples, seed "
             f"{r['bootstrap']['seed']}. *Unknown refused by set*: the lowest and highest set. Nothing is chosen "
             "from these figures.", ""]
    head = ["rule", "refused of correct", "answered right", "unknown products refused", "unknown refused by set",
            "named wrong", "right when named", "scenes refused", "chosen"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, x in r["rules"].items():
        each = x["unknown_rejected_by_set"]
        lines.append("| " + " | ".join(
            [name] + [stats.fmt(x[f]) for f in FIGURES[:3]] + [f"{100 * min(each):.1f} – {100 * max(each):.1f} %"]
            + [stats.fmt(x[f]) for f in FIGURES[3:]] + ["✔" if x["chosen_by_export"] else ""]) + " |")
    chosen = next((x for x in r["rules"].values() if x["chosen_by_export"]), None)
    if chosen:
        met = lambda v, ok: "met" if ok(v["value"]) else "not met"  # noqa: E731
        lines += ["", "Targets (the bundle's rule): non-product photos rejected "
                      f"{stats.fmt(chosen['scenes_rejected'])} (≥ 90 %: {met(chosen['scenes_rejected'], lambda v: v >= .9)}); "
                      f"unknown products rejected {stats.fmt(chosen['unknown_rejected'])} (≥ 50 %: "
                      f"{met(chosen['unknown_rejected'], lambda v: v >= .5)}); correctly named photos rejected "
                      f"{stats.fmt(chosen['false_reject_of_correct'])} (≤ 5 %: "
                      f"{met(chosen['false_reject_of_correct'], lambda v: v <= .05)})."]
    lines += ["", f"Run time {r['seconds']:.0f} s."]
    atomic_write_text(path, "\n".join(lines) + "\n")


if __name__ == "__main__":
    script.run(main, "bench/unknowns.py")
