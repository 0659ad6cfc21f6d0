"""The reference teacher's training recipe, measured on the dev split (issue #12, items 3 and 4).

    .venv/bin/python bench/teacher_recipe.py --out bench-out/teacher/base
    .venv/bin/python bench/teacher_recipe.py --negatives 600 --out bench-out/teacher/neg

Trains the offline reference teacher from random weights on the dev split's
fit photos (bench/grocery_data.dev_split) with export/finetune.py, exactly as
`edge-search export --finetune-labeled` does, and measures on the dev photos
only (val is never read here):
  - recall@1/@5 photo -> studio image (the catalog's 81 iconic images, embedded
    by the same teacher), every --eval-every epochs and at the end;
  - the non-product question: dev negatives (bench/negatives.py, cut from the
    dev photos) rejected by the score floor that rejects at most 5 % of the
    correctly named dev photos.
With --negatives N the training also sees N train-split negatives (cut from the
fit photos only). With --unseen-products N, N products (drawn by --seed) are kept
out of training altogether, and the dev figures add how their photos fare as
products no model ever saw: refused when left out of the index, named when added
to it without retraining (unseen_*). Writes OUT/result.json and, with --save, OUT/teacher.pt (the
checkpoint `load_teacher(config, path)` reads) and OUT/teacher.json.

`--speed` only times the teacher's image tower (ONNX int8, its test sides)
against a student (`--student`, default MobileNetV3-S; `teacher-tower` too) as
ONNX int8 and fp32 at `--student-side`, batch 1, each model alone in its own
process per round (random weights: latency does not depend on them); the ratio
is against the student's faster form.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/grocery.py: spin-waiting threads on a shared box

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, fields, replace  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import numpy as np  # noqa: E402

from bench.grocery_data import DEFAULT_DATA, dev_split, read_classes  # noqa: E402
from bench.negatives import build_negatives  # noqa: E402
from edge_search.files import atomic_write_bytes, atomic_write_text  # noqa: E402
from edge_search.errors import EdgeSearchError  # noqa: E402
from edge_search.core.images import load_image  # noqa: E402
from edge_search.core.preprocess import preprocess_batch  # noqa: E402

REFERENCE_TEACHER = REPO / "models" / "teachers" / "grocery-resnet.json"
# The reference teacher's recipe (FinetuneSettings beyond their defaults), chosen on the dev split:
# ResNet-18 trained at 128 px, 42 epochs, lr 3e-3, with `--negatives 600`. The config runs it at
# 192 px (`--sides 128,160,192,224` on the 14-epoch teacher: dev R@1 0.356 / 0.374 / 0.372 / 0.374,
# within one photo of each other from 160 up; at 192 its int8 tower costs >= 5x the 128-px student's
# (bench/grocery.py times both in its own run), and 192 led 224 on dev R@5 and negatives refused).
# 28 epochs, not 14: dev R@1 0.372 after 14, 0.430 at epoch 14 of 28 and 0.573 at 21 (docs/benchmarks/
# README.md, "Variants on dev"); about 80 minutes at 1 thread beside another run. 42, not 28: the
# ensemble's dev R@1 0.667 -> 0.791, unknown products refused 25.9 -> 31.6 % ("Longer training: 42
# epochs"); 64 minutes at 2 threads, alone.
# Each step at 112, 128 or 160 px, not always 128: the 112-px pass a teacher-tower student starts from
# then keeps 0.82 of the ensemble's dev R@1, not 0.63, the ensemble as good ("Training at several sides").
TEACHER_RECIPE = {"epochs": 42, "learning_rate": 3e-3, "image_size": 128, "train_sides": (112, 128, 160)}
MAX_FALSE_REJECT = 0.05


def _rows(data: Path, listing: str, ids: dict[int, str]) -> list[tuple[Path, str]]:
    rows = []
    for line in (data / listing).read_text(encoding="utf-8").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[0]:
            rows.append((data / parts[0], ids[int(parts[1])]))
    return rows


def rejection_at_budget(correct_scores: np.ndarray, negative_scores: np.ndarray,
                        budget: float = MAX_FALSE_REJECT) -> tuple[float, float]:
    """The highest score floor rejecting at most `budget` of the correctly named
    photos (their top-1 scores), and the share of negatives it rejects (top-1
    score below the floor) -> (floor, share rejected)."""
    floor = score_floor(correct_scores, budget)
    if np.isnan(floor):
        return floor, float("nan")
    return floor, float(np.mean(np.asarray(negative_scores) < floor))


def score_floor(correct_scores: np.ndarray, budget: float = MAX_FALSE_REJECT) -> float:
    """The highest top-1 score floor below which at most `budget` of these correctly named photos fall
    (nan for none)."""
    s = np.sort(np.asarray(correct_scores, np.float64))
    if len(s) == 0:
        return float("nan")
    return float(s[int(np.floor(budget * len(s)))])  # photos scoring exactly the floor are kept


LEFT_OUT, LEFT_OUT_DRAWS = 10, 20  # as bench/grocery.py's no-match table: 10 products out of the index


def unknown_rejection(sims: np.ndarray, products: np.ndarray, left_out: int = LEFT_OUT, draws: int = LEFT_OUT_DRAWS,
                      budget: float = MAX_FALSE_REJECT, seed: int = 0) -> float:
    """Photos of products missing from the catalog, refused by the top-1 score floor that refuses at most
    `budget` of the correctly named photos of the products kept: `left_out` products drawn out of the
    catalog `draws` times (seeded), the share refused over all draws' unknown photos.
    `sims`: photos x catalog products scores; `products`: each photo's product position."""
    rng = np.random.default_rng([seed, 4242])
    refused = total = 0
    shown = np.unique(products)
    for _ in range(draws):
        out = rng.choice(shown, size=min(left_out, len(shown) - 1), replace=False)
        kept = np.setdiff1d(np.arange(sims.shape[1]), out)
        s = sims[:, kept]
        known = ~np.isin(products, out)
        top = kept[s.argmax(1)]
        right = known & (top == products)
        floor = score_floor(s.max(1)[right], budget)
        refused += int((s.max(1)[~known] < floor).sum())
        total += int((~known).sum())
    return refused / max(1, total)


