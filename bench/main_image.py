"""A product's main image as a second witness when a store's shelf photos are in its catalog (issue #12).

    .venv/bin/python bench/main_image.py --run bench-out/grocery-distil-cast --split dev --out bench-out/main-image-dev

With shelf photos in the index (bench/site_photos.py), a product's score is its best image's: a photo of a
product the store does not sell finds a lookalike's shelf photo, shot in the same light, and the product
shot beside it on the shelf finds its neighbour's. Here each product scores the mean of its best image's
score and its main image's (the catalog's studio image, the product's first: its thumbnail), so a shelf
photo names a product only when its studio image agrees. A product with one image scores as before.

Measured as site_photos.py measures the recipe: each product's first (--site-from last: last) --site
photos of the split are its shelf photos, the rest queries, over --rotate left-out sets that partition
the catalog (each product left out once, its photos then unknown queries), pooled; the store's catalog is
the kept products. The rule here is one flat floor on the product score, fitted per set to refuse at most
5 % of the export's calibration photos (its held-back fit photos) that the same scoring names right, for
both scorings alike: not the bundle's own rule, so the figures compare the two scorings with each other.
Scores are exact cosines in numpy (an f32 index of the same vectors). Intervals resample products
(stats.clustered_share). Writes OUT/result.json and a Markdown table (--md).
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
from bench.grocery import REFERENCE_TEACHER, _embed  # noqa: E402
from bench.pooled import partition  # noqa: E402
from bench.site_photos import calibration_set, grocery_run, run_models, site_split, write_result  # noqa: E402
from edge_search.core.images import load_image  # noqa: E402
from edge_search.evaluation.evaluate import read_queries  # noqa: E402
from edge_search.files import atomic_write_text  # noqa: E402

SCORINGS = ("best image", "mean of best and main image")
BUDGET = 0.05


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def product_scores(queries: np.ndarray, main: list[np.ndarray], others: list[np.ndarray | None],
                   kept: np.ndarray) -> dict[str, np.ndarray]:
    """queries x products, per scoring. `main[j]`: product j's main image's vectors (one per catalog
    encoder), `others[j]`: its other images' (None: it has none); a product not `kept` scores -inf.
    An image's score is its best vector's cosine."""
    q = _unit(np.asarray(queries, np.float32))
    main_s = np.stack([(q @ _unit(v).T).max(1) for v in main], 1)
    best = main_s.copy()
    for j, v in enumerate(others):
        if v is not None and len(v):
            best[:, j] = np.maximum(best[:, j], (q @ _unit(v).T).max(1))
    main_s[:, ~kept] = best[:, ~kept] = -np.inf
    return {SCORINGS[0]: best, SCORINGS[1]: (best + main_s) / 2}


def flat_floor(scores: np.ndarray, truth: np.ndarray, budget: float = BUDGET) -> float:
    """The floor that refuses at most `budget` of the queries these scores name right."""
    top, s1 = scores.argmax(1), scores.max(1)
    right = s1[top == truth]
    return stats.budget_cut(right, budget) if len(right) else -np.inf


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, metavar="DIR", help="a bench/grocery.py --out")
    ap.add_argument("--out", required=True, metavar="DIR")
    ap.add_argument("--md", default=None, help="also write the table here (default OUT/main-image.md)")
    ap.add_argument("--split", choices=("dev", "val"), default="dev")
    ap.add_argument("--site", type=int, default=2)
    ap.add_argument("--site-from", choices=("first", "last"), default="first")
    ap.add_argument("--rotate", type=int, default=8)
    ap.add_argument("--teacher", default=str(REFERENCE_TEACHER))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.site < 1 or args.rotate < 2:
        ap.error("--site must be at least 1 and --rotate at least 2")
    run, report = grocery_run(ap, args.run)
    return _measure(args, run, Path(args.out), report)


def _measure(args, run: Path, out: Path, report: dict) -> int:
    t0 = time.perf_counter()
    rm = run_models(run, report, args.teacher, args.threads, args.seed)
    student, s_pp = rm.student, rm.student.manifest.preprocess
    ids = [p.id for p in rm.products]
    encoders = [b for b in student.manifest.index.catalog_encoder.split("+") if b != "views"]
    embed = {"student": lambda imgs: _embed(student.encoder, imgs, s_pp),
             "teacher": lambda imgs: _embed(rm.t_enc, imgs, rm.t_pp)}
    # each product's main image: its catalog row's vectors, one per catalog encoder, as the bundle holds them
    n_cat = len(ids)
    blocks = student.manifest.index.catalog_encoder.split("+")
    main_vecs = [np.stack([rm.bundle_catalog[blocks.index(e) * n_cat + j] for e in encoders]) for j in range(n_cat)]
    rows = read_queries(run / "data" / f"{args.split}.csv")
    images = [load_image(r.image) for r in rows]
    photo = {e: dict(zip([r.image for r in rows], embed[e](images))) for e in set(encoders) | {"student"}}
    s_photo = photo["student"]
    del images
    cal, cal_truth, _ = calibration_set(run, rm, args.seed)

    groups = partition(ids, args.rotate, args.seed)
    pooled = {s: {"right": [], "refused": [], "unknown_refused": [], "known_ids": [], "unknown_ids": []}
              for s in SCORINGS}
    floors = {s: [] for s in SCORINGS}
    for group in groups:
        left = set(group)
        sites, known, unknown = site_split(rows, args.site, left, last=args.site_from == "last")
        kept = np.array([pid not in left for pid in ids])
        others = [np.stack([photo[e][r.image] for r in sites[pid] for e in encoders]) if pid in sites else None
                  for pid in ids]
        q_rows = known + unknown
        q = product_scores(np.stack([s_photo[r.image] for r in q_rows]), main_vecs, others, kept)
        c_in = kept[cal_truth]
        c = product_scores(cal[c_in], main_vecs, others, kept)
        pos = {pid: j for j, pid in enumerate(ids)}
        truth = np.asarray([pos[r.id] for r in q_rows])
        is_known = np.arange(len(q_rows)) < len(known)
        for s in SCORINGS:
            floor = flat_floor(c[s], cal_truth[c_in])
            floors[s].append(floor)
            top, s1 = q[s].argmax(1), q[s].max(1)
            p = pooled[s]
            p["right"].append((top == truth)[is_known])
            p["refused"].append((s1 < floor)[is_known])
            p["unknown_refused"].append((s1 < floor)[~is_known])
            p["known_ids"] += [r.id for r in known]
            p["unknown_ids"] += [r.id for r in unknown]
    result_rows = {}
    for s, p in pooled.items():
        right, refused = np.concatenate(p["right"]), np.concatenate(p["refused"])
        unknown_refused = np.concatenate(p["unknown_refused"])
        kc, uc = np.asarray(p["known_ids"], object), np.asarray(p["unknown_ids"], object)
        ones = np.ones(len(right), bool)
        named = np.concatenate([~refused, ~unknown_refused])
        right_named = np.concatenate([right & ~refused, np.zeros(len(unknown_refused), bool)])
        allc = np.concatenate([kc, uc])
        result_rows[s] = {
            "recall@1": stats.clustered_share(right, ones, kc, stream=21).to_json(),
            "answered_right": stats.clustered_share(right & ~refused, ones, kc, stream=21).to_json(),
            "false_reject_of_correct": stats.clustered_share(refused, right, kc, stream=21).to_json(),
            "unknown_rejected": stats.clustered_share(unknown_refused, np.ones(len(unknown_refused), bool), uc,
                                                      stream=22).to_json(),
            "named_wrong": stats.clustered_share(named & ~right_named, np.ones(len(named), bool), allc,
                                                 stream=23).to_json(),
            "floors": [round(f, 4) for f in floors[s]]}
    command = ".venv/bin/python bench/main_image.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = {"command": command, "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "run": str(run),
              "split": args.split, "site": args.site, "site_from": args.site_from, "left_out": groups,
              "budget": BUDGET, "rows": result_rows, "seconds": round(time.perf_counter() - t0, 1)}
    write_result(out, result, Path(args.md) if args.md else out / "main-image.md", _markdown)
    for s, x in result_rows.items():
        print(f"{s}: R@1 {stats.fmt(x['recall@1'])}; answered right {stats.fmt(x['answered_right'])}; refused of "
              f"correct {stats.fmt(x['false_reject_of_correct'])}; unknown refused {stats.fmt(x['unknown_rejected'])}")
    return 0


def _markdown(r: dict, path: Path) -> None:
    lines = [f"# A product's main image as a second witness ({r['split']})", "",
             f"Written by `bench/main_image.py` on {r['written']}; do not edit by hand. Every figure comes from one "
             "run of this command (from the repository root):", "", f"    {r['command']}", "",
             f"Models and calibration photos: `{r['run']}`. Each product's {r['site_from']} {r['site']} "
             f"{r['split']} photos are its shelf photos, in the store's catalog beside its studio image; the rest "
             f"are queries; {len(r['left_out'])} left-out sets partition the catalog, each product left out once "
             "(its photos then unknown-product queries), pooled. Rule: one flat floor per set, refusing at most "
             f"{r['budget']:.0%} of the export's calibration photos named right by the same scoring (not the "
             "bundle's own rule: the two scorings are compared with each other). Intervals resample products. "
             "R@1 and the rest over the kept products' queries, unknown refused over the left-out ones'.", ""]
    head = ["product score", "R@1", "answered right", "refused of correct", "unknown refused", "named wrong"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s, x in r["rows"].items():
        lines.append("| " + " | ".join([s] + [stats.fmt(x[f]) for f in (
            "recall@1", "answered_right", "false_reject_of_correct", "unknown_rejected", "named_wrong")]) + " |")
    lines += ["", f"Run time {r['seconds']:.0f} s."]
    atomic_write_text(path, "\n".join(lines) + "\n")


if __name__ == "__main__":
    script.run(main, "bench/main_image.py")
