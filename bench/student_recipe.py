"""The student's distillation recipe, measured on the dev split (issue #12, item 4).

    .venv/bin/python bench/student_recipe.py --teacher-checkpoint bench-out/teacher/r18/teacher.pt \
        --out bench-out/student/epochs --image-size 128 --epochs 8,16

Distils a student from a teacher already trained on the fit photos
(bench/teacher_recipe.py --save) exactly as `edge-search export` does: the
same teacher and student steps of export/pipeline.py, the catalog plus the
fit photos as distillation images (--finetune-labeled on the fit photos, so
the export's calibration photos stay unseen), the train-split negatives.
The teacher's targets are computed once; each --epochs value trains one
student on them from the same initial weights. Then it measures each on the
dev photos only (val is never read here):
  - R@1 photo -> studio image of the teacher, of the student (fp32, PyTorch)
    against the teacher-embedded catalog and against its own, and the
    student / teacher ratio, each with a 95 % bootstrap interval (paired);
  - dev negatives rejected at the score floor that refuses 5 % of the
    correctly named dev photos, for the teacher and the student;
  - the distillation's wall time.
Writes OUT/result.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/grocery.py

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import numpy as np  # noqa: E402

from bench import stats  # noqa: E402
from bench.grocery import REFERENCE_TEACHER, _link_photos, _write_rows  # noqa: E402
from bench.grocery_data import DEFAULT_DATA, dev_split, write_catalog, write_queries  # noqa: E402
from bench.negatives import build_negatives  # noqa: E402
from bench.teacher_recipe import rejection_at_budget, unknown_rejection  # noqa: E402
from edge_search.core.catalog import read_catalog  # noqa: E402
from edge_search.core.images import encode_jpeg, load_image  # noqa: E402
from edge_search.core.preprocess import preprocess_batch  # noqa: E402
from edge_search.evaluation.evaluate import read_queries  # noqa: E402
from edge_search.errors import EdgeSearchError  # noqa: E402
from edge_search.files import atomic_write_text, staged_directory  # noqa: E402


def _student_vectors(module, images: list[np.ndarray], pp, batch: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(module(torch.from_numpy(preprocess_batch(images[i:i + batch], pp))).numpy())
    return np.concatenate(out).astype(np.float32)


def dev_figures(q_t: np.ndarray, q_s: np.ndarray, cat_t: np.ndarray, cat_s: np.ndarray, products: np.ndarray,
                neg_t: np.ndarray, neg_s: np.ndarray) -> dict:
    """Teacher and student on the dev photos (query vectors q_*, catalog vectors cat_*, one per product
    in `products` order), paired bootstrap intervals."""
    idx = stats.resamples(len(products), stream=50)
    neg_idx = stats.resamples(len(neg_t), stream=51)
    out = {}
    hits = {}
    # how closely the student follows the teacher, right or wrong: the same top product, and the cosine of
    # the two embeddings, on dev photos and on dev no-product scenes (inputs further from what it distilled on)
    fidelity = {"top1_agreement_dev": stats.share((q_s @ cat_t.T).argmax(1) == (q_t @ cat_t.T).argmax(1), idx).to_json(),
                "top1_agreement_negatives": stats.share((neg_s @ cat_t.T).argmax(1) == (neg_t @ cat_t.T).argmax(1),
                                                        neg_idx).to_json(),
                "cosine_dev": round(float(np.mean(np.sum(_unit(q_s) * _unit(q_t), 1))), 4),
                "cosine_negatives": round(float(np.mean(np.sum(_unit(neg_s) * _unit(neg_t), 1))), 4)}
    for name, q, cat, neg in (("teacher", q_t, cat_t, neg_t), ("student|teacher catalog", q_s, cat_t, neg_s),
                              ("student|own catalog", q_s, cat_s, neg_s)):
        sims = q @ cat.T
        top1 = sims.argmax(1) == products
        hits[name] = top1
        negs = (neg @ cat.T).max(1)
        floor, _ = rejection_at_budget(sims.max(1)[top1], negs)
        out[name] = {"dev_r1": stats.share(top1, idx).to_json(),
                     "neg_rejected_at_5pct": stats.share(negs < floor, neg_idx).to_json(),
                     "floor": round(floor, 4),
                     "unknown_rejected_at_5pct": round(unknown_rejection(sims, products), 4)}
    for name in ("student|teacher catalog", "student|own catalog"):
        out[name]["of_teacher"] = stats.ratio(hits[name], hits["teacher"], idx).to_json()
    out["student|teacher catalog"]["follows_teacher"] = fidelity
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


MIX = (0.25, 0.75)  # the share of the first photo in a mixed image: both photos stay visible


def write_mixed(photos: list[Path], count: int, folder: Path, seed: int) -> Path:
    """`count` images each blending two different `photos` (the share drawn from MIX), as JPEGs in `folder`:
    unlabelled inputs between the photos, where the student learns to follow the teacher too. Written whole
    into a staging folder renamed to `folder`; a `folder` already holding `count` blends is kept as it is
    (the same name, the same blends), anything else there is refused."""
    import cv2

    folder = Path(folder)
    if folder.exists():
        if folder.is_dir() and not folder.is_symlink() and \
                sorted(p.name for p in folder.iterdir()) == [f"mixed-{n:05d}.jpg" for n in range(count)]:
            return folder
        raise EdgeSearchError(f"{folder}: exists and is not a folder of {count} mixed images; remove it")
    rng = np.random.default_rng([seed, 77])
    with staged_directory(folder) as stage:
        for n in range(count):
            i, j = rng.choice(len(photos), 2, replace=False)
            a, b = load_image(photos[i]), load_image(photos[j])
            b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
            lam = rng.uniform(*MIX)
            mixed = np.clip(lam * a.astype(np.float32) + (1 - lam) * b.astype(np.float32), 0, 255).astype(np.uint8)
            (stage / f"mixed-{n:05d}.jpg").write_bytes(encode_jpeg(mixed, quality=95))
    return folder


@dataclass
class Prepared:
    """The dev-split setup a distillation measurement starts from: the export config (teacher from a
    checkpoint, no fine-tuning; the fit photos as distillation images), the teacher step, and the dev
    photos and dev negatives with the teacher's vectors for them and for the catalog."""
    cfg: Any
    teacher_step: Any
    dev: list
    dev_images: list
    dev_products: np.ndarray
    negatives: list
    q_t: np.ndarray
    cat_t: np.ndarray
    neg_t: np.ndarray


