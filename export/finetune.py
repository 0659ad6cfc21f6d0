"""Adapting the teacher to labeled store photos before distillation
(`edge-search export --finetune-labeled LABELS.csv`).

Each labeled photo is pulled towards its product and away from the others
with a CLIP-style contrastive loss, against two views of the product: its
catalog image (an augmented view, so the studio shot learns to meet the
hand-held photo) and its text (name + description, tokenized with open_clip's
tokenizer for the model). A pretrained teacher keeps its text tower frozen by
default so its alignment with language survives; a teacher that starts from
random weights trains both towers, which is how the offline reference teacher
is trained from scratch.

A share of each product's photos is held back (`holdout`, the last ones by
file name): never trained on, it is what the export calibrates the "no match"
decision on.

Export stage only (torch, open_clip); the runtime never imports this.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import open_clip
import torch
from torch.nn import functional as F
from tqdm import tqdm

from edge_search.core.products import product_words
from edge_search.errors import EdgeSearchError, ExportError, ImageError
from edge_search.evaluation.evaluate import read_queries
from edge_search.core.images import load_image
from edge_search.core.manifest import PreprocessCfg
from edge_search.core.preprocess import normalize, preprocess_batch, resize_and_crop

from .config import FinetuneSettings
from .distill import negatives_penalty
from .teacher import Teacher
from .views import augment

log = logging.getLogger("edge_search.export")
FROM_SCRATCH_LR = 2e-3
PRETRAINED_LR = 1e-5  # larger rates wash out what CLIP pretraining learned
# the classification-style term for a teacher learned from scratch; a pretrained teacher's
# space is kept (its CLIP alignment is what it brings), so it gets none unless asked
FROM_SCRATCH_CLASS_WEIGHT = 1.0


@dataclass(frozen=True)
class LabeledPhotos:
    """`image,id` rows of a labels file, resolved against the catalog's products."""

    source: Path
    rows: int  # rows in the file
    paths: tuple[Path, ...]
    products: np.ndarray  # position of each photo's product in the product table
    skipped: tuple[str, ...] = ()

    def split(self, holdout: float) -> tuple[np.ndarray, np.ndarray]:
        """-> (train, held-back) photo indices: see held_back."""
        return held_back(self.paths, self.products, holdout)


def _natural_key(path: Path) -> tuple:
    """`IMG_9.jpg` before `IMG_10.jpg`: digit runs compare as numbers."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", str(path)) if part)


def held_back(paths, products: np.ndarray, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """The photos kept back from training for the no-match calibration -> (train, held-back) indices,
    sorted. Per product, the last `holdout` share of its photos by file name (numbers in names
    compare as numbers), at least one; a product with a single photo keeps it for training.

    A block, not a random draw: photos of one product are usually shot in a sequence, so a random
    holdout sits next to near-duplicates the models trained on and scores like them, which makes
    the floor fitted on it stricter on new photos than its budget says."""
    train, held = [], []
    for pos in np.unique(products):
        idx = sorted(np.flatnonzero(products == pos).tolist(), key=lambda i: _natural_key(paths[i]))
        n = max(1, int(round(holdout * len(idx)))) if len(idx) > 1 and holdout > 0 else 0
        held += idx[len(idx) - n:]
        train += idx[:len(idx) - n]
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(held), dtype=np.int64)


def read_labeled(path: Path, product_ids: list[str], *, skip_bad: bool = False) -> LabeledPhotos:
    """Read a labels file; ids the catalog lacks and missing images are all
    reported at once (or skipped with --skip-bad)."""
    try:
        queries = read_queries(path)
    except EdgeSearchError as e:
        raise ExportError(f"--finetune-labeled: {e}") from None
    position = {pid: i for i, pid in enumerate(product_ids)}
    bad, paths, products = [], [], []
    for q in queries:
        if q.id not in position:
            bad.append(f"line {q.line}: id '{q.id}' is not in the catalog")
        elif not q.image.is_file():
            bad.append(f"line {q.line}: image {q.image} not found")
        else:
            paths.append(q.image)
            products.append(position[q.id])
    if bad and not skip_bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise ExportError(f"{path}: {len(bad)} bad row(s): {'; '.join(bad[:3])}{more} (--skip-bad skips them)")
    if not paths:
        raise ExportError(f"{path}: no usable labeled photos")
    return LabeledPhotos(source=Path(path), rows=len(queries), paths=tuple(paths),
                         products=np.asarray(products, dtype=np.int64), skipped=tuple(bad))


@dataclass
class FinetuneReport:
    labels: str
    rows: int
    photos: int
    holdout: int
    products: int
    towers: list[str]
    learning_rate: float
    image_size: int
    settings: dict
    seed: int
    class_weight: float = 0.0
    negatives: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        """What the manifest's `teacher.finetune` records."""
        st = self.settings
        margin = f" (margin {st['catalog_margin']:g})" if st.get("catalog_margin") else ""
        terms = [f"{st['catalog_weight']:g} x photo <-> catalog image{margin}" if st["catalog_weight"] else "",
                 f"{st['text_weight']:g} x photo and catalog image <-> product text" if st["text_weight"] else "",
                 f"{st['photo_weight']:g} x photo <-> photo of the same product" if st["photo_weight"] else "",
                 f"{self.class_weight:g} x photo and catalog image classified against product prototypes "
                 f"(scale {st['class_scale']:g}, label smoothing {st['label_smoothing']:g})"
                 if self.class_weight else "",
                 f"{st['negative_weight']:g} x negatives' soft-max product cosine above {st['negative_margin']:g} "
                 f"({self.negatives} negatives)" if self.negatives and st["negative_weight"] else "",
                 f"{st['unknown_weight']:g} x each photo's cosine to the nearest other product's catalog image "
                 f"above {st['unknown_margin']:g} and to its own below {st['known_margin']:g}"
                 if st.get("unknown_weight") else ""]
        return {"labels": self.labels, "rows": self.rows, "photos": self.photos, "holdout_photos": self.holdout,
                "products": self.products, "trained_towers": self.towers,
                "loss": "; ".join(t for t in terms if t), "negatives": self.negatives,
                "epochs": self.settings["epochs"], "learning_rate": self.learning_rate, "image_size": self.image_size,
                "seed": self.seed, "seconds": round(self.seconds, 1),
                "final": self.history[-1] if self.history else None,
                "settings": self.settings}


