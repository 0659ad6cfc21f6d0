"""`edge-search export`: catalog + teacher -> a verified bundle directory.

Each step takes artefacts and returns artefacts; gates stop the export with
the measured value and the threshold. Everything is written to a staging
directory that is renamed to `--out` only when complete and verified.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import open_clip
import torch
from tqdm import tqdm

from edge_search.core.catalog import IMAGE_SUFFIXES, read_catalog
from edge_search.core.encoder import OnnxEncoder
from edge_search.core.images import load_image
from edge_search.core.index import projection_of
from edge_search.core.manifest import ModelInfo, PreprocessCfg
from edge_search.core.preprocess import preprocess_batch
from edge_search.core.products import ProductTable
from edge_search.core.signing import check_private_key
from edge_search.core.thumbnails import FOLDER as THUMBS_FOLDER
from edge_search.errors import ExportError, ImageError
from edge_search.files import atomic_write_bytes, check_new_folder, default_cache_dir, staged_directory

from .catalog_build import (INDEX_VIEWS, MILD_VIEW_STRENGTH, MILD_VIEWS, Calibration, CatalogSettings,
                            ExportSummary, GateBook, IndexPlan, ModelSet, Stream, finish_bundle, index_vectors,
                            prefill_on_ray, product_table, stream_catalog)
from .config import ExportConfig
from .distill import LabelTerm, build_view_bank, distill
from .embed_cache import EmbeddingCache
from .engine import LOCAL_RECORD, open_engine
from .finetune import HeldOut, adapt_teacher, product_text
from .index_choice import choose_index
from .interpolation import choose_interpolation
from .onnx_export import INPUT, OPSET, OUTPUT, export_onnx, parity
from .precision import BUDGET_BYTES, TIE_SHARE, choose, store_fp16, time_models
from .quantize import RECIPES, quantize_until
from .scenes import read_negatives
from .student import TEACHER_TOWER, Embedder, distill_learning_rate, make_student
from .teacher import load_teacher
from .text_export import export_text
from .views import views

log = logging.getLogger("edge_search.export")
QUERY_VIEWS = 4  # augmented views per catalog image used as export-time queries
INT8_TIE_MARGIN = 0.02  # fp32 top-two products closer than this: a tie, not counted by the int8 agreement gate
MIN_HELD_OUT = 20  # fewer held-out labeled photos than this: calibrate on augmented catalog views


def _load_all(paths: list[Path], desc: str, progress: bool) -> list[np.ndarray]:
    return [load_image(p) for p in tqdm(paths, desc=desc, unit="img", disable=not progress)]


def _distill_paths(dirs: tuple[Path, ...]) -> list[Path]:
    paths = []
    for d in dirs:
        if not Path(d).is_dir():
            raise ExportError(f"{d}: --distill-images needs a folder of photos")
        paths += sorted(p for p in Path(d).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return paths


def _query_views(images: list[np.ndarray], seed: int, *, strength: float = 1.0,
                 count: int = QUERY_VIEWS) -> tuple[list[np.ndarray], np.ndarray]:
    qs, src = [], []
    for i, img in enumerate(images):
        # skip view 0 (the image itself): queries are photos, not the catalog shot
        for v in views(img, count + 1, seed=seed * 7919 + 104729 + i, strength=strength)[1:]:
            qs.append(v)
            src.append(i)
    return qs, np.asarray(src)


def index_view_blocks(enc, images: list[np.ndarray], pp, seed: int) -> np.ndarray:
    """INDEX_VIEWS mild views of every catalog image embedded by the shipped encoder, as
    INDEX_VIEWS blocks of len(images) rows (block b, row i: view b of image i)."""
    imgs, _ = _query_views(images, seed + 2, strength=MILD_VIEW_STRENGTH, count=INDEX_VIEWS)
    vecs = _embed(enc, imgs, pp)
    return vecs.reshape(len(images), INDEX_VIEWS, -1).transpose(1, 0, 2).reshape(len(images) * INDEX_VIEWS, -1)


def _prototypes(vectors: np.ndarray, key_product: np.ndarray, products: int) -> np.ndarray:
    """Each product's mean image embedding, unit length."""
    out = np.zeros((products, vectors.shape[1]), np.float32)
    np.add.at(out, key_product, vectors)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _embed(encoder: OnnxEncoder, images: list[np.ndarray], pp, batch: int = 32) -> np.ndarray:
    return np.concatenate([encoder.embed(preprocess_batch(images[i:i + batch], pp))
                           for i in range(0, len(images), batch)])


