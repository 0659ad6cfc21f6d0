"""Retrieval quality on real store photos: the Grocery Store benchmark (issues #4, #12).

    .venv/bin/python bench/grocery.py --data ../shared/datasets/grocery-store --out bench-out/grocery

Protocol. The dataset's train photos are split once (`grocery_data.dev_split`,
a contiguous block of each product's photo sequence) into FIT photos, the
only ones any model or rule is trained or calibrated on, and DEV photos, on
which every choice (the teacher recipe, settings) is made. The val photos
are used once, here, for the report. Every share carries a 95 % bootstrap
interval (`bench/stats.py`: photos resampled, seed stated).

One command, cached in --out (a second run reuses the export):
  1. catalog.csv (one studio image per product), fit/dev/val query CSVs and
     negatives folders (`bench/negatives.py`: train negatives for the
     export, val negatives for the report), all pointing into the dataset
     or written under OUT;
  2. `edge-search export`: the reference teacher trained from random weights
     by --finetune-labeled on the fit photos (or a trained one reused with
     --teacher-checkpoint), a student distilled on the catalog plus the fit
     photos, --negatives for the no-match rule;
  3. on the val photos: every encoder's recall (teacher PyTorch fp32, ONNX
     int8; student ONNX fp32, int8 = the bundle; a colour histogram), the
     bundle's "answered right" (rule applied) beside its raw R@1, and the
     student / teacher R@1 ratio;
  4. the catalog embedded by the teacher, the student or both: val recall
     and catalog self-retrieval (its own images, mild views);
  5. no match with --leave-out products left out: every calibration rule
     (export/calibrate.py RULES, each fitted to the same false-reject budget
     on the export's calibration photos) on val photos of kept products,
     of left-out products and on val negatives; plus an independent check on
     scikit-image's bundled sample images, which nobody trained or tuned on;
  6. k = 0, 1, 3, 5 in-store fit photos per product added to the catalog
     (the bundle's models reused, the index and the rule rebuilt);
  7. words: held-out phrasings (bench/grocery_phrasings.csv) -> product;
  8. speed: the shipped student against the same teacher (its int8 ONNX each alone in a fresh process per
     round, as the export times its candidates; its PyTorch form in the benchmark's process).
Writes OUT/report.json and a Markdown table (--md, default
docs/benchmarks/grocery.md for a full run) naming the command of every figure.

The machine is shared: torch's OpenMP threads spin-wait by default, and under
contention that made a training step 5x slower (measured), so passive waiting
is set before torch loads.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import numpy as np  # noqa: E402

from bench import stats  # noqa: E402
from bench.grocery_data import DEFAULT_DATA, dev_split, read_classes, write_catalog, write_queries  # noqa: E402
from bench.grocery_report import write_markdown, print_summary  # noqa: E402
from bench.pooled import partition, pooled_figures  # noqa: E402
from edge_search.core.catalog import read_catalog  # noqa: E402
from edge_search.core.encoder import OnnxEncoder  # noqa: E402
from edge_search.evaluation.evaluate import Query, read_queries  # noqa: E402
from edge_search.evaluation.no_match import NoMatchOutcomes, Share  # noqa: E402
from edge_search.files import atomic_write_text, sha256_file  # noqa: E402
from edge_search.core.images import load_image  # noqa: E402
from edge_search.core.index import VectorIndex  # noqa: E402
from edge_search.core.manifest import PreprocessCfg  # noqa: E402
from edge_search.core.preprocess import preprocess_batch  # noqa: E402
from edge_search.core.products import Product, ProductTable  # noqa: E402
from edge_search.core.search import RANK_ALL, Searcher  # noqa: E402

# the reference teacher, its recipe chosen on the dev split (bench/teacher_recipe.py): ResNet-18, runs at 192 px
REFERENCE_TEACHER = REPO / "models" / "teachers" / "grocery-resnet.json"
PHRASINGS = REPO / "bench" / "grocery_phrasings.csv"
DEFAULT_MD = REPO / "docs" / "benchmarks" / "grocery.md"
K_PHOTOS = (0, 1, 3, 5)
SPEED_CALLS = 30  # timed calls per model per round (after the timing process's own warm-up)
# scikit-image's bundled sample images that are not products: the independent non-product check
SKIMAGE_IMAGES = ("astronaut", "brick", "camera", "cat", "coffee", "coins", "colorwheel", "grass", "gravel",
                  "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina", "rocket",
                  "text")


class TorchEncoder:
    """The teacher's PyTorch image tower behind the runtime's Encoder protocol."""

    def __init__(self, teacher):
        self.teacher, self.embed_dim = teacher, teacher.embed_dim

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return self.teacher.encode(batch)


class HistogramEncoder:
    """No model: a hue-saturation-value colour histogram (Hellinger-normalized)."""

    embed_dim = 8 * 4 * 4

    def __init__(self, pp: PreprocessCfg):
        self.mean = np.asarray(pp.mean, np.float32)[:, None, None]
        self.std = np.asarray(pp.std, np.float32)[:, None, None]

    def embed(self, batch: np.ndarray) -> np.ndarray:
        import cv2

        out = []
        for x in batch:
            rgb = np.clip((x * self.std + self.mean) * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)
            hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
            h = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
            h = np.sqrt(h / max(h.sum(), 1))
            out.append(h - h.mean())  # centred: cosine then measures shape, not the shared positive offset
        v = np.asarray(out, np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def timed_blocks(encoders: dict, batches: dict[str, np.ndarray], rounds: int, block: int = 3
                 ) -> dict[str, list[float]]:
    """ms per call of each encoder, in rounds: one untimed call, then `block` timed ones, each encoder in turn."""
    times: dict[str, list[float]] = {k: [] for k in encoders}
    for _ in range(rounds):
        for k, enc in encoders.items():
            enc.embed(batches[k])
            for _ in range(block):
                t0 = time.perf_counter()
                enc.embed(batches[k])
                times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def _cached(out: Path, name: str, settings: dict, paths: list[Path]) -> bool:
    stamp = out / "cache" / f"{name}.json"
    return stamp.is_file() and json.loads(stamp.read_text()) == settings and all(p.exists() for p in paths)


def _stamp(out: Path, name: str, settings: dict) -> None:
    (out / "cache").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "cache" / f"{name}.json", json.dumps(settings, sort_keys=True, default=str))


def _embed(encoder, images: list[np.ndarray], pp: PreprocessCfg, batch: int = 32) -> np.ndarray:
    if not images:
        return np.zeros((0, encoder.embed_dim), np.float32)
    return np.concatenate([encoder.embed(preprocess_batch(images[i:i + batch], pp))
                           for i in range(0, len(images), batch)])


def _searcher(encoder, vectors: np.ndarray, products: list[Product], pp: PreprocessCfg, *, dtype: str = "f32",
              exact: bool = True, keep: list[int] | None = None, calibration=None, min_score: float = 0.0,
              negatives: np.ndarray | None = None, extra: dict[str, np.ndarray] | None = None) -> Searcher:
    """An in-memory searcher over (a subset of) the products. `vectors` holds one
    row per catalog key (several blocks of them: teacher + student catalogs),
    `extra` more vectors per product id (in-store photos added to the catalog)."""
    keep = list(range(len(products))) if keep is None else keep
    n_keys = sum(len(p.keys) for p in products)
    blocks = len(vectors) // n_keys
    rows, new = [], []
    for p in (products[i] for i in keep):
        own = [k + b * n_keys for b in range(blocks) for k in p.keys]
        add = [] if not extra or p.id not in extra else list(extra[p.id])
        new.append(replace(p, keys=tuple(range(len(rows), len(rows) + len(own) + len(add)))))
        rows += [vectors[k] for k in own] + add
    index = VectorIndex.build(np.asarray(rows, np.float32), dtype=dtype, exact=exact)
    table = ProductTable.from_products(new, len(rows))
    if calibration is not None:
        kept = {p.id for p in new}
        calibration = replace(calibration, product_min_score={k: v for k, v in calibration.product_min_score.items()
                                                              if k in kept})
    use_neg = negatives if calibration is not None and calibration.negatives else None
    return Searcher(encoder=encoder, index=index, products=table, preprocess_cfg=pp, min_score=min_score,
                    calibration=calibration, negatives=use_neg)


def _ranks(searcher: Searcher, vecs: np.ndarray, ids: list[str], k: int = 5) -> np.ndarray:
    """Each query's rank of its own product (k when not in the top k), no cut-off."""
    out = []
    for v, pid in zip(vecs, ids):
        got = [h.id for h in searcher.search_vector(v, k=k, min_score=RANK_ALL)[0]]
        out.append(got.index(pid) if pid in got else k)
    return np.asarray(out)


