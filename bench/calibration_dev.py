"""The no-match calibration's objective on the DEV split, before val.

    .venv/bin/python bench/calibration_dev.py --bundle bench-out/grocery-lr6e-4/bundle \
        --queries bench-out/grocery-lr6e-4/data/dev.csv --fit bench-out/grocery-lr6e-4/data/fit.csv \
        --train-negatives bench-out/grocery-lr6e-4/negatives/train-300-seed0 --out bench-out/calibration-dev.json

Refits the bundle's "no match" rule as `edge-search export` does (export/calibrate.py: its calibration photos
are the export's held-back fit photos, its negatives the export's), once for each objective:
`refuse_wrong` off (refuse simulated unknown products and no-product scenes) and on (the calibration photos
the model names as another product count too). Each fit keeps the rule its own cross-validation chooses.
Then on the dev photos through the bundle's student: answered right, named wrong and right when named (full
catalog), unknown products refused (`--draws` of `--leave-out` products left out of the index), dev
no-product scenes refused. Chosen by (decided before this ran): answered right minus named wrong.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import numpy as np  # noqa: E402

from bench import dev_setup, script, stats  # noqa: E402
from bench.grocery import _embed, _searcher, _wrong_names  # noqa: E402
from edge_search.core.images import load_image  # noqa: E402
from edge_search.evaluation.no_match import NoMatchOutcomes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dev_setup.add_arguments(ap, out="bench-out/calibration-dev.json")
    ap.add_argument("--fit", type=Path, required=True, help="the export's --finetune-labeled CSV (fit photos)")
    ap.add_argument("--holdout", type=float, default=None, help="its held-back share (default: the export's)")
    ap.add_argument("--train-negatives", type=Path, default=None, help="the export's --negatives folder")
    a = ap.parse_args(argv)
    d = dev_setup.open_setup(a, ap)

    from edge_search_export.calibrate import calibrate_no_match
    from edge_search_export.config import FinetuneSettings, NoMatchSettings
    from edge_search_export.finetune import read_labeled
    from edge_search_export.scenes import read_negatives

    bundle, products, pp = d.bundle, d.products, d.preprocess
    labeled = read_labeled(a.fit, [p.id for p in products])
    _, held = labeled.split(FinetuneSettings().holdout if a.holdout is None else a.holdout)
    cal_vecs = _embed(bundle.encoder, [load_image(labeled.paths[i]) for i in held], pp)
    cal_truth = labeled.products[held]
    train_negs = _embed(bundle.encoder, read_negatives(a.train_negatives, a.seed, False), pp) \
        if a.train_negatives else None
    q_vecs = _embed(bundle.encoder, [load_image(q.image) for q in d.queries], pp)
    ids = np.asarray([q.id for q in d.queries], object)
    scene_vecs = _embed(bundle.encoder, d.scenes, pp)
    full = _searcher(bundle.encoder, d.vectors, products, pp)
    idx = stats.resamples(len(ids), stream=61)
    base = bundle.manifest.calibration
    budget = base.max_false_reject if base is not None else NoMatchSettings().max_false_reject
    rows = {}
    for name, refuse_wrong in (("unknowns and scenes", False), ("unknowns, wrong answers and scenes", True)):
        settings = NoMatchSettings(max_false_reject=budget, refuse_wrong=refuse_wrong)
        rule, floor, fit = calibrate_no_match(full, cal_vecs, cal_truth, settings, source="bench", seed=a.seed,
                                              negatives=train_negs)
        if rule is None:
            raise SystemExit(f"bench/calibration_dev.py: no rule could be fitted ({fit.get('reason')})")
        searcher = lambda keep=None: _searcher(bundle.encoder, d.vectors, products, pp, keep=keep,  # noqa: E731
                                              calibration=rule, min_score=floor, negatives=train_negs)
        s = searcher()
        top = np.asarray([s.search_vector(v, k=1, min_score=-np.inf)[0][0].id for v in q_vecs], object)
        named = np.asarray([bool(s.search_vector(v, k=1)[0]) for v in q_vecs])
        right = top == ids
        unknown = []
        for left in d.draws:
            left_ids = {products[i].id for i in left}
            kept = searcher([i for i in range(len(products)) if i not in left])
            mine = q_vecs[np.asarray([pid in left_ids for pid in ids])]
            unknown.append(float(np.mean([not kept.search_vector(v, k=1)[0] for v in mine])))
        rows[name] = {"rule": rule.rule, "min_margin": rule.min_margin, "min_score": floor,
                      "calibration": {k: fit.get(k) for k in ("reject_recall", "wrong_refused", "negative_reject",
                                                              "false_reject_of_correct")},
                      "answered_right": stats.share(right & named, idx).to_json(),
                      **_wrong_names(NoMatchOutcomes(right=right, refused=~named), idx),
                      "false_reject_of_correct": stats.share(~named, idx, within=right).to_json(),
                      "right_minus_wrong": round(float((right & named).mean() - (named & ~right).mean()), 4),
                      "unknown_refused": round(float(np.mean(unknown)), 4),
                      "dev_scenes_refused": round(float(np.mean([not s.search_vector(v, k=1)[0]
                                                                 for v in scene_vecs])), 4)}
        r = rows[name]
        print(f"{name:36s} {r['rule']:34s} right {stats.fmt(r['answered_right'])}  wrong "
              f"{stats.fmt(r['named_wrong'])}  right when named {stats.fmt(r['right_when_named'])}  refused of "
              f"correct {stats.fmt(r['false_reject_of_correct'])}  unknown {r['unknown_refused']:.3f}  scenes "
              f"{r['dev_scenes_refused']:.3f}", flush=True)
    chosen = max(rows, key=lambda n: rows[n]["right_minus_wrong"])
    print(f"chosen: {chosen}")
    script.write_report(a.out, {
        "command": " ".join([".venv/bin/python", "bench/calibration_dev.py"] +
                            (argv if argv is not None else sys.argv[1:])),
        "bundle": str(a.bundle), "queries": len(ids), "calibration_photos": int(len(held)),
        "train_negatives": 0 if train_negs is None else int(len(train_negs)), "dev_scenes": len(d.scenes),
        "budget": budget, "leave_out": a.leave_out, "draws": a.draws, "seed": a.seed,
        "bootstrap_seed": stats.SEED, "objectives": rows, "chosen": chosen})
    return 0


if __name__ == "__main__":
    script.run(main, "bench/calibration_dev.py")
