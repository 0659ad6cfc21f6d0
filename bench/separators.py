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
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import numpy as np  # noqa: E402

from bench.grocery import SEPARATORS, _embed, _scores, _searcher, budget_cut  # noqa: E402
from bench.grocery_data import DEFAULT_DATA  # noqa: E402
from bench.negatives import build_negatives  # noqa: E402
from edge_search.core.images import load_image  # noqa: E402
from edge_search.core.search import Searcher  # noqa: E402
from edge_search.errors import EdgeSearchError  # noqa: E402
from edge_search.evaluation.evaluate import read_queries  # noqa: E402
from edge_search.files import atomic_write_text  # noqa: E402


def cut_figures(known: dict, right: np.ndarray, others: dict[str, dict], budget: float) -> dict:
    """Per separator: the cut refusing at most `budget` of the correctly named queries (`right` within
    `known`), and the share of each other set below it."""
    out = {}
    for sep in SEPARATORS:
        if sep not in known or not right.any():
            continue
        cut = budget_cut(known[sep][right], budget)
        out[sep] = {"cut": cut, "false_reject_of_correct": float((known[sep][right] < cut).mean()),
                    **{f"{name}_rejected": float((sc[sep] < cut).mean()) for name, sc in others.items()
                       if sep in sc and len(sc[sep])}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--queries", type=Path, required=True, help="a query CSV (image,id) of dev photos")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the dataset, for the dev negatives")
    ap.add_argument("--negatives", type=int, default=300, help="no-product scenes cut from dev photos")
    ap.add_argument("--leave-out", type=int, default=10)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--budget", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench-out/separators-dev.json"))
    a = ap.parse_args(argv)
    if a.draws < 1 or not 0 < a.budget < 1 or a.negatives < 1:
        ap.error("--draws and --negatives must be 1 or more, --budget between 0 and 1")

    student = Searcher.from_bundle(a.bundle, threads=2)
    pp = student.manifest.preprocess
    products = list(student.products.products)
    if not 1 <= a.leave_out < len(products) - 1:
        ap.error(f"--leave-out must be 1 to {len(products) - 2}: the bundle has {len(products)} products")
    n_keys = sum(len(p.keys) for p in products)
    if not hasattr(student.index, "index"):
        raise SystemExit(f"{a.bundle}: a bundle with a delta segment; rebuild it whole first")
    vectors = np.asarray(student.index.index.get(np.arange(n_keys, dtype=np.uint64)), np.float32)
    queries = read_queries(a.queries)
    q_vecs = _embed(student.encoder, [load_image(q.image) for q in queries], pp)
    q_ids = np.asarray([q.id for q in queries], object)
    with tempfile.TemporaryDirectory() as tmp:
        scenes = build_negatives(a.data, Path(tmp) / "dev", split="dev", count=a.negatives, seed=a.seed)
        n_vecs = _embed(student.encoder, [load_image(p) for p in scenes], pp)

    draws = []
    rng = np.random.default_rng([a.seed, 10])
    for _ in range(a.draws):
        left = set(rng.choice(len(products), a.leave_out, replace=False).tolist())
        kept = [i for i in range(len(products)) if i not in left]
        left_ids = {products[i].id for i in left}
        searcher = _searcher(student.encoder, vectors, products, pp, keep=kept)
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
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EdgeSearchError as e:
        print(f"bench/separators.py: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
