"""A bundle on the DEV photos under seeded store-like shifts: which change of store the model cannot absorb.

    .venv/bin/python bench/shifts.py --bundle bench-out/grocery-e42/bundle \
        --queries bench-out/grocery-e42/data/dev.csv --out bench-out/shifts-dev.json

Dev photos come from the train photos' own shooting sessions, so they score like the calibration photos:
the bundle's rule refuses about its budget of their right answers there, and several times that on val's
store. This applies one seeded change to every dev photo at a time (SHIFTS: a colour cast, a gamma curve,
blur, a lower resolution, all four; and gray-world white balance, the usual undoing of a cast) and reports, through the bundle as shipped (its student, index and
no-match rule, full catalog): R@1, right answers refused by the rule, and the right answers' score
percentiles. A shift that moves these towards val's figures is one the training never showed the model.
Val is never read here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench import script, stats  # noqa: E402
from bench.grocery import _embed  # noqa: E402
from edge_search.core.images import load_image  # noqa: E402
from edge_search.core.search import RANK_ALL, Searcher  # noqa: E402
from edge_search.evaluation.evaluate import read_queries  # noqa: E402


def colour_cast(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each channel times its own gain in [0.8, 1.2]: another light's colour temperature, another
    camera's white balance."""
    return np.clip(rgb.astype(np.float32) * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)


def gamma(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(255 * (rgb.astype(np.float32) / 255) ** rng.uniform(0.7, 1.4), 0, 255).astype(np.uint8)


def blur(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.8, 1.6))


def low_resolution(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down to 40-60 % of the side and back: a farther or cheaper camera."""
    h, w = rgb.shape[:2]
    f = rng.uniform(0.4, 0.6)
    small = cv2.resize(rgb, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def all_four(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return low_resolution(blur(gamma(colour_cast(rgb, rng), rng), rng), rng)


def gray_world(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Not a shift but the textbook undoing of one: each channel scaled so its mean is the photo's grey
    mean. Applied to the query alone, as a device could without retraining."""
    x = rgb.astype(np.float32)
    means = x.reshape(-1, 3).mean(0)
    return np.clip(x * (means.mean() / np.maximum(means, 1.0)), 0, 255).astype(np.uint8)


SEED = 5  # --seed's default; bench/teacher_recipe.py --shift draws the same streams

SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray] | None] = {
    "none": None, "colour cast": colour_cast, "gamma": gamma, "blur": blur, "low resolution": low_resolution,
    "all four": all_four, "gray-world balance, query only": gray_world}


def apply_shift(images: list[np.ndarray], name: str, seed: int = SEED) -> list[np.ndarray]:
    """`images` under the shift `name`, drawn from that shift's own seeded stream, so every script that
    names a shift (this one, bench/teacher_recipe.py and bench/student_recipe.py --shift) sees the same photos."""
    change = SHIFTS[name]
    if change is None:
        return images
    rng = np.random.default_rng([seed, list(SHIFTS).index(name)])
    return [change(im, rng) for im in images]


def shift_figures(searcher: Searcher, vectors: np.ndarray, ids: list[str], idx: np.ndarray) -> dict:
    """R@1 and the rule's refusals of right answers, with intervals; the right answers' score percentiles."""
    right, refused, scores = [], [], []
    for v, pid in zip(vectors, ids):
        top = searcher.search_vector(v, k=1, min_score=RANK_ALL)[0][0]
        right.append(top.id == pid)
        refused.append(not searcher.search_vector(v, k=1)[0])
        scores.append(top.score)
    right, refused, scores = np.asarray(right), np.asarray(refused), np.asarray(scores)
    ok = scores[right]
    return {"recall@1": stats.share(right, idx).to_json(),
            "right_refused": stats.share(refused, idx, within=right).to_json() if right.any() else None,
            "right_score_p5": round(float(np.percentile(ok, 5)), 4) if len(ok) else None,
            "right_score_p50": round(float(np.percentile(ok, 50)), 4) if len(ok) else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--queries", type=Path, required=True, help="a query CSV (image,id) of dev photos")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=Path, default=Path("bench-out/shifts-dev.json"))
    a = ap.parse_args(argv)
    bundle = Searcher.from_bundle(a.bundle, threads=2)
    pp = bundle.manifest.preprocess
    queries = read_queries(a.queries)
    images = [load_image(q.image) for q in queries]
    ids = [q.id for q in queries]
    idx = stats.resamples(len(queries), stream=3)
    rows = {}
    for name in SHIFTS:
        rows[name] = shift_figures(bundle, _embed(bundle.encoder, apply_shift(images, name, a.seed), pp), ids, idx)
        r = rows[name]
        refused = "-" if r["right_refused"] is None else f"{r['right_refused']['value']:.3f}"
        print(f"{name:31s} R@1 {r['recall@1']['value']:.3f}  right answers refused {refused}  "
              f"right score p5 / p50 {r['right_score_p5']} / {r['right_score_p50']}")
    report = {"command": " ".join(["bench/shifts.py"] + (argv if argv is not None else sys.argv[1:])),
              "bundle": str(a.bundle), "queries": len(queries), "seed": a.seed, "shifts": rows}
    script.write_report(a.out, report)
    return 0


if __name__ == "__main__":
    script.run(main, "bench/shifts.py")