def _recall_row(ranks: np.ndarray, idx: np.ndarray) -> dict:
    return {"recall@1": stats.share(ranks < 1, idx).to_json(), "recall@5": stats.share(ranks < 5, idx).to_json()}


def _ci(share: Share, idx: np.ndarray) -> dict | None:
    """A no-match figure (edge_search.evaluation.no_match) with its bootstrap interval; None when undefined."""
    return None if share.value is None else stats.share(share.hits, idx, within=share.within).to_json()


def _refused(flags, idx: np.ndarray) -> dict | None:
    """Scenes with no product refused, with its interval (None for no scenes)."""
    return _ci(NoMatchOutcomes(negatives_refused=flags).shares()["negative_reject"], idx)


def _wrong_names(outcomes: NoMatchOutcomes, idx: np.ndarray) -> dict:
    """What a shopper meets (NoMatchOutcomes' `named_wrong` and `right_when_named`) with intervals; `idx`
    resamples every photo the outcomes hold, in-catalog first."""
    shares = outcomes.shares()
    return {"named_wrong": _ci(shares["named_wrong"], idx), "right_when_named": _ci(shares["right_when_named"], idx)}


def _rule_figures(searcher: Searcher, known: tuple[np.ndarray, list[str]], unknown: np.ndarray,
                  negatives: dict[str, np.ndarray], idx: dict[str, np.ndarray], outcomes: bool = False):
    """The searcher's own rule on val photos of kept products, of left-out ones, and on no-product sets.
    `outcomes`: -> (figures, {"photos": NoMatchOutcomes, each no-product set: its refused flags})."""
    rejected, right = [], []
    for v, pid in zip(*known):
        top = searcher.search_vector(v, k=1, min_score=RANK_ALL)[0][0].id
        rejected.append(not searcher.search_vector(v, k=1)[0])
        right.append(top == pid)
    refuse = lambda vecs: np.asarray([not searcher.search_vector(v, k=1)[0] for v in vecs], bool)  # noqa: E731
    photos = NoMatchOutcomes(right=right, refused=rejected, unknown_refused=refuse(unknown))
    shares = photos.shares()
    out = {"raw_recall@1": _ci(shares["top1"], idx["known"]),
           "answered_right": _ci(shares["answered_right"], idx["known"]),
           "false_reject_of_correct": _ci(shares["false_reject_of_correct"], idx["known"]),
           "unknown_rejected": _ci(shares["reject_recall"], idx["unknown"]),
           **_wrong_names(photos, idx["all"])}
    flags = {name: refuse(vecs) for name, vecs in negatives.items()}
    for name, refused in flags.items():
        out[f"{name}_rejected"] = _refused(refused, idx[name])
    return (out, {"photos": photos, **flags}) if outcomes else out