def add_setup_arguments(ap: argparse.ArgumentParser, negatives: int, dev_negatives: int,
                        checkpoint_required: bool = True) -> None:
    """The options `prepare` reads."""
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", required=True)
    ap.add_argument("--teacher", default=str(REFERENCE_TEACHER))
    ap.add_argument("--teacher-checkpoint", required=checkpoint_required, metavar="PT",
                    help="the trained teacher (bench/teacher_recipe.py --save; random: untrained, a smoke run)")
    ap.add_argument("--negatives", type=int, default=negatives, help="train-split negatives distilled on (0: none)")
    ap.add_argument("--dev-negatives", type=int, default=dev_negatives)
    ap.add_argument("--negatives-dir", default="bench-out/negatives")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)


def prepare(args, out: Path, mixed: int = 0, **cfg_fields) -> Prepared:
    """`args` carries data, teacher, teacher_checkpoint, negatives, dev_negatives, negatives_dir, seed,
    threads (and optionally class_ids: only those products); `cfg_fields` the ExportConfig fields of the
    student's recipe; `mixed`: that many blends of two fit photos (never calibration photos) distilled on too."""
    from edge_search_export.config import ExportConfig
    from edge_search_export.pipeline import teacher_step

    data = Path(args.data).resolve()
    csvs = out / "data"
    classes = getattr(args, "class_ids", None)
    catalog_csv = write_catalog(data, csvs, classes)
    fit, dev = dev_split(read_queries(write_queries(data, csvs, "train", classes)))
    fit_csv = _write_rows(csvs / "fit.csv", fit)
    neg_root = Path(args.negatives_dir)
    train_neg = neg_root / f"train-{args.negatives}-s{args.seed}" if args.negatives else None
    if train_neg:
        build_negatives(data, train_neg, split="train", count=args.negatives, seed=args.seed)
    dev_neg_paths = build_negatives(data, neg_root / f"dev-{args.dev_negatives}-s{args.seed}", split="dev",
                                    count=args.dev_negatives, seed=args.seed)
    cfg = ExportConfig(catalog=catalog_csv, out=out / "unused", teacher=args.teacher,
                       pretrained=args.teacher_checkpoint if args.teacher_checkpoint == "random"
                       else str(Path(args.teacher_checkpoint).resolve()),
                       distill_images=(_link_photos(fit, csvs / "fit-photos"),), finetune_labeled=fit_csv,
                       seed=args.seed, threads=args.threads, negatives=train_neg, **cfg_fields)
    ft = cfg.finetune  # no fine-tuning here, but the step checks a batch fits the products there are
    cfg = replace(cfg, finetune=replace(ft, epochs=0, batch_size=min(ft.batch_size, ft.photos_per_product * (
        len(classes) if classes else ft.batch_size))))
    t = teacher_step(cfg, read_catalog(catalog_csv), progress=True)
    if mixed:
        held = {p.resolve() for p in t.held.paths} if t.held else set()
        mix_from = [q.image for q in fit if q.image.resolve() not in held]
        cfg = replace(cfg, distill_images=cfg.distill_images + (
            write_mixed(mix_from, mixed, out / "data" / f"mixed-{mixed}-s{args.seed}", args.seed),))
    pos = {p.id: i for i, p in enumerate(t.table.products)}
    dev_images = [load_image(q.image) for q in dev]
    negs = [load_image(p) for p in dev_neg_paths]
    teacher = t.teacher
    # one catalog image per product here: key i is product i
    return Prepared(cfg=cfg, teacher_step=t, dev=dev, dev_images=dev_images,
                    dev_products=np.array([pos[q.id] for q in dev]), negatives=negs,
                    q_t=teacher.encode(preprocess_batch(dev_images, t.preprocess)),
                    cat_t=teacher.encode(preprocess_batch(t.images, t.preprocess)),
                    neg_t=teacher.encode(preprocess_batch(negs, t.preprocess)))


