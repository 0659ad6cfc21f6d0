"""What a no-match rule on one number could do on the DEV split, before a val photo is looked at.

    .venv/bin/python bench/separators.py --bundle bench-out/grocery-lr6e-4/bundle \
        --queries bench-out/grocery-lr6e-4/data/dev.csv --out bench-out/separators-dev.json

Every single-number separator of bench/grocery.py (SEPARATORS) on a bundle's own student and index, the
dev photos as queries: `--draws` random sets of `--leave-out` products removed from the index; in each, the
separator's cut that refuses at most `--budget` of the correctly named photos of kept products, and what
that cut refuses of the left-out products' photos and of no-product scenes cut from dev photos
(bench/negatives.py, split dev). Means over the draws, with each draw's figures in the JSON. A separator
that refuses fewer unknown products than the top score here is not worth a rule (grocery.md's separability
table then shows the same separators on val, cut on val).
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
from bench.grocery import SEPARATORS, _embed, _scores, _searcher  # noqa: E402
from edge_search.core.images import load_image  # noqa: E402


def cut_figures(known: dict, right: np.ndarray, others: dict[str, dict], budget: float) -> dict:
    """Per separator: the cut refusing at most `budget` of the correctly named queries (`right` within
    `known`), the share of each other set below it, and how well it ranks right answers above wrong ones."""
    out = {}
    for sep in SEPARATORS:
        if sep not in known or not right.any():
            continue
        cut = stats.budget_cut(known[sep][right], budget)
        out[sep] = {"cut": cut, "false_reject_of_correct": float((known[sep][right] < cut).mean()),
                    "auc_right_vs_wrong": stats.auc_value(np.asarray(known[sep], float), right),
                    **{f"{name}_rejected": float((sc[sep] < cut).mean()) for name, sc in others.items()
                       if sep in sc and len(sc[sep])}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dev_setup.add_arguments(ap, out="bench-out/separators-dev.json")
    ap.add_argument("--budget", type=float, default=0.05)
    a = ap.parse_args(argv)
    if not 0 < a.budget < 1:
        ap.error("--budget must be between 0 and 1")
    d = dev_setup.open_setup(a, ap)
    student, pp, products, queries = d.bundle, d.preprocess, d.products, d.queries
    q_vecs = _embed(student.encoder, [load_image(q.image) for q in queries], pp)
    q_ids = np.asarray([q.id for q in queries], object)
    n_vecs = _embed(student.encoder, d.scenes, pp)

    draws = []
    for left in d.draws:
        kept = [i for i in range(len(products)) if i not in left]
        left_ids = {products[i].id for i in left}
        searcher = _searcher(student.encoder, d.vectors, products, pp, keep=kept)
        unknown = np.asarray([pid in left_ids for pid in q_ids])
        known = _scores(searcher, q_vecs[~unknown], None)
        right = known["top"] == q_ids[~unknown]
        others = {"unknown": _scores(searcher, q_vecs[unknown], None),
                  "dev_negatives": _scores(searcher, n_vecs, None)}
        draws.append(cut_figures(known, right, others, a.budget))
    mean = {sep: {k: round(float(np.mean([d[sep][k] for d in draws])), 4) for k in draws[0][sep] if k != "cut"}
            for sep in draws[0]}
    report = {"command": " ".join(["bench/separators.py"] + (argv if argv is not None else sys.argv[1:])),
              "bundle": str(a.bundle), "queries": len(queries), "dev_negatives": len(n_vecs),
              "leave_out": a.leave_out, "draws": a.draws, "budget": a.budget, "seed": a.seed,
              "mean_over_draws": mean, "by_draw": draws}
    for sep, row in mean.items():
        print(f"{sep:45s} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))
    script.write_report(a.out, report)
    return 0


if __name__ == "__main__":
    script.run(main, "bench/separators.py")