def base_teacher(cfg: ExportConfig, base):
    """The teacher a --base catalog build embeds with: the one given (--teacher, --pretrained), checked
    to be the base's by the hash of its image tower's weights; -> it and a function embedding images."""
    want = base.models.teacher_sha256
    teacher = load_teacher(cfg.teacher, cfg.pretrained)
    got = teacher.weights_sha256()
    if got != want:
        raise ExportError(
            f"--base {cfg.base}: its catalog is embedded by its teacher ({base.models.teacher.get('model')}, "
            f"weights sha256 {str(want)[:12]}…), but --teacher {cfg.teacher} --pretrained {cfg.pretrained} has "
            f"sha256 {got[:12]}…: pass the same teacher (e.g. the teacher.pt kept with --save-models)")
    torch.set_num_threads(cfg.threads)
    pp = base.models.teacher_preprocess or teacher.preprocess
    return teacher, lambda imgs: teacher.encode(preprocess_batch(imgs, pp))


class _FromScratch(logging.Filter):
    """Drops load_teacher's "random weights: pipeline check only" warning when
    the teacher is about to be trained on labeled photos, where it is untrue."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "RANDOM weights" not in record.getMessage()


@dataclass
class TeacherStep:
    """The teacher, adapted to the catalog where labeled photos were given, and what it was adapted with."""
    teacher: Any
    table: ProductTable  # products and key -> product (key i = catalog image i)
    images: list[np.ndarray]  # the catalog's images, decoded
    negatives: list[np.ndarray]  # the --negatives scenes
    held: HeldOut | None  # labeled photos kept back from training: the calibration set
    labeled: Any
    gates: GateBook
    preprocess: PreprocessCfg  # the teacher's, with the interpolation chosen for it
    fidelity: dict  # what the steps measured, filled in as they go


@dataclass
class StudentStep:
    """The image tower that ships (a distilled student, or the teacher's own), not yet exported."""
    module: Any  # torch module: image -> unit embedding
    preprocess: PreprocessCfg
    info: dict | None  # the manifest's `student` record; None when the teacher's tower ships
    calib_photos: list[np.ndarray]  # photos for the int8 calibration
    gate_photos: list[np.ndarray]  # photos for the int8 gates


@dataclass
class ModelStep:
    """The shipped ONNX model in the stage (its numeric form chosen), gated, and the export-time queries."""
    encoder: OnnxEncoder
    precision: str  # "int8", "fp16" (weights stored as float16, computed in float32) or "fp32"
    quantization: dict | None
    query_images: list[np.ndarray]  # augmented catalog views
    query_src: np.ndarray  # the catalog image each came from


def teacher_step(cfg: ExportConfig, catalog, progress: bool) -> TeacherStep:
    """Load the teacher; fine-tune it on --finetune-labeled photos (keeping some back); choose its
    preprocessing interpolation."""
    trains = bool(cfg.finetune_labeled) and cfg.finetune.epochs > 0
    kept_teacher = Path(cfg.save_models, "teacher.pt").resolve() if cfg.save_models and trains else None
    if kept_teacher and cfg.pretrained and kept_teacher == Path(cfg.pretrained).resolve():
        raise ExportError(f"{cfg.save_models}: --save-models would overwrite the --pretrained checkpoint it reads")
    from_scratch = _FromScratch() if trains else None
    if from_scratch:
        log.addFilter(from_scratch)
    try:
        teacher = load_teacher(cfg.teacher, cfg.pretrained)
    finally:
        if from_scratch:
            log.removeFilter(from_scratch)
    if cfg.index_projection is not None and cfg.index_projection > teacher.embed_dim:  # (before any training)
        raise ExportError(f"--index-projection {cfg.index_projection}: the catalog vectors have only "
                          f"{teacher.embed_dim} dimensions")
    table = product_table(catalog)
    key_product = table.key_to_product
    images = _load_all([r.image for r in catalog.rows], "reading catalog", progress)
    negative_images = read_negatives(cfg.negatives, cfg.seed, progress) if cfg.negatives else []
    held: HeldOut | None = None
    labeled = None
    if cfg.finetune_labeled:
        info, held, labeled = adapt_teacher(teacher, cfg.finetune_labeled, [p.id for p in table.products],
                                   [product_text(p.name, p.description) for p in table.products], images,
                                   key_product, cfg.finetune, seed=cfg.seed, skip_bad=cfg.skip_bad, progress=progress,
                                   negatives=negative_images)
        teacher.provenance["finetune"] = info
        if trains:  # from scratch or further: the gates measure a real model now
            teacher.provenance["random_weights"] = False
            if teacher.provenance["pretrained"] == "random":
                teacher.provenance["licence"] = (f"own: trained from random weights on {info['labels']} "
                                                 "(its photos' terms apply)")
        if kept_teacher:
            Path(cfg.save_models).mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            torch.save({"state_dict": teacher.model.state_dict()}, buf)
            atomic_write_bytes(Path(cfg.save_models) / "teacher.pt", buf.getvalue())
    gates = GateBook(cfg.gates.enforce and not teacher.provenance["random_weights"])
    teacher_pp, interp_report = choose_interpolation(images, teacher.preprocess)
    return TeacherStep(teacher=teacher, table=table, images=images, negatives=negative_images, held=held,
                       labeled=labeled, gates=gates, preprocess=teacher_pp,
                       fidelity={"preprocess_interpolation": interp_report})


@dataclass
class DistillSet:
    """What a student is distilled on: the teacher's targets for augmented views at the student's side,
    the distill photos (some are kept for the int8 calibration and gates) and the label prototypes.
    Built once, it can train several students (bench/student_recipe.py compares recipes on one)."""
    bank: Any  # distill.ViewBank
    preprocess: PreprocessCfg  # the student's
    extra: list[np.ndarray]  # the distill photos, decoded
    prototypes: np.ndarray  # the teacher's unit product prototypes (the label term's)


def distill_set(cfg: ExportConfig, t: TeacherStep, progress: bool, engine=None) -> DistillSet:
    teacher, images, key_product = t.teacher, t.images, t.table.key_to_product
    side = cfg.image_size or t.preprocess.size[0]
    student_pp = replace(t.preprocess, size=(side, side))
    # held-out photos stay unseen by the student too: they are the calibration set
    unseen = {p.resolve() for p in t.held.paths} if t.held else set()
    product_of = {p.resolve(): int(pos) for p, pos in zip(t.labeled.paths, t.labeled.products)} if t.labeled else {}
    # labeled photos are distilled on too, whether or not a --distill-images folder holds them
    extra_paths = list(dict.fromkeys([*(p.resolve() for p in _distill_paths(cfg.distill_images)), *product_of]))
    extra: list[np.ndarray] = []
    extra_labels: list[int] = []
    for p in tqdm([p for p in extra_paths if p not in unseen], desc="reading distill images", unit="img",
                  disable=not progress or not extra_paths):
        try:
            extra.append(load_image(p))
            extra_labels.append(product_of.get(p, -1))
        except ImageError as e:
            log.warning("distill image skipped: %s", e)
    extra_views = max(2, cfg.views_per_image // 4)
    bank = build_view_bank(teacher, images + extra, [cfg.views_per_image] * len(images) +
                           [extra_views] * len(extra), student_pp, cfg.seed, progress,
                           labels=list(key_product) + extra_labels, negatives=t.negatives, engine=engine,
                           colour_cast=cfg.colour_cast)
    teacher_catalog = teacher.encode(preprocess_batch(images, t.preprocess),
                                     progress="teacher embeds catalog" if progress else None)
    return DistillSet(bank=bank, preprocess=student_pp, extra=extra,
                      prototypes=_prototypes(teacher_catalog, key_product, len(t.table)))


def student_step(cfg: ExportConfig, t: TeacherStep, progress: bool, inputs: DistillSet | None = None,
                 engine=None) -> StudentStep:
    """Distill a student from the teacher's image tower (--student), or ship the teacher's own.
    `inputs`: a distill_set already built for this configuration's side, views and seed."""
    if not cfg.student:
        return StudentStep(module=Embedder(t.teacher.image_tower).eval(), preprocess=t.preprocess, info=None,
                           calib_photos=[], gate_photos=[])
    side = cfg.image_size or t.preprocess.size[0]
    student = make_student(cfg.student, t.teacher, side, pretrained=cfg.student_pretrained)
    d = inputs or distill_set(cfg, t, progress, engine)
    if d.preprocess.size != (side, side):
        raise ExportError(f"internal: a distill set at {d.preprocess.size} for a student at {side} px")
    pick = np.random.default_rng([cfg.seed, 5]).permutation(len(d.extra))
    lr = cfg.learning_rate or distill_learning_rate(cfg.student)
    # the teacher's batch-norm statistics come from every fit photo; a batch of views would replace them
    from_teacher = cfg.student == TEACHER_TOWER
    report = distill(student, d.bank, d.preprocess, epochs=cfg.epochs, batch_size=cfg.batch_size,
                     learning_rate=lr, relational_weight=cfg.relational_weight,
                     seed=cfg.seed, progress=progress,
                     label_term=LabelTerm(d.prototypes, t.teacher.logit_scale, cfg.label_weight),
                     keep_norm_statistics=from_teacher)
    started = ("the teacher's weights" if from_teacher else
               "imagenet (timm)" if cfg.student_pretrained else None)
    info = {"arch": cfg.student, "pretrained": started, "learning_rate": lr, "label_weight": cfg.label_weight,
            "kept_norm_statistics": from_teacher,
            "image_size": side, "distill_images": len(d.extra),
            "views_per_image": cfg.views_per_image, "colour_cast": cfg.colour_cast, "seed": cfg.seed,
            "params": int(sum(p.numel() for p in student.parameters())),
            "distillation": report.to_json()}
    return StudentStep(module=Embedder(student).eval(), preprocess=d.preprocess, info=info,
                       calib_photos=[d.extra[i] for i in sorted(pick[:128])],
                       gate_photos=[d.extra[i] for i in sorted(pick[128:256])])


def model_step(cfg: ExportConfig, stage: Path, t: TeacherStep, s: StudentStep) -> ModelStep:
    """ONNX export (parity-gated against torch), then the shipped numeric form (precision.py): int8
    (gated against fp32, retried with the next recipe when a gate fails), fp16-stored weights (gated
    against fp32), or with `auto` both, timed here, the faster shipped: `model.onnx` in the stage."""
    images, table, key_product, gates = t.images, t.table, t.table.key_to_product, t.gates
    student_pp = s.preprocess
    fp32_path = stage / ("model.onnx" if cfg.quantize == "none" else ".model.fp32.onnx")
    export_onnx(s.module, student_pp.size, fp32_path)
    hold = sorted(set(range(0, len(images), 5)))  # every 5th image: held back from calibration
    calib_idx = [i for i in range(len(images)) if i not in set(hold)] or hold
    sample = preprocess_batch([images[i] for i in hold[:32]], student_pp)
    if cfg.save_models:  # before any gate: a failed gate is diagnosed on what it measured
        Path(cfg.save_models).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(cfg.save_models) / "student.fp32.onnx", fp32_path.read_bytes())
    t.fidelity["onnx_vs_torch"] = parity(s.module, fp32_path, sample, cfg.threads)
    gates.check("onnx-vs-torch min cosine", t.fidelity["onnx_vs_torch"]["min_cosine"], cfg.gates.onnx_min_cosine)
    query_imgs, query_src = _query_views(images, cfg.seed)
    fp32_enc = OnnxEncoder(fp32_path, input_name=INPUT, output_name=OUTPUT, threads=cfg.threads)
    if cfg.quantize == "none":
        return ModelStep(encoder=fp32_enc, precision="fp32", quantization=None, query_images=query_imgs,
                         query_src=query_src)
    held_q = ([q for q, src in zip(query_imgs, query_src) if src in set(hold)] + [images[i] for i in hold]
              + s.gate_photos)
    a = _embed(fp32_enc, held_q, student_pp)
    cat32 = _embed(fp32_enc, images, student_pp)
    by_product = table.best_scores(a @ cat32.T)
    top2 = np.sort(by_product, 1)[:, -2:] if len(table) > 1 else np.ones((len(a), 2))
    # Agreement counts where fp32 itself has decided: a query whose top two products lie
    # within INT8_TIE_MARGIN flips on rounding noise (int8 kept cosine ~0.998 on the grocery
    # student, yet near-ties flipped 12 % of all top-1s), and the no-match rule refuses such
    # queries anyway. Undecided queries are counted in the raw figure, recorded beside it.
    decided = (top2[:, 1] - top2[:, 0]) >= INT8_TIE_MARGIN

    def measure(path: Path) -> dict:
        b = _embed(OnnxEncoder(path, input_name=INPUT, output_name=OUTPUT, threads=cfg.threads),
                   held_q, student_pp)
        cos = (a * b).sum(1)
        same = key_product[np.argmax(a @ cat32.T, 1)] == key_product[np.argmax(b @ cat32.T, 1)]
        agree = float(same[decided].mean()) if decided.any() else float(same.mean())
        return {"mean_cosine": round(float(cos.mean()), 5), "min_cosine": round(float(cos.min()), 5),
                "top1_agreement": round(agree, 5), "decided_queries": int(decided.sum()),
                "top1_agreement_all": round(float(same.mean()), 5)}

    thresholds = {"int8": (cfg.gates.int8_mean_cosine, cfg.gates.int8_top1_agreement),
                  "fp16": (cfg.gates.fp16_mean_cosine, cfg.gates.fp16_top1_agreement)}

    def passes(precision: str, f: dict) -> bool:
        cos, top1 = thresholds[precision]
        return f["mean_cosine"] >= cos and f["top1_agreement"] >= top1

    made, settings, measured = {}, {}, {}
    if cfg.quantize in ("int8", "auto"):
        made["int8"] = stage / ".model.int8.onnx"
        calib_views = [v for i in calib_idx for v in views(images[i], 3, seed=cfg.seed + 17 + i)]
        # photos the student was distilled on cover activations studio shots never reach
        calib = preprocess_batch(calib_views[:256 - len(s.calib_photos)] + s.calib_photos, student_pp)
        # a gate that is not enforced needs no second recipe
        settings["int8"], attempts = quantize_until(fp32_path, made["int8"], calib, measure,
                                                    lambda f: passes("int8", f),
                                                    RECIPES if gates.enforce else RECIPES[:1])
        settings["int8"]["calibration_photos"] = len(s.calib_photos)
        measured["int8"] = attempts[-1]
        t.fidelity["int8_vs_fp32"] = {**attempts[-1], "images": len(held_q), "tie_margin": INT8_TIE_MARGIN,
                                      "attempts": attempts,
                                      "thresholds": {"mean_cosine": thresholds["int8"][0],
                                                     "top1_agreement": thresholds["int8"][1]}}
    if cfg.quantize in ("fp16", "auto"):
        try:
            stored = store_fp16(fp32_path, stage / ".model.fp16.onnx")
        except ExportError as e:
            if cfg.quantize == "fp16":
                raise
            # auto: int8 is the one candidate left (the reason without the stage's path)
            t.fidelity["fp16_skipped"] = str(e).replace(f"{fp32_path}: ", "")
            stored = None
        if stored is not None:
            made["fp16"] = stage / ".model.fp16.onnx"
            settings["fp16"] = {"format": "fp16-weights", **stored}
            measured["fp16"] = measure(made["fp16"])
            t.fidelity["fp16_vs_fp32"] = {**measured["fp16"], "images": len(held_q),
                                          "tie_margin": INT8_TIE_MARGIN,
                                          "thresholds": {"mean_cosine": thresholds["fp16"][0],
                                                         "top1_agreement": thresholds["fp16"][1]}}
    chosen = next(iter(made))
    if len(made) > 1:
        ok = {k: passes(k, measured[k]) or not gates.enforce for k in made}
        figures = time_models(made, student_pp.size, cfg.threads)
        for k, path in made.items():
            figures[k].update(bytes=path.stat().st_size, passes_gates=passes(k, measured[k]))
        chosen = choose(figures, ok, BUDGET_BYTES)
        t.fidelity["precision"] = {
            "candidates": figures, "chosen": chosen, "threads": cfg.threads, "budget_bytes": BUDGET_BYTES,
            "rule": f"fastest batch-1 p50 on the export machine among the candidates passing their gates "
                    f"within the budget; within {TIE_SHARE:.0%} of it the smaller file"}
    cos_gate, top1_gate = thresholds[chosen]
    gates.check(f"{chosen}-vs-fp32 mean cosine", measured[chosen]["mean_cosine"], cos_gate)
    gates.check(f"{chosen}-vs-fp32 top-1 agreement", measured[chosen]["top1_agreement"], top1_gate)
    model_path = stage / "model.onnx"
    made[chosen].replace(model_path)
    for path in [*made.values(), fp32_path]:
        path.unlink(missing_ok=True)
    return ModelStep(encoder=OnnxEncoder(model_path, input_name=INPUT, output_name=OUTPUT, threads=cfg.threads),
                     precision=chosen, quantization=settings[chosen], query_images=query_imgs,
                     query_src=query_src)


def catalog_encoder_step(cfg: ExportConfig, stage: Path, catalog, t: TeacherStep, s: StudentStep, m: ModelStep,
                         progress: bool, engine=None) -> tuple[ModelSet, Stream, np.ndarray]:
    """Embed the catalog (through the embedding cache) under every catalog-encoder option, choose one,
    and gather the no-match calibration. Returns the model set a catalog build needs, the catalog's
    vectors, and the export-time query vectors (the index choice measures on them)."""
    # Catalog vectors: by the device encoder itself, by the teacher whose space
    # the student was trained into, or both (each catalog image then has its
    # teacher vector and its own student vector in the index). Every option
    # must let the shipped model name the catalog's own images and mild views
    # of them (the catalog self-retrieval gates); among those that do, the one
    # naming the held-out labeled store photos best wins (augmented catalog
    # views when there are too few photos). The catalog's vectors go through
    # the embedding cache, so a later `--base` build embeds only what changed.
    teacher, images, table, held, enc = t.teacher, t.images, t.table, t.held, m.encoder
    key_product, student_pp = table.key_to_product, s.preprocess
    teacher_sha = teacher.weights_sha256() if cfg.student else None
    models = ModelSet(
        folder=stage, model_info=ModelInfo(file="model.onnx", input=INPUT, output=OUTPUT,
                                           embed_dim=teacher.embed_dim,
                                           precision=m.precision, opset=OPSET),
        preprocess=student_pp, catalog_encoder="teacher+student+views" if cfg.student else "student",
        teacher={**teacher.provenance, "preprocess_size": list(t.preprocess.size)}, student=s.info,
        fidelity={**t.fidelity, "quantization": m.quantization},
        producer={"torch": torch.__version__, "open_clip": open_clip.__version__, "onnx": onnx.__version__},
        teacher_sha256=teacher_sha, teacher_preprocess=t.preprocess if cfg.student else None, seed=cfg.seed)
    teacher_embed = (lambda imgs: teacher.encode(preprocess_batch(imgs, t.preprocess))) if cfg.student else None
    with EmbeddingCache(cfg.embedding_cache or default_cache_dir()) as cache:
        (stage / THUMBS_FOLDER).mkdir(exist_ok=True)
        on_ray = {}
        if engine is not None:  # the workers embed and thumbnail; the stream below finds it all done
            catalog, on_ray, _ = prefill_on_ray(engine, catalog, models, cache,
                                                   teacher=teacher if cfg.student else None,
                                                   thumbs_dir=stage / THUMBS_FOLDER, progress=progress)
        stream = stream_catalog(catalog, models, cache=cache, threads=cfg.threads, teacher_embed=teacher_embed,
                                thumbs_dir=stage / THUMBS_FOLDER, progress=progress)
        stream.embedded = {n: k + on_ray.get(n, 0) for n, k in stream.embedded.items()}
    query_src = m.query_src
    queries = _embed(enc, m.query_images, student_pp)
    student_vecs = stream.vectors["student"]
    mild_vecs = stream.vectors["mild"].reshape(len(images) * MILD_VIEWS, -1)
    mild_src = np.repeat(np.arange(len(images)), MILD_VIEWS)
    held_vecs = _embed(enc, held.images, student_pp) if held and len(held.images) >= MIN_HELD_OUT else None
    names = ["student"] + (["teacher", "teacher+student", "teacher+student+views"] if cfg.student else [])
    options = {name: index_vectors(stream, name)[0] for name in names}
    keys_of = {name: np.concatenate([key_product] * (len(v) // len(images))) for name, v in options.items()}
    enc_report = {}
    for name, vecs in options.items():
        kp = keys_of[name]
        top1 = lambda q: kp[np.argmax(q @ vecs.T, 1)]  # noqa: E731
        enc_report[name] = {"augmented_query_top1": round(float((top1(queries) == key_product[query_src]).mean()), 5),
                            "catalog_self_top1": round(float((top1(student_vecs) == key_product).mean()), 5),
                            "catalog_mild_view_top1": round(float((top1(mild_vecs) == key_product[mild_src]).mean()),
                                                            5)}
        if held_vecs is not None:
            enc_report[name]["held_out_photo_top1"] = round(float((top1(held_vecs) == held.products).mean()), 5)
        enc_report[name]["passes_self_gates"] = bool(
            enc_report[name]["catalog_self_top1"] >= cfg.gates.catalog_self_top1
            and enc_report[name]["catalog_mild_view_top1"] >= cfg.gates.catalog_views_top1)
    decided_by = "held_out_photo_top1" if held_vecs is not None else "augmented_query_top1"
    # none passing: the one closest to passing, so the gate below fails on the best there is
    closest = max(options, key=lambda n: min(enc_report[n]["catalog_self_top1"] / max(cfg.gates.catalog_self_top1, 1e-9),
                                             enc_report[n]["catalog_mild_view_top1"] / max(cfg.gates.catalog_views_top1, 1e-9)))
    passing = [n for n in options if enc_report[n]["passes_self_gates"]] or [closest]
    # ties go to the smaller index, then to the teacher's (its space is the one distilled into)
    preference = {"teacher": 3, "student": 2, "teacher+student": 1, "teacher+student+views": 0}
    chosen_enc = cfg.catalog_encoder if cfg.catalog_encoder in options else \
        max(passing, key=lambda n: (enc_report[n][decided_by], preference[n]))
    t.fidelity["catalog_encoder"] = {**enc_report, "chosen": chosen_enc, "decided_by": decided_by,
                                     "rule": "the best by decided_by among the options passing the catalog "
                                             "self-retrieval gates",
                                     "queries": int(len(queries)), "mild_views": int(len(mild_vecs)),
                                     "held_out_photos": 0 if held_vecs is None else int(len(held_vecs)),
                                     "forced": cfg.catalog_encoder is not None}

    # "no match": calibrated on photos nobody trained on, else on augmented catalog views,
    # plus the --negatives scenes (a reserved "no product" class, if the measurement keeps it)
    ids = [p.id for p in table.products]
    if held_vecs is not None:
        cal_vecs, cal_ids = held_vecs, [ids[i] for i in held.products]
        cal_source = f"{len(held.images)} held-out labeled photos ({Path(cfg.finetune_labeled).name})"
    else:
        cal_vecs, cal_ids = queries, [ids[key_product[i]] for i in query_src]
        cal_source = f"{len(queries)} augmented views of the catalog images"
    neg_vecs = _embed(enc, t.negatives, student_pp) if t.negatives else None
    calibration = Calibration(vectors=cal_vecs, product_ids=tuple(cal_ids), source=cal_source, negatives=neg_vecs,
                              negatives_source=f"{len(neg_vecs)} no-product scenes ({Path(cfg.negatives).name})"
                              if neg_vecs is not None else "",
                              negatives_dir=str(cfg.negatives) if cfg.negatives is not None else None)
    return replace(models, catalog_encoder=chosen_enc, calibration=calibration), stream, queries


def text_step(cfg: ExportConfig, t: TeacherStep, chosen_enc: str):
    """Words -> the same space: the teacher's text tower, its tokenizer, product text (the catalog
    build calls it with the bundle's product table and vectors)."""
    def step(stage: Path, text_table: ProductTable, stream: Stream, gates: GateBook, shipped):
        teacher_vecs = stream.vectors.get("teacher")
        if teacher_vecs is None:
            teacher_vecs = t.teacher.encode(preprocess_batch(t.images, t.preprocess))
        # the product-text weight is chosen against one encoder's catalog: the teacher's for teacher+student
        return export_text(t.teacher, stage, text_table, {"teacher": teacher_vecs, "student": stream.vectors["student"]},
                           "teacher" if chosen_enc.startswith("teacher+") else chosen_enc,
                           quantize=cfg.quantize != "none", threads=cfg.threads, check=gates.check,
                           gates=cfg.gates, shipped=(chosen_enc, shipped[0].array(), shipped[1]))

    return step


def run_export(cfg: ExportConfig, progress: bool = True) -> ExportSummary:
    """`edge-search export` without --base: the model build (teacher, student, model, catalog encoder),
    then the catalog build (finish_bundle) into a staged --out."""
    t_start = time.perf_counter()
    out = Path(cfg.out)
    if out.exists() and not cfg.force:
        raise ExportError(f"{out}: already exists (pass --force to replace it)")
    check_new_folder(out, "--out", ExportError)  # an --out that cannot be written fails before the training
    if cfg.sign_key is not None:
        check_private_key(cfg.sign_key)  # a wrong key fails now, not after the training
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    catalog = read_catalog(cfg.catalog, skip_bad=cfg.skip_bad)
    for line in catalog.skipped:
        log.warning("skipped %s", line)
    with open_engine(cfg.engine) as engine:
        t = teacher_step(cfg, catalog, progress)
        s = student_step(cfg, t, progress, engine=engine)
        with staged_directory(out, force=cfg.force) as stage:
            manifest, stream = _model_and_catalog(cfg, stage, out, catalog, t, s, progress, engine)
    return ExportSummary(out=out, manifest=manifest, skipped=catalog.skipped,
                         seconds=time.perf_counter() - t_start, embedded=dict(stream.embedded))


def _model_and_catalog(cfg: ExportConfig, stage: Path, out: Path, catalog, t: TeacherStep, s: StudentStep,
                       progress: bool, engine) -> tuple[Any, Stream]:
    """The shipped model, the catalog encoder, then the catalog build, into `stage`."""
    m = model_step(cfg, stage, t, s)
    models, stream, queries = catalog_encoder_step(cfg, stage, catalog, t, s, m, progress, engine)

    def index_choice(vectors, index_table: ProductTable) -> IndexPlan:
        array = vectors.array()
        projection = projection_of(array, cfg.index_projection, seed=cfg.seed) if cfg.index_projection else None
        choice = choose_index(array, index_table.key_to_product, queries,
                              threshold=cfg.gates.index_top1_agreement, forced_dtype=cfg.index_dtype,
                              projection=projection)
        if choice.report["forced_dtype"] is None:
            picked = next(c for c in choice.report["candidates"] if c["label"] == choice.label)
            t.gates.check("index top-1 agreement vs exact f32", picked["top1_agreement_vs_exact_f32"],
                          cfg.gates.index_top1_agreement)
        return IndexPlan(choice.dtype, choice.exact, choice.rescore, choice.report, projection)

    settings = CatalogSettings(out=out, name=cfg.name or out.name, gates=cfg.gates, no_match=cfg.no_match,
                               force=cfg.force, threads=cfg.threads, sign_key=cfg.sign_key,
                               index_dtype=cfg.index_dtype,
                               build=engine.record() if engine is not None else LOCAL_RECORD, progress=progress)
    manifest = finish_bundle(stage, settings, models, catalog, stream, index_choice=index_choice, gates=t.gates,
                             fidelity=t.fidelity,
                             text_step=text_step(cfg, t, models.catalog_encoder) if cfg.with_text else None)
    return manifest, stream