def _number_list(text: str, number: type, kind: str, what: str) -> list:
    """`text` as comma-separated finite numbers >= 0 of type `number`, or argparse's one-line error."""
    try:
        values = [number(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {kind}, got {text!r}") from None
    if any(not (math.isfinite(v) and v >= 0) for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be finite and >= 0, got {text!r}")
    return values


def _epoch_list(text: str) -> list[int]:
    return _number_list(text, int, "whole numbers", "epochs")


def _weight_list(text: str) -> list[float]:
    return _number_list(text, float, "numbers", "weights")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_setup_arguments(ap, negatives=300, dev_negatives=300)
    ap.add_argument("--student", default="mobilenetv3_small_100")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--epochs", default=[8], metavar="E1,E2,...", type=_epoch_list,
                    help="distillation epochs; several: one student each, on one set of teacher targets; 0: the "
                         "student as it starts (with teacher-tower: the teacher's own single pass at its side)")
    ap.add_argument("--views-per-image", type=int, default=8, help="per catalog image; a quarter of it per photo")
    ap.add_argument("--colour-cast", type=float, default=0.0, metavar="G",
                    help="each distillation view's channels scaled by their own gain in [1-G, 1+G] (export --colour-cast)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--learning-rate", type=float, default=None,
                    help="default: the export's for this student (export/student.distill_learning_rate)")
    ap.add_argument("--relational-weight", type=float, default=1.0)
    ap.add_argument("--label-weight", default=[1.0], metavar="W1,W2,...", type=_weight_list,
                    help="the product cross-entropy's weight; several: one student per weight and epochs, on one "
                         "set of teacher targets")
    ap.add_argument("--onnx", type=Path, default=None, metavar="FILE",
                    help="distil nothing: measure this student, already exported (an fp32 ONNX file at "
                         "--image-size, e.g. bench/grocery.py's OUT/models/student.fp32.onnx), the same way")
    ap.add_argument("--mixed", type=int, default=0, metavar="N",
                    help="also distil on N blends of two fit photos (write_mixed; calibration photos never used)")
    ap.add_argument("--shift", default=None, metavar="NAME",
                    help="also measure every student on the dev photos under one of bench/shifts.py's seeded "
                         "shifts (e.g. 'colour cast'), teacher and student alike (each run's dev_shifted)")
    args = ap.parse_args(argv)
    if args.shift is not None:
        from bench.shifts import SHIFTS

        if SHIFTS.get(args.shift) is None:
            ap.error(f"--shift is one of {', '.join(k for k, v in SHIFTS.items() if v)}")

    import torch

    from edge_search_export.pipeline import distill_set, student_step

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    load = os.getloadavg()
    t0 = time.perf_counter()
    d = prepare(args, out, mixed=args.mixed, student=args.student, image_size=args.image_size,
                views_per_image=args.views_per_image, colour_cast=args.colour_cast, batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                relational_weight=args.relational_weight, label_weight=args.label_weight[0])
    cfg, t = d.cfg, d.teacher_step
    shifted = _shifted(d, args.shift)
    if args.onnx:
        return _measure_onnx(args, argv, d, out, shifted)
    shared = distill_set(cfg, t, progress=True)
    bank_seconds = time.perf_counter() - t0
    runs = []
    for label_weight, epochs in itertools.product(args.label_weight, args.epochs):
        torch.manual_seed(args.seed)  # every student starts from the same weights
        s = student_step(replace(cfg, epochs=epochs, label_weight=label_weight), t, True, inputs=shared)
        run = {"epochs": epochs, "label_weight": s.info["label_weight"],
               **_student_figures(d, shifted, lambda images: _student_vectors(s.module, images, s.preprocess))}
        runs.append({**run, "student": s.info})
        print(json.dumps({**run, "distill_seconds": s.info["distillation"]["seconds"]}), flush=True)
    result = {"command": " ".join([".venv/bin/python", "bench/student_recipe.py"] + (argv or sys.argv[1:])),
              "settings": {k: v for k, v in vars(args).items() if k not in ("data", "out")},
              "runs": runs, "dev_photos": len(d.dev), "dev_negatives": len(d.negatives),
              "teacher_targets_seconds": round(bank_seconds, 1), "views": int(len(shared.bank.crops)),
              "seconds": round(time.perf_counter() - t0, 1), "bootstrap_seed": stats.SEED,
              "loadavg_start": [round(x, 2) for x in load], "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "result.json", json.dumps(result, indent=2, default=str) + "\n")
    return 0


def _shifted(d: Prepared, name: str | None) -> tuple[list, np.ndarray] | None:
    """The dev photos under the shift `name` and the teacher's vectors for them (None: no shift)."""
    if not name:
        return None
    from bench.shifts import apply_shift

    images = apply_shift(d.dev_images, name)
    return images, d.teacher_step.teacher.encode(preprocess_batch(images, d.teacher_step.preprocess))


def _student_figures(d: Prepared, shifted: tuple[list, np.ndarray] | None, student_vectors) -> dict:
    """{"dev": dev_figures} and, with a shift, {"dev_shifted": the same with teacher and student both given the
    shifted dev photos}; the student embeds the catalog and the negatives once, unshifted, for both."""
    cat_s, neg_s = student_vectors(d.teacher_step.images), student_vectors(d.negatives)
    out = {"dev": dev_figures(q_t=d.q_t, q_s=student_vectors(d.dev_images), cat_t=d.cat_t, cat_s=cat_s,
                              products=d.dev_products, neg_t=d.neg_t, neg_s=neg_s)}
    if shifted:
        images, q_t = shifted
        out["dev_shifted"] = dev_figures(q_t=q_t, q_s=student_vectors(images), cat_t=d.cat_t, cat_s=cat_s,
                                         products=d.dev_products, neg_t=d.neg_t, neg_s=neg_s)
    return out


def _measure_onnx(args, argv, d: Prepared, out: Path, shifted: tuple[list, np.ndarray] | None = None) -> int:
    """--onnx: the dev figures of a student exported elsewhere, beside the teacher's (OUT/result.json)."""
    from edge_search.core.encoder import OnnxEncoder
    from edge_search_export.onnx_export import INPUT, OUTPUT

    if not args.image_size:
        raise SystemExit("bench/student_recipe.py: --onnx needs --image-size (the file's input side)")
    enc = OnnxEncoder(args.onnx, input_name=INPUT, output_name=OUTPUT, threads=args.threads)
    pp = replace(d.teacher_step.preprocess, size=(args.image_size, args.image_size))
    vec = lambda images: np.concatenate([enc.embed(preprocess_batch(images[i:i + 64], pp))  # noqa: E731
                                         for i in range(0, len(images), 64)]).astype(np.float32)
    run = {"onnx": str(args.onnx), **_student_figures(d, shifted, vec)}
    print(json.dumps(run), flush=True)
    result = {"command": " ".join([".venv/bin/python", "bench/student_recipe.py"] + (argv or sys.argv[1:])),
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                           if k not in ("data", "out")},
              "runs": [run], "dev_photos": len(d.dev),
              "dev_negatives": len(d.negatives), "bootstrap_seed": stats.SEED}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "result.json", json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
