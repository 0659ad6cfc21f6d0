"""Photos from the kiosk's own store added to the catalog: what they buy (issue #12, item 3).

    .venv/bin/python bench/site_photos.py --run bench-out/grocery-distil-cast --out bench-out/site-photos \
        --md docs/benchmarks/site-photos.md

grocery.py's `k_photos` table adds fit photos, shot in the train photos' store. A retailer photographs
its own shelves; here those are the --split photos (dev, where choices are made, or val, once). Each
catalog product's photos of the split, in shooting order, give their first (--site-from last: last)
--site as *site* photos and the rest as queries. For k = 0 .. --site, the first k site
photos of each product are embedded by the bundle's catalog encoders and added to its index, and the
"no match" rule is refitted as `edge-search export --base B` does for a store catalog of the kept
products plus its shelf photos: every candidate at the same budget, the best at 2-fold cross-validation,
on the export's calibration photos of the store's products and the train negatives. The products
grocery.py left out (its report.json) are not in the store's catalog and get no site photos; all their
photos are unknown-product queries. With --store-scenes N, each k > 0 is
measured again with N no-product scenes cut from the site photos joined to the calibration's negatives
(`export --base B --negatives DIR`). Non-product refusal is measured on the split's scenes as grocery.py
cuts them and on scenes cut from the query photos only. Every k is measured on the same
queries, nothing is chosen from the figures, and the models are those of the run (--run: a
bench/grocery.py --out, its bundle, data CSVs, negatives and report.json). With --rotate N every row is
measured again over N left-out sets that partition the catalog, pooled (bench/pooled.py), so every
photo is an unknown-product query once. --store-calibration and --store-shift measure two levers that
were tried on dev and dropped (docs/benchmarks/README.md), --site-encoder teacher a third. --separability (with --rotate) adds what a
cut on each single number a rule could use would do at every row, the cut chosen on the split's own
photos: an upper bound for any such rule, not a rule. Writes OUT/result.json and a Markdown table
(--md).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/grocery.py

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import numpy as np  # noqa: E402

from bench import script, stats  # noqa: E402
from bench.grocery import (REFERENCE_TEACHER, SEPARATORS, TorchEncoder, _embed, _ranks, _rule_figures,  # noqa: E402
                           _scores, _searcher)
from bench.grocery_data import _photo_number  # noqa: E402
from bench.negatives import build_negatives, scenes  # noqa: E402
from bench.pooled import partition, pooled_figures, pooled_separability  # noqa: E402
from bench.site_photos_report import POOLED, SEPARABILITY_BUDGET, write_markdown  # noqa: E402
from edge_search.core.catalog import read_catalog  # noqa: E402
from edge_search.core.images import load_image  # noqa: E402
from edge_search.core.search import Searcher  # noqa: E402
from edge_search.errors import EdgeSearchError  # noqa: E402
from edge_search.evaluation.evaluate import read_queries  # noqa: E402
from edge_search.files import atomic_write_text, staged_directory  # noqa: E402


def site_split(rows: list, site: int, left_out: set[str], last: bool = False
               ) -> tuple[dict[str, list], list, list]:
    """-> ({product: its first (`last`: last) `site` photos in shooting order}, known queries, unknown queries).

    A product in `left_out` gives no site photos: every photo of it is an unknown query. A kept
    product's other photos are its queries; one with no more photos than `site` gives site photos
    only. Query order follows the input."""
    by_product: dict[str, list] = {}
    for r in rows:
        by_product.setdefault(r.id, []).append(r)
    ordered = {pid: sorted(rs, key=lambda r: _photo_number(r.image)) for pid, rs in sorted(by_product.items())
               if pid not in left_out}
    sites = {pid: rs[-site:] if last else rs[:site] for pid, rs in ordered.items()}
    taken = {id(r) for rs in sites.values() for r in rs}
    known = [r for r in rows if r.id not in left_out and id(r) not in taken]
    unknown = [r for r in rows if r.id in left_out]
    return sites, known, unknown


def _with_site_calibration(store: Searcher, queries: np.ndarray, truth: np.ndarray, s_site: dict, k: int,
                           encoders: list[str]) -> tuple[np.ndarray, np.ndarray, list]:
    """The calibration queries with each store product's first k site photos (the student's embeddings)
    appended, and per query the index keys it is ranked without: a site photo's own entries in `store`
    (built by grocery._searcher: a product's catalog keys, then its site photos, one per encoder in
    `encoders`)."""
    vecs, own_truth, skip = [queries], list(truth), [None] * len(queries)
    for pos, p in enumerate(store.products.products):
        if p.id not in s_site:  # no photo of it in the split: it has no site photos in the index either
            continue
        photos = s_site[p.id][:k]
        first = len(p.keys) - len(photos) * len(encoders)  # the product's keys before its site photos'
        for j, v in enumerate(photos):
            vecs.append(v[None])
            own_truth.append(pos)
            skip.append(np.asarray(p.keys[first + j * len(encoders):first + (j + 1) * len(encoders)]))
    return np.concatenate(vecs).astype(np.float32), np.asarray(own_truth), skip


def separator_values(store: Searcher, known: np.ndarray, known_ids: list[str], unknown: np.ndarray,
                     scenes: np.ndarray, negatives: np.ndarray | None) -> dict:
    """Every single-number separator (grocery._scores) of the known and unknown queries and the scenes against
    `store`, and whether each known query's top product is its own: the form pooled_separability takes."""
    k = _scores(store, known, negatives)
    return {"known": k, "right": k["top"] == np.asarray(known_ids, object),
            "unknown": _scores(store, unknown, negatives), "scenes": _scores(store, scenes, negatives)}