product_text = product_words  # the one definition lives with the products (torch-free)


def _shrink(rgb: np.ndarray, side: int) -> np.ndarray:
    """Photos are kept at 1.5x the training side: enough for the random crops,
    and augmenting a small image is what keeps a CPU epoch short."""
    h, w = rgb.shape[:2]
    scale = 1.5 * side / min(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def load_photos(paths: list[Path], side: int | None, progress: bool,
                desc: str) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Decode photos (shrunk to `side` when given); unreadable ones are reported, not fatal."""
    images, kept, bad = [], [], []
    for i, p in enumerate(tqdm(paths, desc=desc, unit="img", disable=not progress)):
        try:
            img = load_image(p)
        except ImageError as e:
            bad.append(str(e))
            continue
        images.append(_shrink(img, side) if side else img)
        kept.append(i)
    return images, kept, bad


def _lr_at(step: int, total: int, warmup: float) -> float:
    w = max(1, int(total * warmup))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + np.cos(np.pi * (step - w) / max(1, total - w)))


def _param_groups(params: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    # CLIP recipe: no decay on gains, biases and the logit scale
    decay = [p for n, p in params if p.ndim >= 2 and "logit" not in n]
    rest = [p for n, p in params if not (p.ndim >= 2 and "logit" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _batches(products: np.ndarray, per_product: int, batch_size: int, steps: int,
             rng: np.random.Generator) -> list[np.ndarray]:
    """P products x K photos per step: every product in a step has several
    positives, and only P catalog views need embedding (K=4 cuts the catalog
    share of a step's compute from ~40 % to 20 % against uniform sampling)."""
    queues = {p: [] for p in np.unique(products)}
    members = {p: np.flatnonzero(products == p) for p in queues}
    order: list = []
    out = []
    for _ in range(steps):
        picked = []
        while len(picked) < batch_size // per_product:
            if not order:
                order = rng.permutation(list(queues)).tolist()
            p = order.pop()
            if p not in picked:
                picked.append(p)
        idx = []
        for p in picked:
            for _ in range(per_product):
                if not queues[p]:
                    queues[p] = rng.permutation(members[p]).tolist()
                idx.append(queues[p].pop())
        out.append(np.asarray(idx, dtype=np.int64))
    return out


def _step_side(sides: tuple[int, ...], seed: int, epoch: int, step: int) -> int:
    """The side a training step runs at, drawn from its own stream: every other draw stays as with one side."""
    if len(sides) == 1:
        return sides[0]
    return int(sides[np.random.default_rng([seed, epoch, step, 91]).integers(len(sides))])


def _multi_positive_ce(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rows with several positives: -log(sum over positives / sum over all)."""
    return (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~mask, float("-inf")), 1)).mean()


def catalog_term(f: torch.Tensor, g: torch.Tensor, pos: torch.Tensor, scale, margin: float = 0.0) -> torch.Tensor:
    """The photo <-> catalog soft-max, both ways: photos `f` against the step's catalog views `g`, photo i's
    own view `g[pos[i]]`. The margin lowers each photo's cosine to its own view only (the others' stay), so
    a photo must lead the other products by it, not merely rank first."""
    fg = scale * (f @ g.T - margin * F.one_hot(pos, len(g)))
    mask = pos[None, :] == torch.arange(len(g))[:, None]
    return 0.5 * (F.cross_entropy(fg, pos) + _multi_positive_ce(fg.T, mask))


@torch.no_grad()
def _catalog_bank(model, catalog: list[np.ndarray], pp: PreprocessCfg, batch: int = 64) -> torch.Tensor:
    """Every catalog image's unit embedding, clean (as the index holds it), the model in eval mode."""
    model.eval()
    out = [F.normalize(model.encode_image(torch.from_numpy(preprocess_batch(catalog[i:i + batch], pp))), dim=-1)
           for i in range(0, len(catalog), batch)]
    return torch.cat(out)


def unknown_penalty(f: torch.Tensor, labels: np.ndarray, anchors: torch.Tensor, anchor_products: np.ndarray,
                    margin: float, known_margin: float) -> torch.Tensor:
    """Absolute margins for photos `f` (N x D, unit) against catalog images `anchors` (M x D, unit, each
    of product `anchor_products`): the cosine to the nearest image of ANOTHER product, hinged above
    `margin` (what the photo would score were its own product missing from the index), plus the cosine
    to the nearest image of its own product, hinged below `known_margin`. Without the second half the
    cheap way down is to move all photos away from all catalog images, the right ones included."""
    s = f @ anchors.T
    own = torch.from_numpy(labels[:, None] == anchor_products[None, :])
    nearest_other = s.masked_fill(own, float("-inf")).max(1).values
    nearest_own = s.masked_fill(~own, float("-inf")).max(1).values
    loss = torch.relu(nearest_other - margin)
    has_own = own.any(1)
    loss = loss + torch.where(has_own, torch.relu(known_margin - nearest_own), torch.zeros_like(loss))
    return loss.mean()


def finetune_teacher(teacher: Teacher, photos: list[np.ndarray], photo_products: np.ndarray,
                     catalog: list[np.ndarray], catalog_products: np.ndarray, texts: list[str],
                     settings: FinetuneSettings, *, seed: int, labels_name: str = "", rows: int = 0,
                     holdout: int = 0, progress: bool = True, negatives: Sequence[np.ndarray] = (),
                     on_epoch: Callable[[int], dict] | None = None) -> FinetuneReport:
    """Train `teacher.model` in place on labeled photos; returns what ran.

    `photo_products` / `catalog_products` give each photo's / catalog image's
    product position; `texts` holds one text per product, in that order.
    `negatives`: RGB images of no product (empty counter, shelves, textures);
    with none the training is exactly as without the argument. `on_epoch(epoch)`
    (the model in eval mode) may return figures to add to that epoch's history."""
    model = teacher.model
    random_init = bool(teacher.provenance.get("random_weights"))
    train_text = random_init if settings.train_text is None else settings.train_text
    lr = settings.learning_rate or (FROM_SCRATCH_LR if random_init else PRETRAINED_LR)
    class_weight = settings.class_weight if settings.class_weight is not None else \
        (FROM_SCRATCH_CLASS_WEIGHT if random_init else 0.0)
    use_negatives = len(negatives) > 0 and settings.negative_weight > 0
    side = settings.image_size or teacher.preprocess.size[0]
    pp: PreprocessCfg = replace(teacher.preprocess, size=(side, side))
    sides = settings.sides(teacher.preprocess.size[0])
    for s in sides:
        if s == teacher.preprocess.size[0]:
            continue
        try:
            with torch.no_grad():
                model.visual.eval()(torch.zeros(1, 3, s, s))
        except Exception as e:  # ViT towers have fixed position embeddings
            what = "training sides" if settings.train_sides else "image size"
            raise ExportError(f"teacher {teacher.name} cannot train at {s} px ({type(e).__name__}); "
                              f"leave the fine-tuning {what} at the teacher's "
                              f"{teacher.preprocess.size[0]}") from None
    if len(np.unique(photo_products)) < settings.batch_size // settings.photos_per_product:
        raise ExportError(f"fine-tuning draws {settings.batch_size // settings.photos_per_product} products a step "
                          f"but the labeled photos show only {len(np.unique(photo_products))}: lower the batch size")

    use_text = settings.text_weight > 0
    tokens = open_clip.get_tokenizer(teacher.name)(texts) if use_text else None
    trainable = []
    for name, p in model.named_parameters():
        is_text = not name.startswith("visual.") and "logit" not in name
        p.requires_grad = train_text or not is_text
        if p.requires_grad and (use_text or not is_text):
            trainable.append((name, p))
    torch.manual_seed(seed)
    groups = _param_groups(trainable, settings.weight_decay)
    prototypes = None
    if class_weight > 0:
        # the products' class weights: unit rows, used only during training (retrieval keeps
        # embedding the catalog image, which this term pulls onto its product's prototype)
        gen = torch.Generator().manual_seed(seed + 1)
        prototypes = torch.nn.Parameter(F.normalize(torch.randn(len(texts), teacher.embed_dim, generator=gen), dim=-1))
        groups.append({"params": [prototypes], "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
    n = len(photos)
    steps_per_epoch = max(1, n // settings.batch_size)
    total = settings.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_at(s, total, settings.warmup))
    keys_of = [np.flatnonzero(catalog_products == pos) for pos in range(len(texts))]
    frozen_text = None
    if use_text and not train_text:
        with torch.no_grad():
            frozen_text = F.normalize(model.eval().encode_text(tokens), dim=-1)

    report = FinetuneReport(labels=labels_name, rows=rows, photos=n, holdout=holdout, products=len(texts),
                            towers=["image", "text"] if train_text and use_text else ["image"], learning_rate=lr,
                            image_size=side, settings=asdict(settings), seed=seed, class_weight=class_weight,
                            negatives=len(negatives) if use_negatives else 0)
    use_unknown = settings.unknown_weight > 0 and len(np.unique(catalog_products)) > 1
    t0 = time.perf_counter()
    bar = tqdm(range(settings.epochs), desc="fine-tuning teacher", unit="epoch", disable=not progress)
    for epoch in bar:
        # the other products' catalog images, embedded once an epoch: a little stale by its end,
        # but every product is an anchor at every step, not only the 16 a step draws
        bank = _catalog_bank(model, catalog, pp) if use_unknown else None
        model.train()  # a frozen text tower is never run here: its features were computed once, above
        batches = _batches(photo_products, settings.photos_per_product, settings.batch_size, steps_per_epoch,
                           np.random.default_rng([seed, epoch]))
        sums = {"loss": 0.0, "photo_top1": 0.0}
        for step, idx in enumerate(batches):
            rng = np.random.default_rng([seed, epoch, step])
            labels = photo_products[idx]
            uniq = np.unique(labels)
            side_now = _step_side(sides, seed, epoch, step)
            spp = replace(pp, size=(side_now, side_now))
            crops = [resize_and_crop(augment(photos[i], rng, settings.augment, settings.colour_cast), spp) for i in idx]
            for u in uniq:
                k = int(rng.choice(keys_of[u]))
                view = augment(catalog[k], rng, settings.catalog_augment) if settings.catalog_augment else catalog[k]
                crops.append(resize_and_crop(view, spp))
            if use_negatives:  # drawn from their own stream: the photo and catalog draws stay as without negatives
                nrng = np.random.default_rng([seed, epoch, step, 77])
                picks = nrng.choice(len(negatives), min(settings.negatives_per_step, len(negatives)), replace=False)
                # negatives take the photos' casts too, or a cast would come to mean "a product"
                crops += [resize_and_crop(augment(negatives[i], nrng, settings.augment, settings.colour_cast), spp)
                          for i in picks]
            x = torch.from_numpy(np.stack([normalize(c, spp) for c in crops]))
            feats = F.normalize(model.encode_image(x), dim=-1)
            f, g = feats[:len(idx)], feats[len(idx):len(idx) + len(uniq)]
            scale = model.logit_scale.exp().clamp(max=100)
            y = torch.from_numpy(labels)
            pos = torch.from_numpy(np.searchsorted(uniq, labels))
            loss = torch.zeros(())
            if settings.catalog_weight > 0:
                loss = loss + settings.catalog_weight * catalog_term(f, g, pos, scale, settings.catalog_margin)
            if use_text:
                t = frozen_text if frozen_text is not None else F.normalize(model.encode_text(tokens), dim=-1)
                loss = loss + settings.text_weight * 0.5 * (
                    F.cross_entropy(scale * f @ t.T, y) + F.cross_entropy(scale * g @ t.T, torch.from_numpy(uniq)))
            if settings.photo_weight > 0:
                same = torch.from_numpy(labels[:, None] == labels[None, :])
                eye = torch.eye(len(idx), dtype=torch.bool)
                ff = (scale * f @ f.T).masked_fill(eye, float("-inf"))
                loss = loss + settings.photo_weight * _multi_positive_ce(ff, same & ~eye)
            if prototypes is not None:
                w = F.normalize(prototypes, dim=-1)
                loss = loss + class_weight * F.cross_entropy(
                    settings.class_scale * torch.cat([f, g]) @ w.T, torch.from_numpy(np.concatenate([labels, uniq])),
                    label_smoothing=settings.label_smoothing)
            if use_negatives:
                anchors = g if prototypes is None else torch.cat([g, F.normalize(prototypes, dim=-1)])
                loss = loss + settings.negative_weight * negatives_penalty(
                    feats[len(idx) + len(uniq):], anchors, settings.negative_margin, settings.class_scale)
            if bank is not None:
                # the step's own catalog views carry the gradient to the catalog side too: with the bank
                # alone the photos chase images that move with them (a random tower never got apart)
                loss = loss + settings.unknown_weight * unknown_penalty(
                    f, labels, torch.cat([g, bank]), np.concatenate([uniq, catalog_products]), settings.unknown_margin,
                    settings.known_margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, np.log(100))  # CLIP's cap: a scale above 100 destabilizes training
                sums["photo_top1"] += float((pos == (f @ g.T).argmax(1)).float().mean())
            sums["loss"] += loss.item()
        row = {"epoch": epoch + 1, "loss": round(sums["loss"] / steps_per_epoch, 4),
               "train_top1_in_batch": round(sums["photo_top1"] / steps_per_epoch, 4),
               "logit_scale": round(float(model.logit_scale.detach().exp()), 2)}
        if on_epoch is not None:
            model.eval()
            row.update(on_epoch(epoch + 1))
        report.history.append(row)
        bar.set_postfix(loss=row["loss"], top1=row["train_top1_in_batch"])
    for p in model.parameters():
        p.requires_grad = True
    model.eval()
    report.seconds = time.perf_counter() - t0
    return report


@dataclass
class HeldOut:
    """Labeled photos kept out of training: the no-match calibration set."""

    paths: list[Path]
    images: list[np.ndarray]
    products: np.ndarray  # product position of each photo


def adapt_teacher(teacher: Teacher, labels: Path, product_ids: list[str], product_texts: list[str],
                  catalog: list[np.ndarray], catalog_products: np.ndarray, settings: FinetuneSettings, *,
                  seed: int, skip_bad: bool, progress: bool,
                  negatives: Sequence[np.ndarray] = ()) -> tuple[dict, HeldOut, LabeledPhotos]:
    """The export step: read the labels, hold some back, fine-tune the teacher in place.
    `negatives`: decoded non-product images (any size; shrunk here like the photos).
    -> (what the manifest records under teacher.finetune, the held-back photos, all labeled photos)."""
    labeled = read_labeled(labels, product_ids, skip_bad=skip_bad)
    train_idx, held_idx = labeled.split(settings.holdout)
    side = max(settings.sides(teacher.preprocess.size[0]))
    photos, kept, bad = load_photos([labeled.paths[i] for i in train_idx], side, progress, "reading labeled photos")
    held, held_kept, held_bad = load_photos([labeled.paths[i] for i in held_idx], None, progress,
                                            "reading held-out photos")
    bad += held_bad
    if bad and not skip_bad:
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ExportError(f"{labels}: {len(bad)} unreadable photo(s): {bad[0]}{more} (--skip-bad skips them)")
    for line in list(labeled.skipped) + bad:
        log.warning("--finetune-labeled skipped %s", line)
    report = finetune_teacher(teacher, photos, labeled.products[train_idx][kept], catalog, catalog_products,
                              product_texts, settings, seed=seed, labels_name=Path(labels).name, rows=labeled.rows,
                              holdout=len(held), progress=progress,
                              negatives=[_shrink(n, side) for n in negatives])
    info = report.to_json()
    info["skipped"] = len(labeled.skipped) + len(bad)
    return info, HeldOut(paths=[labeled.paths[held_idx[i]] for i in held_kept], images=held,
                         products=labeled.products[held_idx][held_kept]), labeled