def unseen_figures(sims: np.ndarray, products: np.ndarray, unseen: np.ndarray,
                   budget: float = MAX_FALSE_REJECT) -> dict:
    """Products the teacher never trained on (`unseen` positions; --unseen-products): refused when left out
    of the index, by the top-1 floor refusing at most `budget` of the other products' correctly named
    photos; and named right when their catalog image is in it (a product added without retraining).
    `sims`: photos x catalog products scores; `products`: each photo's product position."""
    new = np.isin(products, unseen)
    kept = np.setdiff1d(np.arange(sims.shape[1]), unseen)
    s = sims[:, kept]
    right = ~new & (kept[s.argmax(1)] == products)
    floor = score_floor(s.max(1)[right], budget)
    return {"unseen_refused_at_5pct": round(float(np.mean(s.max(1)[new] < floor)), 4),
            "unseen_r1_in_index": round(float(np.mean(sims[new].argmax(1) == products[new])), 4),
            "seen_r1": round(float(np.mean(sims[~new].argmax(1) == products[~new])), 4),
            "unseen_photos": int(new.sum())}


def measure(teacher, catalog_vecs: np.ndarray, dev_images: list[np.ndarray], dev_products: np.ndarray,
            negatives: list[np.ndarray], unseen: np.ndarray | None = None) -> dict:
    pp = teacher.preprocess
    q = teacher.encode(preprocess_batch(dev_images, pp))
    sims = q @ catalog_vecs.T
    order = np.argsort(-sims, axis=1)
    top1 = order[:, 0] == dev_products
    own = np.arange(sims.shape[1])[None, :] == dev_products[:, None]
    out = {"dev_r1": round(float(top1.mean()), 4),
           "dev_r5": round(float((order[:, :5] == dev_products[:, None]).any(1).mean()), 4),
           "unknown_rejected_at_5pct": round(unknown_rejection(sims, dev_products), 4),
           # what a photo of a product missing from the index would score: its nearest other product
           "other_p50": round(float(np.median(np.where(own, -np.inf, sims).max(1))), 4)}
    if unseen is not None and len(unseen):
        out.update(unseen_figures(sims, dev_products, unseen))
    if negatives:
        neg = teacher.encode(preprocess_batch(negatives, pp)) @ catalog_vecs.T
        floor, rejected = rejection_at_budget(sims.max(1)[top1], neg.max(1))
        out.update({"neg_rejected_at_5pct": round(rejected, 4), "floor": round(floor, 4),
                    "correct_p5": round(float(np.percentile(sims.max(1)[top1], 5)), 4),
                    "correct_p50": round(float(np.median(sims.max(1)[top1])), 4),
                    "neg_max_p50": round(float(np.median(neg.max(1))), 4)})
    return out