def _rotation(args, ids: list[str], draw, say) -> dict:
    """Every row again over `args.rotate` left-out sets that partition the catalog (bench/pooled.py), the
    rule refitted in each as the export would for that store; outcomes pooled over the sets."""
    groups = partition(ids, args.rotate, args.seed)
    per_draw: dict[str, list] = {}
    known_images, unknown_images, known_ids, unknown_ids = [], [], [], []
    for n, group in enumerate(groups):
        _, outcomes = draw(set(group), query_scenes=False)
        known_images += outcomes["images"]["known"]
        unknown_images += outcomes["images"]["unknown"]
        known_ids += outcomes["products"]["known"]
        unknown_ids += outcomes["products"]["unknown"]
        for name, o in outcomes.items():
            if name not in ("queries", "images", "products"):
                per_draw.setdefault(name, []).append(o)
        say(f"rotation draw {n + 1} of {len(groups)}: done")
    rows = {}
    for name, draws in per_draw.items():
        f = pooled_figures(draws, "split_scenes", known_ids, unknown_ids)
        rows[name] = {**{k: f[k] for k in POOLED[:5]}, "split_scenes_rejected": f["scenes_rejected"],
                      "unknown_rejected_by_draw": f["unknown_rejected_by_set"],
                      "photos": {"known": int(len(set(known_images))), "unknown": int(len(unknown_images)),
                                 "known_measured": int(len(known_images))}}
        if args.separability:
            rows[name]["separability"] = pooled_separability([d["separators"] for d in draws], known_ids,
                                                             unknown_ids, SEPARABILITY_BUDGET)
            if "teacher_separators" in draws[0]:
                rows[name]["teacher_separability"] = pooled_separability(
                    [d["teacher_separators"] for d in draws], known_ids, unknown_ids, SEPARABILITY_BUDGET)
    return {"draws": len(groups), "left_out": groups, "rows": rows}


def grocery_run(ap: argparse.ArgumentParser, run: str) -> tuple[Path, dict]:
    """--run checked to be a bench/grocery.py --out (one argparse line if not) -> (its folder, report.json)."""
    folder = Path(run)
    if not (folder / "report.json").is_file() or not (folder / "bundle" / "manifest.json").is_file():
        ap.error(f"{folder}: not a bench/grocery.py --out (no report.json or bundle/manifest.json)")
    return folder, json.loads((folder / "report.json").read_text())