def every_product_out(encoder, catalog: np.ndarray, products: list[Product], pp: PreprocessCfg, fits: dict,
                      negatives: np.ndarray | None, vecs: np.ndarray, row_ids: list[str], scenes: np.ndarray,
                      sets: list[list[str]]) -> dict:
    """Each fitted rule (`fits`: name -> (rule, floor), fitted with the full catalog) applied with each of
    `sets` (left-out product sets that partition the catalog, bench/pooled.py) taken out of the index, on
    photos `vecs` of products `row_ids` and no-product `scenes`; -> {name: pooled figures}."""
    draws: dict[str, list] = {name: [] for name in fits}
    known_ids, unknown_ids = [], []
    for group in sets:
        left = set(group)
        kept = [i for i, p in enumerate(products) if p.id not in left]
        known = [i for i, pid in enumerate(row_ids) if pid not in left]
        unknown = [i for i, pid in enumerate(row_ids) if pid in left]
        known_ids += [row_ids[i] for i in known]
        unknown_ids += [row_ids[i] for i in unknown]
        idx = {"known": stats.resamples(len(known), stream=4), "unknown": stats.resamples(len(unknown), stream=5),
               "all": stats.resamples(len(row_ids), stream=8), "scenes": stats.resamples(len(scenes), stream=6)}
        for name, (rule, floor) in fits.items():
            s = _searcher(encoder, catalog, products, pp, keep=kept, calibration=rule, min_score=floor,
                          negatives=negatives)
            _, o = _rule_figures(s, (vecs[known], [row_ids[i] for i in known]), vecs[unknown], {"scenes": scenes},
                                 idx, outcomes=True)
            draws[name].append(o)
    return {name: pooled_figures(d, "scenes", known_ids, unknown_ids) for name, d in draws.items()}


BUDGETS = (0.05, 0.1, 0.2, 0.3)  # false-reject budgets the export's rule is also fitted to (no_match.budgets)
SEPARATORS = ("top-1 score", "margin over the runner-up", "top-1 minus nearest no-product scene",
              "top-1 minus the next 9 products' mean", "softmax share of the top product (T 0.05)")
SOFTMAX_T = 0.05  # a temperature of the order CLIP trains with (0.01) and above, where shares are not all 0 or 1
NEXT = 9  # products after the top one whose mean score is its baseline


def _scores(searcher: Searcher, vecs: np.ndarray, negatives: np.ndarray | None) -> dict[str, np.ndarray]:
    """Each query's value of every single-number separator (higher: more like a catalog product), and its
    top product's id under "top". The last two judge the top score against the query's own scores for the
    other products: a photo taken in other light scores lower against every product, not only its own."""
    top, ranked = [], []
    for v in vecs:
        hits = searcher.search_vector(v, k=len(searcher.products.products), min_score=RANK_ALL)[0]
        top.append(hits[0].id)
        ranked.append([h.score for h in hits])
    width = max((len(r) for r in ranked), default=0)
    s = np.full((len(ranked), max(width, 2)), np.nan)
    for i, r in enumerate(ranked):
        s[i, :len(r)] = r
    s1, s2 = s[:, 0], np.nan_to_num(s[:, 1], nan=-1.0)
    out = {"top": np.asarray(top, object), SEPARATORS[0]: s1, SEPARATORS[1]: s1 - s2}
    if negatives is not None and len(negatives) and len(vecs):
        out[SEPARATORS[2]] = s1 - (vecs @ negatives.T).max(1)
    if width > 1:
        out[SEPARATORS[3]] = s1 - np.nanmean(s[:, 1:1 + NEXT], axis=1)
        out[SEPARATORS[4]] = 1.0 / np.nansum(np.exp((s - s1[:, None]) / SOFTMAX_T), axis=1)
    return out


def _separability(searcher: Searcher, known: tuple[np.ndarray, list[str]], unknown: np.ndarray,
                  no_product: dict[str, np.ndarray], negatives: np.ndarray | None, idx: dict[str, np.ndarray],
                  budget: float) -> dict:
    """What the embedding allows, not a shipped rule: for each single-number separator, the cut chosen
    ON VAL to refuse at most `budget` of the correctly named val photos, and what it then refuses of unknown
    products and of scenes with no product. Every separator is compared at the same false-reject rate."""
    k = _scores(searcher, known[0], negatives)
    right = k["top"] == np.asarray(known[1], object)
    others = {"unknown": _scores(searcher, unknown, negatives),
              **{name: _scores(searcher, vecs, negatives) for name, vecs in no_product.items()}}
    out = {}
    for sep in SEPARATORS:
        if sep not in k or not right.any():
            continue
        cut = stats.budget_cut(k[sep][right], budget)
        row = {"cut": round(cut, 4),
               "false_reject_of_correct": stats.share(k[sep] < cut, idx["known"], within=right).to_json(),
               # does the number tell a right answer from a wrong one at all? (0.5: no better than a coin)
               "auc_right_vs_wrong": stats.auc(k[sep], right, idx["known"]).to_json(3)}
        for name, sc in others.items():
            vals = sc.get(sep)
            row[f"{name}_rejected"] = None if vals is None or not len(vals) else \
                stats.share(vals < cut, idx[name]).to_json()
        out[sep] = row
    return out


def _skimage_images() -> tuple[list[np.ndarray], str | None]:
    """scikit-image's bundled sample images as RGB uint8 (none, with the reason, when it is not installed)."""
    try:
        import skimage
        import skimage.data as data
    except ImportError:
        return [], "scikit-image is not installed (pip install 'edge-search[bench]')"
    out = []
    for name in SKIMAGE_IMAGES:
        img = np.asarray(getattr(data, name)())
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3].astype(np.uint8)))
    return out, f"scikit-image {skimage.__version__}: {', '.join(SKIMAGE_IMAGES)}"


def _write_rows(path: Path, rows: list[Query]) -> Path:
    """image,id CSV (paths relative to its folder) for rows read from another CSV."""
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["image", "id"])
    for r in rows:
        w.writerow([os.path.relpath(r.image, path.parent), r.id])
    atomic_write_text(path, text.getvalue())
    return path


def _link_photos(rows: list[Query], folder: Path) -> Path:
    """A folder of links to these photos (--distill-images): links, never copies."""
    for q in rows:
        link = folder / q.id / q.image.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(q.image.resolve())
    return folder


def _phrasings(products: list[Product]) -> list[tuple[str, str]]:
    ids = {p.id for p in products}
    with open(PHRASINGS, newline="", encoding="utf-8") as f:
        return [(r["phrasing"], r["id"]) for r in csv.DictReader(f) if r["id"] in ids]