SPEED_CALLS = 20  # timed calls per model per round of --speed


def speed(teacher_config: str, student_arch: str, rounds: int, threads: int, teacher_side: int | None = None,
          student_side: int | None = None) -> dict:
    """ms per image (p50, batch 1) of the teacher's int8 tower and of the student as int8 and as fp32 (the
    export ships the faster form that passes its gates; fp16-stored weights run as fp32), each model alone
    in its own process per round (export/timing.py); sides default to the teacher config's input size."""
    import tempfile

    import torch

    from edge_search_export.onnx_export import export_onnx
    from edge_search_export.quantize import quantize_int8
    from edge_search_export.student import Embedder, make_student
    from edge_search_export.teacher import load_teacher
    from edge_search_export.timing import time_alone

    teacher = load_teacher(teacher_config, "random")
    t_side = teacher_side or teacher.preprocess.size[0]
    s_side = student_side or teacher.preprocess.size[0]
    torch.manual_seed(0)
    student = make_student(student_arch, teacher, s_side)
    rng = np.random.default_rng(0)
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, module, side in (("teacher", Embedder(teacher.image_tower), t_side),
                                   ("student", Embedder(student), s_side)):
            fp32, int8 = Path(tmp) / f"{name}.fp32.onnx", Path(tmp) / f"{name}.int8.onnx"
            export_onnx(module.eval(), (side, side), fp32)
            quantize_int8(fp32, int8, rng.standard_normal((16, 3, side, side)).astype(np.float32))
            models[f"{name}_int8"] = (int8, (side, side))
            if name == "student":
                models["student_fp32"] = (fp32, (side, side))
        times = time_alone(models, rounds, SPEED_CALLS, threads, progress=True)
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    fastest = min(("student_int8", "student_fp32"), key=p50.get)
    return {"ms_p50": {k: round(v, 3) for k, v in p50.items()}, "teacher_side": t_side, "student_side": s_side,
            "student": student_arch, "student_fastest": fastest,
            "teacher_slower_x": round(p50["teacher_int8"] / p50[fastest], 2), "rounds": rounds,
            "calls_per_round": SPEED_CALLS, "threads": threads, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def _setting_value(name: str, text: str, ap: argparse.ArgumentParser):
    """`--set NAME=VALUE`'s value: None, a bool, a number, or for train_sides a comma list of sides."""
    try:
        if name == "train_sides":
            return tuple(int(x) for x in text.split(",") if x.strip())
        if text == "None":
            return None
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        return int(text) if text.lstrip("-").isdigit() else float(text)
    except ValueError:
        ap.error(f"--set {name}: not a value: {text!r}")


def main(argv: list[str] | None = None) -> int:
    from edge_search_export.config import FinetuneSettings
    from edge_search_export.finetune import finetune_teacher, held_back, load_photos, product_text
    from edge_search_export.teacher import load_teacher

    known = {f.name: f for f in fields(FinetuneSettings)}
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", required=True)
    ap.add_argument("--speed", action="store_true", help="only time teacher (int8) vs student (int8 and fp32), batch 1")
    ap.add_argument("--student", default="mobilenetv3_small_100")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--teacher-side", type=int, default=None, help="--speed: teacher input side (default: config's)")
    ap.add_argument("--student-side", type=int, default=None, help="--speed: student input side (default: teacher's)")
    ap.add_argument("--teacher", default=str(REFERENCE_TEACHER))
    ap.add_argument("--init", default="random",
                    help="weights to start from: random, or a saved teacher.pt (then the pretrained defaults apply: "
                         "no class term, text tower frozen, lr 1e-5, unless --set says otherwise)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help=f"a FinetuneSettings field ({', '.join(known)}); defaults: TEACHER_RECIPE")
    ap.add_argument("--negatives", type=int, default=0, help="train-split negatives seen in training (0: none)")
    ap.add_argument("--dev-negatives", type=int, default=300)
    ap.add_argument("--negatives-dir", default="bench-out/negatives",
                    help="where the negatives folders are built, kept between runs (default: %(default)s)")
    ap.add_argument("--unseen-products", type=int, default=0, metavar="N",
                    help="N products (drawn by --seed) the teacher never trains on: their fit photos, catalog "
                         "images and texts are left out; the dev figures add how their photos are refused "
                         "(unseen_*). With --sides: the same products, measured on the --init teacher")
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", action="store_true", help="keep OUT/teacher.pt and OUT/teacher.json")
    ap.add_argument("--sides", default=None, metavar="S1,S2+S3,...",
                    help="no training: measure the --init teacher on dev at these input sides, S2+S3 an ensemble "
                         "of sides (OUT/sides.json)")
    ap.add_argument("--shift", default=None, metavar="NAME",
                    help="with --sides: the dev photos under one of bench/shifts.py's seeded shifts "
                         "(e.g. 'colour cast'), as a store whose light the training never showed")
    args = ap.parse_args(argv)
    if args.shift is not None:
        from bench.shifts import SHIFTS, apply_shift

        if not args.sides or SHIFTS.get(args.shift) is None:
            ap.error(f"--shift goes with --sides and is one of {', '.join(k for k, v in SHIFTS.items() if v)}")

    import torch

    torch.set_num_threads(args.threads)
    if args.speed:
        result = speed(args.teacher, args.student, args.rounds, args.threads, args.teacher_side, args.student_side)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out) / "speed.json", json.dumps(result, indent=2) + "\n")
        print(json.dumps(result))
        return 0
    overrides = {}
    for item in args.set:
        k, _, v = item.partition("=")
        if k not in known:
            ap.error(f"unknown setting {k}")
        overrides[k] = _setting_value(k, v, ap)
    try:
        settings = FinetuneSettings(**{**TEACHER_RECIPE, **overrides})
    except EdgeSearchError as e:
        ap.error(f"--set: {e}")
    data, out = Path(args.data).resolve(), Path(args.out)
    classes = read_classes(data)
    if not 0 <= args.unseen_products <= len(classes) - 2:  # two products left to tell apart and refuse by
        ap.error(f"--unseen-products must be between 0 and {len(classes) - 2} ({len(classes)} products), "
                 f"got {args.unseen_products}")
    out.mkdir(parents=True, exist_ok=True)
    ids = {c["class_id"]: c["id"] for c in classes}
    position = {c["id"]: i for i, c in enumerate(classes)}
    texts = []
    for c in classes:
        desc = data / c["description"]
        texts.append(product_text(c["id"].replace("-", " "),
                                  desc.read_text(encoding="utf-8", errors="replace").strip() if desc.is_file() else ""))
    catalog = [load_image(data / c["iconic"]) for c in classes]
    fit, dev = dev_split(_rows(data, "train.txt", ids), seed=0)
    # the photos an export on these fit photos keeps back for its no-match calibration are not
    # trained on here either, so a teacher reused by bench/grocery.py never saw them
    train_idx, held_idx = held_back([p for p, _ in fit], np.array([position[i] for _, i in fit]),
                                    FinetuneSettings().holdout)
    fit = [fit[i] for i in train_idx]

    unseen = np.sort(np.random.default_rng([args.seed, 31337]).choice(
        len(classes), args.unseen_products, replace=False)) if args.unseen_products else None
    teacher = load_teacher(args.teacher, args.init)
    side = max(settings.sides(teacher.preprocess.size[0]))  # the photos are shrunk for the largest
    dev_images = [load_image(p) for p, _ in dev]
    if args.shift:
        dev_images = apply_shift(dev_images, args.shift)
    dev_products = np.array([position[i] for _, i in dev])
    neg_root = Path(args.negatives_dir)
    dev_neg = [load_image(p) for p in build_negatives(data, neg_root / f"dev-{args.dev_negatives}-s{args.seed}",
                                                      split="dev", count=args.dev_negatives, seed=args.seed)]

    def catalog_vecs() -> np.ndarray:
        return teacher.encode(preprocess_batch(catalog, teacher.preprocess))

    if args.sides:
        rows = {}
        trained_pp, trained_sides = teacher.preprocess, teacher.sides
        for entry in args.sides.split(","):
            # "160": one pass at 160 px; "128+160+192": the test-time ensemble a config's test_sides makes
            sides = tuple(int(x) for x in entry.split("+"))
            teacher.preprocess = replace(trained_pp, size=(max(sides), max(sides)))
            teacher.sides = sides if len(sides) > 1 else ()
            rows[entry] = measure(teacher, catalog_vecs(), dev_images, dev_products, dev_neg, unseen)
            print(json.dumps({"side": entry, **rows[entry]}), flush=True)
        teacher.preprocess, teacher.sides = trained_pp, trained_sides
        atomic_write_text(out / "sides.json", json.dumps(
            {"init": args.init, "shift": args.shift,
             "command": " ".join([".venv/bin/python", "bench/teacher_recipe.py"]
                                                    + (argv or sys.argv[1:])), "dev": rows,
             "unseen_products": [classes[p]["id"] for p in unseen] if unseen is not None else []}, indent=2) + "\n")
        return 0

    # the products trained on; unseen ones lose their photos, catalog images and texts alike
    seen = np.setdiff1d(np.arange(len(classes)), unseen) if unseen is not None else np.arange(len(classes))
    train_position = {int(p): i for i, p in enumerate(seen)}
    fit = [row for row in fit if position[row[1]] in train_position]
    photos, kept, _ = load_photos([p for p, _ in fit], side, False, "")
    fit_products = np.array([train_position[position[fit[i][1]]] for i in kept])
    train_neg = [load_image(p) for p in build_negatives(data, neg_root / f"train-{args.negatives}-s{args.seed}",
                                                        split="train", count=args.negatives, seed=args.seed)] \
        if args.negatives else []

    def on_epoch(epoch: int) -> dict:
        if epoch % args.eval_every and epoch not in (1, settings.epochs):  # epoch 1: fail fast
            return {}
        row = measure(teacher, catalog_vecs(), dev_images, dev_products, dev_neg, unseen)
        print(json.dumps({"epoch": epoch, **row}), flush=True)
        return row

    load = os.getloadavg()
    t0 = time.perf_counter()
    report = finetune_teacher(teacher, photos, fit_products, [catalog[p] for p in seen], np.arange(len(seen)),
                              [texts[p] for p in seen], settings,
                              seed=args.seed, labels_name="train.txt (dev split: fit photos)", rows=len(fit),
                              progress=True, negatives=train_neg, on_epoch=on_epoch)
    wall = time.perf_counter() - t0
    final = report.history[-1]
    # a teacher trained on from a saved one: how that one was made, so its command chain reproduces it
    init_info = Path(args.init).with_suffix(".json") if args.init != "random" else None
    init_made_by = json.loads(init_info.read_text(encoding="utf-8")).get("command") \
        if init_info is not None and init_info.is_file() else None
    result = {"teacher": args.teacher, "init": args.init, "init_made_by": init_made_by,
              "unseen_products": [classes[p]["id"] for p in unseen] if unseen is not None else [],
              "settings": asdict(settings), "seed": args.seed,
              "negatives_train": len(train_neg), "negatives_dev": len(dev_neg),
              "fit_photos": len(photos), "held_back_for_calibration": len(held_idx),
              "dev_photos": len(dev_images),
              "dev": {k: final[k] for k in final if k.startswith(("dev_", "neg_", "unknown_", "floor", "correct_",
                                                                   "other_", "unseen_", "seen_"))},
              "train_seconds": round(wall, 1), "loadavg_start": [round(x, 2) for x in load],
              "loadavg_end": [round(x, 2) for x in os.getloadavg()], "threads": args.threads,
              "command": " ".join([".venv/bin/python", "bench/teacher_recipe.py"] + (argv or sys.argv[1:])),
              "finetune": report.to_json()}
    atomic_write_text(out / "result.json", json.dumps(result, indent=2) + "\n")
    if args.save:
        buf = io.BytesIO()
        torch.save({"state_dict": teacher.model.state_dict()}, buf)
        atomic_write_bytes(out / "teacher.pt", buf.getvalue())
        atomic_write_text(out / "teacher.json", json.dumps({k: result[k] for k in (
            "teacher", "command", "init_made_by", "settings", "seed", "negatives_train", "dev", "train_seconds",
            "loadavg_start", "loadavg_end", "threads")}, indent=2) + "\n")
    print(json.dumps({"dev": result["dev"], "train_seconds": result["train_seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