def write_result(out: Path, result: dict, md: Path, markdown) -> None:
    """OUT/result.json and the Markdown table `markdown(result, md)` writes, each written whole."""
    if out.exists() and not out.is_dir():
        raise EdgeSearchError(f"{out}: --out is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "result.json", json.dumps(result, indent=2) + "\n")
    markdown(result, md)
    print(f"wrote {out / 'result.json'} and {md}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, metavar="DIR", help="a bench/grocery.py --out (its bundle is measured)")
    ap.add_argument("--out", default=None, metavar="DIR", help="where result.json goes (not with --link-site-photos)")
    ap.add_argument("--md", default=None, help="also write the table here (default OUT/site-photos.md)")
    ap.add_argument("--site", type=int, default=2, help="site photos per product (k = 0 .. SITE are measured)")
    ap.add_argument("--site-from", choices=("first", "last"), default="first",
                    help="which of each product's photos, in shooting order, are the site photos")
    ap.add_argument("--split", choices=("dev", "val"), default="val",
                    help="whose photos are the store's: dev (the choices are made there) or val (once, for the report)")
    ap.add_argument("--store-scenes", type=int, default=0, metavar="N",
                    help="also measure each k > 0 with N no-product scenes cut from the site photos (borders, blurred "
                         "copies, textures: bench/negatives.scenes) joined to the calibration's negatives first, as "
                         "`export --base B --negatives DIR` does")
    ap.add_argument("--store-calibration", action="store_true",
                    help="also measure each k > 0 with the k site photos of each product joining the calibration "
                         "photos, each scored without its own index entries (measured on dev and dropped: the export has no "
                         "such option; docs/benchmarks/README.md)")
    ap.add_argument("--store-shift", action="store_true",
                    help="also measure k = 0 and k = SITE with every photo moved by its store's mean: the split's "
                         "photos (queries, scenes) by the site photos' mean minus the catalog's, the calibration "
                         "photos and train negatives by their own mean minus the catalog's (not an export option)")
    ap.add_argument("--site-encoder", choices=("bundle", "teacher"), default="bundle",
                    help="which models embed the shelf photos: the bundle's catalog encoders (as `export --base` "
                         "does), or the teacher alone (measured on dev and dropped: docs/benchmarks/README.md)")
    ap.add_argument("--rotate", type=int, default=0, metavar="N",
                    help="also measure every row over N draws of left-out products that take each product out once "
                         "(a seeded partition of the catalog), pooled: every photo of the split is an unknown "
                         "query once")
    ap.add_argument("--separability", action="store_true",
                    help="with --rotate: also what a cut on each single-number separator could do at every row, "
                         "the cut chosen on the split's own photos (not a rule; it chooses nothing)")
    ap.add_argument("--link-site-photos", default=None, metavar="DIR",
                    help="only write links to the site photos into DIR (a new folder), for export --distill-images, "
                         "and stop")
    ap.add_argument("--teacher", default=str(REFERENCE_TEACHER), help="the run's teacher config")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the run's --seed")
    args = ap.parse_args(argv)
    if args.site < 1 or args.store_scenes < 0 or args.rotate < 0 or args.rotate == 1:
        ap.error("--site must be at least 1, --store-scenes at least 0 and --rotate 0 or at least 2")
    if args.separability and not args.rotate:
        ap.error("--separability needs --rotate (it is pooled over the left-out sets)")
    run, report = grocery_run(ap, args.run)
    out = Path(args.out) if args.out else None
    if args.link_site_photos:
        return _link_site_photos(run, args, set(report["no_match"]["left_out"]), Path(args.link_site_photos))
    if out is None:
        ap.error("--out is required (except with --link-site-photos)")
    return _measure(args, run, out, report)


def _link_site_photos(run: Path, args, left_out: set[str], folder: Path) -> int:
    """The site photos as links in a new folder, written whole (staged, then renamed)."""
    sites, _, _ = site_split(read_queries(run / "data" / f"{args.split}.csv"), args.site, left_out,
                             last=args.site_from == "last")
    if folder.exists():
        raise EdgeSearchError(f"{folder}: already exists; give a new folder")
    with staged_directory(folder) as tmp:
        for rs in sites.values():
            for r in rs:
                (tmp / Path(r.image).name).symlink_to(Path(r.image).resolve())
    print(f"linked {sum(map(len, sites.values()))} site photos into {folder}")
    return 0


@dataclass(frozen=True)
class RunModels:
    """A bench/grocery.py run's bundle (its student as the searcher's encoder), its products with their
    catalog keys, its teacher, and the bundle's catalog vectors as grocery.py rebuilds them (an f32 exact
    index of the same rows, block by block of the bundle's catalog encoder)."""

    student: Searcher
    products: list
    t_enc: object
    t_pp: object
    t_cat: np.ndarray
    bundle_catalog: np.ndarray


def run_models(run: Path, report: dict, teacher_config: str, threads: int, seed: int) -> RunModels:
    import torch

    from edge_search_export.pipeline import index_view_blocks
    from edge_search_export.teacher import load_teacher

    torch.set_num_threads(threads)
    student = Searcher.from_bundle(run / "bundle", threads=threads)
    m, s_pp = student.manifest, student.manifest.preprocess
    catalog_rows = read_catalog(run / "data" / "catalog.csv").rows
    n_cat = len(catalog_rows)
    products = [replace(p, keys=tuple(k for k in p.keys if k < n_cat)) for p in student.products.products]
    catalog_images = [load_image(r.image) for r in catalog_rows]
    s_cat = _embed(student.encoder, catalog_images, s_pp)
    # the teacher, reused (--teacher-checkpoint) or trained by the run itself and kept with its models: it
    # embeds the catalog where the bundle's does, and is the student's yardstick with shelf photos of its own
    teacher = load_teacher(teacher_config, report["protocol"].get("teacher_checkpoint")
                           or str(run / "models" / "teacher.pt"))
    t_enc, t_pp = TorchEncoder(teacher), replace(teacher.preprocess, cv2_interpolation=s_pp.cv2_interpolation)
    t_cat = _embed(t_enc, catalog_images, t_pp)
    blocks = {"student": s_cat, "teacher": t_cat}
    if m.index.catalog_encoder.endswith("+views"):
        blocks["views"] = index_view_blocks(student.encoder, catalog_images, s_pp, seed)
    return RunModels(student=student, products=products, t_enc=t_enc, t_pp=t_pp, t_cat=t_cat,
                     bundle_catalog=np.concatenate([blocks[b] for b in m.index.catalog_encoder.split("+")]))


def calibration_set(run: Path, rm: RunModels, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The export's calibration photos (its held-back share of the fit photos, as grocery.py takes them),
    embedded by the student, their product positions, and the train negatives' embeddings (None: none)."""
    from edge_search_export.config import FinetuneSettings
    from edge_search_export.finetune import read_labeled
    from edge_search_export.scenes import read_negatives

    student, pp = rm.student, rm.student.manifest.preprocess
    fin = student.manifest.teacher.get("finetune") or {}
    labeled = read_labeled(run / "data" / "fit.csv", [p.id for p in rm.products])
    _, held = labeled.split(fin.get("settings", {}).get("holdout", FinetuneSettings().holdout))
    cal_vecs = _embed(student.encoder, [load_image(labeled.paths[i]) for i in held], pp)
    train_dir = next(iter(sorted((run / "negatives").glob("train-*"))), None)
    train_negs = _embed(student.encoder, read_negatives(train_dir, seed, False), pp) if train_dir else None
    return cal_vecs, np.asarray(labeled.products[held]), train_negs


def _measure(args, run: Path, out: Path, report: dict) -> int:
    from edge_search_export.calibrate import calibrate_no_match
    from edge_search_export.config import NoMatchSettings
    from edge_search_export.scenes import join_scenes

    t_start = time.perf_counter()
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rm = run_models(run, report, args.teacher, args.threads, args.seed)
    student, m, s_pp, products = rm.student, rm.student.manifest, rm.student.manifest.preprocess, rm.products
    t_enc, t_pp, t_cat, bundle_catalog = rm.t_enc, rm.t_pp, rm.t_cat, rm.bundle_catalog

    rows = read_queries(run / "data" / f"{args.split}.csv")
    # every photo of the split embedded once, by the student (a query; a site photo's student entry) and the
    # teacher (its own queries; a site photo's teacher entry): each draw of left-out products only selects
    images = {r.image: load_image(r.image) for r in rows}
    paths = list(images)
    s_emb = dict(zip(paths, _embed(student.encoder, list(images.values()), s_pp)))
    t_emb = dict(zip(paths, _embed(t_enc, list(images.values()), t_pp)))
    del images
    encoders = [b for b in m.index.catalog_encoder.split("+") if b != "views"]
    # --site-encoder teacher: a shelf photo's one entry is the teacher's (the studio images keep the bundle's)
    site_encoders = encoders if args.site_encoder == "bundle" else ["teacher"]
    by_encoder = {"teacher": t_emb, "student": s_emb}

    cal_vecs, cal_truth, train_negs = calibration_set(run, rm, args.seed)
    # no-product scenes of the split as grocery.py cuts them (from any of its photos, the site photos too)
    split_dir = build_negatives(Path(report["dataset"]["data"]),
                                out / "negatives" / f"{args.split}-300-seed{args.seed}",
                                split=args.split, count=300, seed=args.seed)
    split_scenes = _embed(student.encoder, [load_image(p) for p in split_dir], s_pp)
    # the teacher's own view of the same scenes, for its separability (it has no negatives embedded)
    t_scenes = _embed(t_enc, [load_image(p) for p in split_dir], t_pp) if args.separability else None
    embed_scenes = lambda photos, n, stream: _embed(student.encoder, [img for _, img in scenes(  # noqa: E731
        photos, n, np.random.default_rng([args.seed, stream]))], s_pp)
    ids = [p.id for p in products]

    def draw(left_out: set[str], *, query_scenes: bool) -> tuple[dict, dict]:
        """Every k (and its store-scenes / store-calibration variants) with `left_out` out of the store:
        -> ({row: figures}, {row: the rule's outcomes photo by photo, for pooling draws})."""
        kept = [i for i, p in enumerate(products) if p.id not in left_out]
        sites, known, unknown = site_split(rows, args.site, left_out, last=args.site_from == "last")
        # a site photo is embedded as the export embeds a catalog image: by each of the bundle's catalog
        # encoders (teacher and/or student; a "+views" bundle's extra mild views of it are not added here)
        t_site = {pid: np.stack([t_emb[r.image] for r in rs]) for pid, rs in sites.items()}
        s_site = {pid: np.stack([s_emb[r.image] for r in rs]) for pid, rs in sites.items()}
        site_vecs = {pid: np.stack([np.stack([by_encoder[b][r.image] for b in site_encoders]) for r in rs])
                     for pid, rs in sites.items()}  # (photos, encoders, dim)
        known_v = np.stack([s_emb[r.image] for r in known])
        unknown_v = np.stack([s_emb[r.image] for r in unknown])
        all_rows = known + unknown
        all_ids = [r.id for r in all_rows]
        known_ids = [r.id for r in known]
        t_queries = np.stack([t_emb[r.image] for r in all_rows])
        # and scenes cut from the query photos only: no source photo shared with the site photos or their scenes
        no_product_v = {"split_scenes": split_scenes}
        if query_scenes:
            no_product_v["query_scenes"] = embed_scenes([r.image for r in all_rows], 300, 41)
        store_negs = embed_scenes([r.image for rs in sites.values() for r in rs], args.store_scenes, 42) \
            if args.store_scenes else None
        idx = {"known": stats.resamples(len(known), stream=4), "unknown": stats.resamples(len(unknown), stream=5),
               "all": stats.resamples(len(known) + len(unknown), stream=8),
               "split_scenes": stats.resamples(len(split_scenes), stream=6)}
        if query_scenes:
            idx["query_scenes"] = stats.resamples(len(no_product_v["query_scenes"]), stream=9)
        all_idx = stats.resamples(len(all_rows), stream=1)
        # the store's bundle holds the kept products only: the export drops the calibration photos of the others
        position = {products[i].id: j for j, i in enumerate(kept)}
        cal_kept = np.asarray([ids[t] in position for t in cal_truth])
        cal_kept_truth = np.asarray([position[ids[t]] for t in cal_truth[cal_kept]])
        cal_v = cal_vecs[cal_kept]

        def measured(k: int, negatives: np.ndarray | None, store_calibration: bool = False,
                     shift: bool = False) -> tuple[dict, dict]:
            extra = {pid: v[:k].reshape(-1, v.shape[-1]) for pid, v in site_vecs.items()} if k else None
            known_vecs, unknown_vecs, no_product, cal_vecs = known_v, unknown_v, no_product_v, cal_v
            if shift:  # each store's photos moved by its mean minus the catalog's: the store's look taken out
                mu_cat = bundle_catalog.mean(0)
                to_cat = np.stack([v for vs in s_site.values() for v in vs]).mean(0) - mu_cat
                cal_to_cat = cal_v.mean(0) - mu_cat
                known_vecs, unknown_vecs = known_v - to_cat, unknown_v - to_cat
                no_product = {name: v - to_cat for name, v in no_product_v.items()}
                cal_vecs = cal_v - cal_to_cat
                if negatives is not None:
                    negatives = negatives - cal_to_cat
                if extra:  # the shelf photos in the index are the store's photos too
                    extra = {pid: v - to_cat for pid, v in extra.items()}
            known_set = (known_vecs, known_ids)
            all_vecs = np.concatenate([known_vecs, unknown_vecs])
            full = _searcher(student.encoder, bundle_catalog, products, s_pp, extra=extra)
            store = _searcher(student.encoder, bundle_catalog, products, s_pp, keep=kept, extra=extra)
            # the rule as `export --base` fits it: every candidate at the same budget, the best at 2-fold
            # cross-validation, on the calibration photos of the store's products and the negatives given
            queries, truth, skip = cal_vecs, cal_kept_truth, None
            if store_calibration:  # the site photos join them, each ranked without its own index entries
                queries, truth, skip = _with_site_calibration(store, queries, truth, s_site, k, site_encoders)
            rule, floor, fit = calibrate_no_match(store, queries, truth, NoMatchSettings(),
                                                  source="bench", seed=args.seed, negatives=negatives, skip=skip)
            # too few correctly named calibration photos (a miniature): no rule, as the export then ships none
            ruled = store if rule is None else _searcher(student.encoder, bundle_catalog, products, s_pp,
                                                         keep=kept, calibration=rule, min_score=floor,
                                                         negatives=negatives, extra=extra)
            # every single number a rule could cut, scored against the store's catalog (--separability)
            sep = separator_values(store, known_vecs, known_ids, unknown_vecs, no_product["split_scenes"],
                                   negatives) if args.separability else None
            sc = sep["known"] if sep else _scores(store, known_vecs, negatives)
            right = sc["top"] == np.asarray(known_ids, object)
            s_hits = _ranks(full, all_vecs, all_ids) < 1
            # the teacher alone (PyTorch), its own catalog plus its own embeddings of the same shelf photos
            t_extra = {pid: v[:k] for pid, v in t_site.items()} if k else None
            t_hits = _ranks(_searcher(t_enc, t_cat, products, t_pp, extra=t_extra), t_queries, all_ids) < 1
            figures, outcomes = _rule_figures(ruled, known_set, unknown_vecs, no_product, idx, outcomes=True)
            if sep:
                outcomes["separators"] = sep
                # the teacher as its own query model, where its catalog is the store's as is (no negatives:
                # the teacher has none embedded)
                if negatives is train_negs and not (store_calibration or shift):
                    n = len(known_ids)
                    outcomes["teacher_separators"] = separator_values(
                        _searcher(t_enc, t_cat, products, t_pp, keep=kept, extra=t_extra), t_queries[:n],
                        known_ids, t_queries[n:], t_scenes, None)
            return {"photos_added": int(sum(len(v[:k]) for v in site_vecs.values())), "rule": fit.get("rule"),
                    "recall@1_all_products": stats.share(s_hits, all_idx).to_json(),
                    "teacher_recall@1_all_products": stats.share(t_hits, all_idx).to_json(),
                    "student_over_teacher_recall@1": stats.ratio(s_hits, t_hits, all_idx).to_json(3),
                    **figures,
                    "auc_top1_right_vs_wrong": stats.auc(sc[SEPARATORS[0]], right, idx["known"]).to_json(3)}, \
                outcomes

        by_k, kept_outcomes = {}, {}
        for k in range(args.site + 1):
            by_k[str(k)], kept_outcomes[str(k)] = measured(k, train_negs)
            if k and store_negs is not None:
                name = f"{k} + store scenes"
                by_k[name], kept_outcomes[name] = measured(k, join_scenes(store_negs, train_negs, args.seed))
            if k and args.store_calibration:
                name = f"{k} + store calibration"
                by_k[name], kept_outcomes[name] = measured(k, train_negs, store_calibration=True)
                if store_negs is not None:
                    name = f"{k} + store scenes + store calibration"
                    by_k[name], kept_outcomes[name] = measured(
                        k, join_scenes(store_negs, train_negs, args.seed), store_calibration=True)
            if args.store_shift and k in (0, args.site):
                name = f"{k} + store shift"
                by_k[name], kept_outcomes[name] = measured(k, train_negs, shift=True)
        return by_k, kept_outcomes | {"queries": {"known": len(known), "unknown": len(unknown),
                                                  "all_products": len(all_rows)},
                                      "images": {"known": [r.image for r in known],
                                                 "unknown": [r.image for r in unknown]},
                                      "products": {"known": [r.id for r in known],
                                                   "unknown": [r.id for r in unknown]}}

    left_out = set(report["no_match"]["left_out"])
    by_k, first = draw(left_out, query_scenes=True)
    say(f"the run's left-out products: done ({first['queries']})")
    rotation = None
    if args.rotate:
        rotation = _rotation(args, [p.id for p in products], draw, say)

    command = ".venv/bin/python bench/site_photos.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = {"command": command, "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "run": str(run), "run_command": f"`{report.get('command', '?')}`", "site": args.site,
              "split": args.split, "site_from": args.site_from, "store_scenes": args.store_scenes,
              "store_calibration": args.store_calibration, "store_shift": args.store_shift,
              "site_encoder": args.site_encoder,
              "separability": args.separability,
              "left_out": sorted(left_out),
              "queries": first["queries"], "rotation": rotation,
              "bootstrap": {"rounds": stats.ROUNDS, "seed": stats.SEED}, "by_k": by_k,
              "seconds": round(time.perf_counter() - t_start, 1)}
    write_result(out, result, Path(args.md) if args.md else out / "site-photos.md", write_markdown)
    for k, x in by_k.items():
        print(f"k={k}: R@1 {stats.fmt(x['recall@1_all_products'])}; answered right {stats.fmt(x['answered_right'])}; "
              f"refused of correct {stats.fmt(x['false_reject_of_correct'])}; unknown refused "
              f"{stats.fmt(x['unknown_rejected'])}; named wrong {stats.fmt(x.get('named_wrong'))}")
    return 0


if __name__ == "__main__":
    script.run(main, "bench/site_photos.py")