def _words(student: Searcher, products: list[Product]) -> dict:
    """Word queries through the bundle's text search (exact lookup off): held-out phrasings, and
    the indexed names themselves (labelled: not held out)."""
    from bench.text import text_latency

    out = {}
    for name, queries in (("held_out_phrasings", _phrasings(products)),
                          ("indexed_names (not held out)", [(p.name, p.id) for p in products])):
        ranks = []
        for words, pid in queries:
            got = [h.id for h in student.search_text(words, k=5, exact_lookup=False).hits]
            ranks.append(got.index(pid) if pid in got else 5)
        idx = stats.resamples(len(ranks), stream=40)
        out[name] = {**_recall_row(np.asarray(ranks), idx), "queries": len(ranks)}
    out["product_text_weight"] = student.manifest.text.product_text_weight
    out["latency_ms"] = text_latency(student, 100)
    return out


def _made_by(checkpoint: str | None) -> dict | None:
    """How bench/teacher_recipe.py made `checkpoint` (its teacher.json), with `chain`: every command from the
    first training from random weights to this one, each `--init` followed to the teacher.json beside it."""
    side = Path(checkpoint).with_suffix(".json") if checkpoint else None
    if side is None or not side.is_file():
        return None
    info = json.loads(side.read_text(encoding="utf-8"))
    chain, seen = [], set()
    step: dict | None = info
    while step and step.get("command") and step["command"] not in seen:
        seen.add(step["command"])
        chain.insert(0, step["command"])
        args = shlex.split(step["command"])
        init = args[args.index("--init") + 1] if "--init" in args[:-1] else None
        parent = Path(init).with_suffix(".json") if init and init != "random" else None
        step = json.loads(parent.read_text(encoding="utf-8")) if parent is not None and parent.is_file() else None
    return {**{k: info.get(k) for k in ("command", "init_made_by", "seed", "dev", "train_seconds", "negatives_train")},
            "chain": chain}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="the grocery-store dataset folder (read in place)")
    ap.add_argument("--out", default="bench-out/grocery")
    ap.add_argument("--md", default=None,
                    help=f"Markdown table to write (default: {DEFAULT_MD.relative_to(REPO)} for a full run, "
                         "OUT/grocery.md with --classes)")
    ap.add_argument("--classes", type=int, default=None, help="only N classes, spread over the list (CI miniature)")
    ap.add_argument("--teacher", default=str(REFERENCE_TEACHER))
    ap.add_argument("--teacher-checkpoint", default=None, metavar="PT",
                    help="reuse a teacher already trained on the fit photos (export --pretrained PT, "
                         "--finetune-epochs 0: the same photos held back for calibration)")
    ap.add_argument("--student", default="mobilenetv3_small_100")
    ap.add_argument("--image-size", type=int, default=None, help="the student's input side (default: the teacher's)")
    ap.add_argument("--catalog-encoder", default=None,
                    choices=["teacher", "student", "teacher+student", "teacher+student+views"],
                    help="force who embeds the catalog (default: the export chooses)")
    ap.add_argument("--finetune-epochs", type=int, default=14)
    ap.add_argument("--finetune-batch", type=int, default=64)
    ap.add_argument("--finetune-lr", type=float, default=3e-3, help="fine-tuning learning rate (0: FinetuneSettings' own)")
    ap.add_argument("--epochs", type=int, default=24,
                    help="distillation epochs (24: chosen on dev, bench/student_recipe.py)")
    ap.add_argument("--views-per-image", type=int, default=8, help="per catalog image; a quarter of it per photo")
    ap.add_argument("--distill-extra", default=None, metavar="DIR",
                    help="more unlabeled photos to distill on beside the fit photos (e.g. a store's shelf photos: "
                         "bench/site_photos.py --link-site-photos); val figures of photos in DIR are not held out")
    ap.add_argument("--colour-cast", type=float, default=0.0, metavar="G",
                    help="the export's --colour-cast: distillation views (and a teacher it trains) under colour casts")
    ap.add_argument("--distill-label-weight", type=float, default=1.0,
                    help="product cross-entropy on labeled views while distilling (0: vectors only)")
    ap.add_argument("--negatives", type=int, default=300, metavar="N",
                    help="no-product scenes built from the fit photos for export --negatives (0: none)")
    ap.add_argument("--val-negatives", type=int, default=300, metavar="N", help="no-product scenes from val photos")
    ap.add_argument("--leave-out", type=int, default=10, help="products left out for the no-match figures")
    ap.add_argument("--rotate", type=int, default=8, metavar="N",
                    help="also measure every no-match rule with N left-out sets that partition the catalog, each "
                         "product left out once, pooled (0: not; otherwise at least 2)")
    ap.add_argument("--k-photos", default=",".join(map(str, K_PHOTOS)),
                    help="in-store photos per product added to the catalog, comma-separated")
    ap.add_argument("--speed", choices=["teacher", "none"], default="teacher",
                    help="time the student against the teacher (none: skip, for CI)")
    ap.add_argument("--rounds", type=int, default=10,
                    help="timing rounds for the speed ratio (each ONNX model in a fresh process per round)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quantize", choices=["auto", "int8", "fp16", "none"], default="auto",
                    help="the bundle's image model form, as export --quantize (auto: timed by the export)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gate", action="append", default=[], metavar="NAME=VALUE",
                    help="override an export gate (the CI miniature's barely trained models need it)")
    ap.add_argument("--no-text", action="store_true", help="export without the text tower (no word rows)")
    ap.add_argument("--fresh", action="store_true",
                    help="export again, ignoring the cached bundle (after changing the code); a trained teacher "
                         "with the same settings is still reused")
    ap.add_argument("--retrain", action="store_true", help="with --fresh: train the teacher again too")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.rotate < 0 or args.rotate == 1:
        ap.error("--rotate must be 0 or at least 2")
    command = ".venv/bin/python bench/grocery.py " + " ".join(shlex.quote(a) for a in argv)
    t_start = time.perf_counter()
    progress = not args.quiet
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)  # noqa: E731

    import torch

    from bench.negatives import build_negatives
    from edge_search_export.calibrate import RULES, calibrate_no_match
    from edge_search_export.config import ExportConfig, NoMatchSettings
    from edge_search_export.finetune import read_labeled
    from edge_search_export.onnx_export import export_onnx
    from edge_search_export.pipeline import (MILD_VIEW_STRENGTH, MILD_VIEWS, _query_views,
                                             index_view_blocks, run_export)
    from edge_search_export.quantize import quantize_int8
    from edge_search_export.scenes import read_negatives
    from edge_search_export.student import Embedder
    from edge_search_export.teacher import load_teacher
    from edge_search_export.views import views

    torch.set_num_threads(args.threads)
    data, out = Path(args.data).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classes = [c["id"] for c in read_classes(data)]
    # the miniature takes classes spread over the list (the first few are all apples)
    chosen = classes[::max(1, len(classes) // args.classes)][:args.classes] if args.classes else None
    csvs = out / "data"
    catalog_csv = write_catalog(data, csvs, chosen)
    train_csv, val_csv = write_queries(data, csvs, "train", chosen), write_queries(data, csvs, "val", chosen)
    fit_rows, dev_rows = dev_split(read_queries(train_csv))
    fit_csv = _write_rows(csvs / "fit.csv", fit_rows)
    _write_rows(csvs / "dev.csv", dev_rows)  # for `edge-search eval --queries` on dev; this run reads val only
    distill_dir = _link_photos(fit_rows, csvs / "fit-photos")  # dev photos are never distilled on
    neg_dir = {}
    for split, count in (("train", args.negatives), ("val", args.val_negatives)):
        if count > 0:
            neg_dir[split] = out / "negatives" / f"{split}-{count}-seed{args.seed}"
            build_negatives(data, neg_dir[split], split=split, count=count, seed=args.seed)

    # --- 2: train the teacher (or reuse one), export the bundle (cached) ----
    bundle, models = out / "bundle", out / "models"
    cfg = ExportConfig(catalog=catalog_csv, out=bundle, teacher=args.teacher, pretrained="random",
                       student=args.student, image_size=args.image_size, distill_images=(distill_dir,) + ((Path(args.distill_extra).resolve(),) if args.distill_extra else ()),
                       catalog_encoder=args.catalog_encoder,
                       epochs=args.epochs, views_per_image=args.views_per_image, colour_cast=args.colour_cast,
                       seed=args.seed, force=True,
                       threads=args.threads, label_weight=args.distill_label_weight, finetune_labeled=fit_csv,
                       save_models=models, with_text=not args.no_text, negatives=neg_dir.get("train"),
                       quantize=args.quantize)
    ft = {"epochs": args.finetune_epochs, "batch_size": args.finetune_batch, "colour_cast": args.colour_cast}
    if args.finetune_lr:
        ft["learning_rate"] = args.finetune_lr
    cfg = replace(cfg, finetune=replace(cfg.finetune, **ft),
                  gates=cfg.gates.with_spec(args.gate))
    as_read = lambda x: json.loads(json.dumps(x, default=str))  # noqa: E731  (as the stamp file reads back)
    teacher_settings = as_read({"teacher": cfg.teacher, "labels": cfg.finetune_labeled, "seed": cfg.seed,
                                "finetune": asdict(cfg.finetune), "edge_search": edge_search.__version__})
    teacher_pt = models / "teacher.pt"
    if args.teacher_checkpoint:  # trained elsewhere on the same fit photos: kept as it is
        cfg = replace(cfg, pretrained=str(Path(args.teacher_checkpoint).resolve()),
                      finetune=replace(cfg.finetune, epochs=0))
        teacher_pt = Path(args.teacher_checkpoint).resolve()
    # the teacher config's content too: its test_sides change every teacher vector under the same path
    teacher_cfg = Path(cfg.teacher)
    export_settings = as_read({"config": asdict(cfg), "edge_search": edge_search.__version__,
                               "teacher_config": sha256_file(teacher_cfg) if teacher_cfg.is_file() else None})
    export_seconds, exported = None, False
    if args.fresh or not _cached(out, "export", export_settings, [bundle / "manifest.json", teacher_pt]):
        if not args.teacher_checkpoint and not args.retrain and _cached(out, "teacher", teacher_settings,
                                                                        [teacher_pt]):
            cfg = replace(cfg, pretrained=str(teacher_pt), finetune=replace(cfg.finetune, epochs=0))
        trains = cfg.finetune.epochs > 0
        summary = run_export(cfg, progress=progress)
        export_seconds, exported = round(summary.seconds, 1), True
        _stamp(out, "export", export_settings)
        if trains:
            _stamp(out, "teacher", teacher_settings)
            atomic_write_text(out / "cache" / "teacher_training.json", json.dumps(
                Searcher.from_bundle(bundle).manifest.teacher.get("finetune"), indent=2))
        atomic_write_text(out / "cache" / "export_seconds.txt", str(export_seconds))
    elif (out / "cache" / "export_seconds.txt").is_file():
        export_seconds = float((out / "cache" / "export_seconds.txt").read_text())

    student = Searcher.from_bundle(bundle, threads=args.threads)
    m = student.manifest
    s_pp = m.preprocess
    catalog_rows = read_catalog(catalog_csv).rows
    n_cat = len(catalog_rows)
    # the bundle's products with their catalog-row keys only (a teacher+student index holds two per row)
    products = [replace(p, keys=tuple(k for k in p.keys if k < n_cat)) for p in student.products.products]
    val = read_queries(val_csv)
    catalog_images = [load_image(r.image) for r in catalog_rows]
    val_images = [load_image(q.image) for q in val]
    val_ids = [q.id for q in val]
    say(f"embedding {len(val)} val photos ...")
    teacher = load_teacher(args.teacher, str(teacher_pt))
    teacher_pp = replace(teacher.preprocess, cv2_interpolation=s_pp.cv2_interpolation)
    teacher_enc = TorchEncoder(teacher)

    # teacher ONNX int8 (cached): calibrated on catalog views, like the export
    t_int8 = out / "cache" / "teacher.int8.onnx"
    if exported or not _cached(out, "teacher_int8", export_settings, [t_int8]):
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "teacher.fp32.onnx"
            export_onnx(Embedder(teacher.image_tower).eval(), teacher_pp.size, fp32)
            calib = [v for i, img in enumerate(catalog_images) for v in views(img, 3, seed=args.seed + 17 + i)]
            quantize_int8(fp32, t_int8, preprocess_batch(calib[:256], teacher_pp))
        _stamp(out, "teacher_int8", export_settings)
    onnx = lambda p: OnnxEncoder(p, input_name="image", output_name="embedding", threads=args.threads)  # noqa: E731
    t_int8_enc = onnx(t_int8)
    s_fp32_path = models / "student.fp32.onnx"

    shipped = f"student (ONNX {m.model.precision}, the bundle)"
    enc = {"teacher (PyTorch fp32)": (teacher_enc, teacher_pp), "teacher (ONNX int8)": (t_int8_enc, teacher_pp),
           shipped: (student.encoder, s_pp),
           "colour histogram (no model)": (HistogramEncoder(s_pp), s_pp)}
    if s_fp32_path.is_file():
        enc["student (ONNX fp32)"] = (onnx(s_fp32_path), s_pp)
    cat_vecs = {name: _embed(e, catalog_images, pp) for name, (e, pp) in enc.items()}
    val_vecs = {name: _embed(e, val_images, pp) for name, (e, pp) in enc.items()}
    s_val = val_vecs[shipped]
    s_cat = cat_vecs[shipped]
    t_cat = cat_vecs["teacher (PyTorch fp32)"]
    catalog_by = {"teacher": t_cat, "student": s_cat, "teacher+student": np.concatenate([t_cat, s_cat]),
                  "teacher+student+views": np.concatenate([t_cat, s_cat, index_view_blocks(
                      student.encoder, catalog_images, s_pp, args.seed)])}
    bundle_catalog = catalog_by[m.index.catalog_encoder]

    # --- 3: models on val, raw recall and the bundle's answered-right ------
    val_idx = stats.resamples(len(val), stream=1)
    ranks = {}
    for name, (e, pp) in enc.items():
        catalog = cat_vecs[name]
        if name.startswith("student"):  # the student queries the catalog the bundle ships
            catalog = bundle_catalog if name.endswith("bundle)") else \
                {"teacher": t_cat, "student": cat_vecs[name], "teacher+student": np.concatenate([t_cat, cat_vecs[name]]),
                 "teacher+student+views": np.concatenate([t_cat, cat_vecs[name], index_view_blocks(
                     e, catalog_images, pp, args.seed)])}[m.index.catalog_encoder]
        searcher = student if name.endswith("bundle)") else _searcher(e, catalog, products, pp)
        ranks[name] = _ranks(searcher, val_vecs[name], val_ids)
    models_table = {name: {**_recall_row(r, val_idx), "input": list(enc[name][1].size)} for name, r in ranks.items()}
    models_table["teacher (PyTorch fp32)"]["mb"] = round(sum(p.numel() for p in teacher.visual.parameters()) * 4 / 1e6,
                                                         2)
    models_table["teacher (ONNX int8)"]["mb"] = round(t_int8.stat().st_size / 1e6, 2)
    models_table[shipped]["mb"] = round(bundle.joinpath(m.model.file).stat().st_size / 1e6,
                                                                  2)
    if "student (ONNX fp32)" in models_table:
        models_table["student (ONNX fp32)"]["mb"] = round(s_fp32_path.stat().st_size / 1e6, 2)
    s_hits, t_hits = ranks[shipped] < 1, ranks["teacher (PyTorch fp32)"] < 1
    answered = np.asarray([bool(student.search_vector(v, k=1)[0]) for v in s_val])
    bundle_outcomes = NoMatchOutcomes(right=s_hits, refused=~answered)
    shares = bundle_outcomes.shares()
    bundle_row = {"raw_recall@1": _ci(shares["top1"], val_idx),
                  "answered_right": _ci(shares["answered_right"], val_idx),
                  "false_reject_of_correct": _ci(shares["false_reject_of_correct"], val_idx),
                  **_wrong_names(bundle_outcomes, val_idx),
                  "student_over_teacher_recall@1": stats.ratio(s_hits, t_hits, val_idx).to_json(3)}

    # --- 4: who embeds the catalog; catalog self-retrieval -----------------
    mild_imgs, mild_src = _query_views(catalog_images, args.seed + 1, strength=MILD_VIEW_STRENGTH, count=MILD_VIEWS)
    mild_vecs = _embed(student.encoder, mild_imgs, s_pp)
    cat_ids = [products[int(student.products.key_to_product[i])].id for i in range(n_cat)]
    self_idx, mild_idx = stats.resamples(n_cat, stream=2), stats.resamples(len(mild_vecs), stream=3)
    catalog_table = {}
    for name, vecs in catalog_by.items():
        s = _searcher(student.encoder, vecs, products, s_pp)
        catalog_table[name] = {
            "val_recall@1": stats.share(_ranks(s, s_val, val_ids) < 1, val_idx).to_json(),
            "catalog_self_top1": stats.share(_ranks(s, s_cat, cat_ids, 1) < 1, self_idx).to_json(),
            "catalog_mild_views_top1": stats.share(_ranks(s, mild_vecs, [cat_ids[i] for i in mild_src], 1) < 1,
                                                   mild_idx).to_json(),
            "chosen_by_export": name == m.index.catalog_encoder}

    # --- 5: no match, every rule at the same budget, products left out -----
    rng = np.random.default_rng([args.seed, 10])
    n_out = min(args.leave_out, max(1, len(products) // 4))
    left_out = sorted(rng.choice(len(products), n_out, replace=False).tolist())
    left_ids = {products[i].id for i in left_out}
    kept = [i for i in range(len(products)) if i not in set(left_out)]
    known = [i for i, pid in enumerate(val_ids) if pid not in left_ids]
    unknown = [i for i, pid in enumerate(val_ids) if pid in left_ids]
    train_negs = _embed(student.encoder, read_negatives(neg_dir["train"], args.seed, False), s_pp) \
        if "train" in neg_dir else None
    sk_images, sk_source = _skimage_images()
    val_neg_images = [load_image(p) for p in sorted(neg_dir["val"].glob("*.jpg"))] if "val" in neg_dir else []
    no_product = {"val_negatives": _embed(student.encoder, val_neg_images, s_pp),
                  "skimage": _embed(student.encoder, sk_images, s_pp)}
    idx = {"known": stats.resamples(len(known), stream=4), "unknown": stats.resamples(len(unknown), stream=5),
           "val_negatives": stats.resamples(len(no_product["val_negatives"]), stream=6),
           "skimage": stats.resamples(len(no_product["skimage"]), stream=7),
           "all": stats.resamples(len(known) + len(unknown), stream=8)}
    known_set = (s_val[known], [val_ids[i] for i in known])
    # the export's calibration photos: its held-back share of the fit photos, same seed
    fin = m.teacher.get("finetune") or {}
    labeled = read_labeled(fit_csv, [p.id for p in products])
    _, held = labeled.split(fin.get("settings", {}).get("holdout", cfg.finetune.holdout))
    cal_vecs = _embed(student.encoder, [load_image(labeled.paths[i]) for i in held], s_pp)
    cal_truth = labeled.products[held]
    full = _searcher(student.encoder, bundle_catalog, products, s_pp)
    def fitted(settings: NoMatchSettings) -> dict | None:
        """A rule fitted as the export fits it, on its calibration photos; its figures on val, 10 left out."""
        rule, floor, fit = calibrate_no_match(full, cal_vecs, cal_truth, settings, source="bench", seed=args.seed,
                                              negatives=train_negs)
        if rule is None:
            return None
        fits[settings] = (rule, floor)
        s = _searcher(student.encoder, bundle_catalog, products, s_pp, keep=kept, calibration=rule,
                      min_score=floor, negatives=train_negs)
        return {**_rule_figures(s, known_set, s_val[unknown], no_product, idx),
                "fit_false_reject_of_correct": fit["false_reject_of_correct"]}

    rules, fits = {}, {}
    for rule_name in RULES:
        if RULES[rule_name][2] and train_negs is None:
            continue
        row = fitted(NoMatchSettings(rule=rule_name))
        if row is not None:
            rules[rule_name] = {**row, "chosen_by_export": m.calibration is not None
                                and m.calibration.rule == rule_name}
        say(f"no-match rule {rule_name}: done")
    # the same rules with every product left out once (bench/pooled.py): the set above holds 10 products,
    # and whether an unknown is refused belongs to the product, so one set's figure rests on few of them
    out_sets = partition([p.id for p in products], min(args.rotate, len(products)), args.seed) \
        if args.rotate else []
    every = every_product_out(student.encoder, bundle_catalog, products, s_pp,
                              {name: fits[NoMatchSettings(rule=name)] for name in rules}, train_negs, s_val, val_ids,
                              no_product["val_negatives"], out_sets) if out_sets else {}
    say("no-match rules, every product left out once: done")
    # the retailer's knob (export --max-false-reject): the export's rule fitted to larger budgets on the
    # same calibration photos; not a choice, the default stays the 5 % (that row is the rule's own)
    budgets = {}
    chosen_rule = m.calibration.rule if m.calibration is not None else None
    for budget in BUDGETS if chosen_rule in rules else ():
        row = {k: v for k, v in rules[chosen_rule].items() if k != "chosen_by_export"} \
            if budget == NoMatchSettings().max_false_reject else \
            fitted(NoMatchSettings(rule=chosen_rule, max_false_reject=budget))
        if row is not None:
            budgets[f"{budget:g}"] = row
    kept_search = _searcher(student.encoder, bundle_catalog, products, s_pp, keep=kept)
    separability = _separability(kept_search, known_set, s_val[unknown], no_product, train_negs,
                                 idx, m.calibration.max_false_reject
                                 if m.calibration else 0.05)

    # the kiosk's own path on the bundle as shipped: the rule, plus its retries (centre crop,
    # equalized) when the whole frame is refused: each retry is another chance to name a product
    from edge_search.kiosk.frames import Frame
    from edge_search.kiosk.loop import KioskLoop

    def kiosk_path(pipe: KioskLoop) -> dict:
        named = lambda imgs: [pipe.lookup(Frame(index=i, image=im, captured=0.0, wall=0.0)).result.hits  # noqa: E731
                              for i, im in enumerate(imgs)]
        on_val = named(val_images)
        right = np.asarray([bool(h) and h[0].id == pid for h, pid in zip(on_val, val_ids)])
        return {"answered_right": stats.share(right, val_idx).to_json(),
                **_wrong_names(NoMatchOutcomes(right=right, refused=[not h for h in on_val]), val_idx),
                "val_negatives_rejected": _refused([not h for h in named(val_neg_images)], idx["val_negatives"]),
                "skimage_rejected": _refused([not h for h in named(sk_images)], idx["skimage"])}

    pipe = KioskLoop(student, k=1)
    kiosk = {**kiosk_path(pipe), "retries": list(pipe.retries), "retry_rule": pipe.retry_rule,
             # the opt-in `edge-search run --confirm`: measured, not chosen (the default is above)
             "confirm": kiosk_path(KioskLoop(student, k=1, confirm=True))}

    # --- 6: k in-store photos per product added to the catalog -------------
    held_set = {labeled.paths[i].resolve() for i in held}
    pool: dict[str, list[Path]] = {}
    for q in fit_rows:  # never dev or val photos, never the calibration photos
        if q.image.resolve() not in held_set:
            pool.setdefault(q.id, []).append(q.image)
    k_list = [int(k) for k in args.k_photos.split(",") if k.strip()]
    pick_rng = np.random.default_rng([args.seed, 33])
    order = {pid: [paths[i] for i in pick_rng.permutation(len(paths))] for pid, paths in sorted(pool.items())}
    by_k = {}
    for k in k_list:
        extra = {pid: _embed(student.encoder, [load_image(p) for p in paths[:k]], s_pp)
                 for pid, paths in order.items()} if k else None
        full_k = _searcher(student.encoder, bundle_catalog, products, s_pp, extra=extra)
        # every candidate at the same budget, the best at cross-validation: as `export --base` fits a catalog
        rule, floor, fit_k = calibrate_no_match(full_k, cal_vecs, cal_truth, NoMatchSettings(),
                                                source="bench", seed=args.seed, negatives=train_negs)
        s = _searcher(student.encoder, bundle_catalog, products, s_pp, keep=kept, calibration=rule,
                      min_score=floor, negatives=train_negs, extra=extra)
        by_k[str(k)] = {"photos_added": int(sum(min(k, len(v)) for v in order.values())), "rule": fit_k.get("rule"),
                        "val_recall@1_all_products": stats.share(_ranks(full_k, s_val, val_ids) < 1,
                                                                 val_idx).to_json(),
                        **_rule_figures(s, known_set, s_val[unknown], no_product, idx)}
        say(f"k = {k} photos per product: done")

    words = _words(student, products) if student.has_text else None

    # --- 8: speed, the student against the same teacher ---------------------
    speed = None
    if args.speed != "none":
        from edge_search_export.timing import time_alone

        # the ONNX models each alone in a fresh process per round, as the export times its candidates
        # (export/timing.py): beside this process's PyTorch teacher and sessions a student is slowed far
        # more than the teacher (docs/benchmarks/README.md, footnote 1 of the grocery table)
        onnx_files = {"teacher (ONNX int8)": (t_int8, teacher_pp.size), shipped: (bundle / m.model.file, s_pp.size)}
        times = time_alone(onnx_files, args.rounds, SPEED_CALLS, args.threads, progress=progress)
        # the PyTorch teacher in this process, nothing else timed beside it
        batch = np.random.default_rng(1).standard_normal((1, 3, *teacher_pp.size)).astype(np.float32)
        times["teacher (PyTorch fp32)"] = timed_blocks({"t": teacher_enc}, {"t": batch}, args.rounds)["t"]
        s_ms = times[shipped]
        speed = {"ms_p50": {k: round(float(np.median(v)), 3) for k, v in times.items()},
                 "student": m.model.precision, "how": "ONNX models each alone in a fresh process per round "
                                                     "(export/timing.py); the PyTorch teacher in this process",
                 "teacher_fp32_over_student": stats.median_ratio(times["teacher (PyTorch fp32)"], s_ms).to_json(2),
                 "teacher_int8_over_student": stats.median_ratio(times["teacher (ONNX int8)"], s_ms).to_json(2),
                 "rounds": args.rounds, "calls_per_round": SPEED_CALLS, "threads": args.threads, "batch": 1,
                 "inputs": {k: list(enc[k][1].size) for k in times}}

    report = {
        "command": command,
        "protocol": {"fit_photos": len(fit_rows), "dev_photos": len(dev_rows), "val_photos": len(val),
                     "dev_split": "bench/grocery_data.dev_split: a contiguous block of each product's train photo "
                                  "sequence (the choices are made on it); val used once, for this report",
                     "bootstrap": {"rounds": stats.ROUNDS, "seed": stats.SEED, "resampled": "photos (images)"},
                     "negatives": {k: str(v) for k, v in neg_dir.items()}, "skimage": sk_source,
                     "teacher_checkpoint": args.teacher_checkpoint,
                     # bench/teacher_recipe.py --save writes how it was made beside the checkpoint
                     "teacher_checkpoint_made_by": _made_by(args.teacher_checkpoint)},
        "dataset": {"data": str(data), "products": len(products), "val_photos": len(val),
                    "train_photos": len(fit_rows) + len(dev_rows), "classes": chosen or "all"},
        "teacher_training": json.loads((out / "cache" / "teacher_training.json").read_text())
        if (out / "cache" / "teacher_training.json").is_file() else m.teacher.get("finetune"),
        "export": {"seconds": export_seconds, "teacher": m.teacher, "student": m.student,
                   "model": asdict(m.model), "precision": m.fidelity.get("precision"), "index": asdict(m.index), "catalog_encoder": m.fidelity.get("catalog_encoder"),
                   "no_match": m.fidelity.get("no_match"), "catalog_self_top1": m.fidelity.get("catalog_self_top1"),
                   "settings": {"finetune_epochs": args.finetune_epochs, "distill_epochs": args.epochs,
                                "views_per_image": args.views_per_image, "colour_cast": args.colour_cast,
                                "distill_extra": args.distill_extra,
                                "seed": args.seed,
                                "distill_label_weight": args.distill_label_weight}},
        "models": models_table, "bundle": bundle_row, "kiosk": kiosk, "catalog_embedded_by": catalog_table,
        "no_match": {"left_out": sorted(left_ids), "known_photos": len(known), "unknown_photos": len(unknown),
                     "val_negatives": len(no_product["val_negatives"]), "skimage_images": len(sk_images),
                     "budget": m.calibration.max_false_reject if m.calibration else None, "rules": rules,
                     "separability": separability, "budgets": {"rule": chosen_rule, "by_budget": budgets},
                     "every_product": {"sets": out_sets, "rules": every} if out_sets else None},
        "k_photos": {"rule": "re-chosen for each k", "by_k": by_k},
        "words": words, "speed": speed,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    md = Path(args.md) if args.md else (out / "grocery.md" if args.classes else DEFAULT_MD)
    write_markdown(report, md)
    print_summary(report)
    print(f"wrote {out / 'report.json'} and {md}")
    return 0


if __name__ == "__main__":
    from edge_search.errors import EdgeSearchError

    try:
        sys.exit(main())
    except EdgeSearchError as e:  # e.g. a fidelity gate: one line, as the CLI would say it
        print(f"bench/grocery.py: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
