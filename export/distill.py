"""Distilling the teacher's image tower into the student.

The student learns to reproduce the teacher's unit-length embeddings of
augmented views of the catalog (and of unlabeled store photos), so queries it
embeds land in the teacher's space. Loss: cosine between student and teacher
embeddings, plus a relational term that matches the batch's pairwise
similarity matrix (it keeps products apart the way the teacher does).
Views of negatives (non-product photos) are distilled like any other view, and
may also be pushed away from the products (`negatives_penalty`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from edge_search.core.manifest import PreprocessCfg
from edge_search.core.preprocess import normalize, preprocess, resize_and_crop

from .teacher import Teacher
from .views import views

NEGATIVE = -2  # ViewBank label of a negative's views (-1: product unknown)
NEGATIVE_WEIGHT = 1.0  # distill(negative_weight=...) default
NEGATIVE_MARGIN = 0.2  # cosine the soft maximum of a negative's product similarities is pushed under
NEGATIVE_SCALE = 16.0  # log-sum-exp sharpness of that soft maximum


@dataclass
class ViewBank:
    """Student-sized uint8 crops of augmented views with their teacher targets."""

    crops: np.ndarray  # N x S x S x 3 uint8
    targets: np.ndarray  # N x D float32, unit length
    source: np.ndarray  # N: which input image each view came from
    labels: np.ndarray  # N: product position of the view's image, -1 when unknown, NEGATIVE for a negative


@dataclass
class DistillReport:
    loss: str
    epochs: int
    views: int
    seconds: float
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"loss": self.loss, "epochs": self.epochs, "views": self.views,
                "seconds": round(self.seconds, 1), "final": self.history[-1] if self.history else None}


def image_views(rgb: np.ndarray, count: int, seed: int, i: int, colour_cast: float = 0.0) -> list[np.ndarray]:
    """The views of the bank's image `i` (seeded by the bank's seed and the image's position)."""
    return views(rgb, count, seed=seed * 1_000_003 + i, colour_cast=colour_cast)


def view_bank_item(teacher: Teacher, rgb: np.ndarray, count: int, student_pp: PreprocessCfg, seed: int,
                   i: int, colour_cast: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One image's part of a ViewBank: its views' student-sized crops and teacher targets (the Ray engine's
    unit of work; the local engine batches views across images, which changes only float rounding)."""
    vs = image_views(rgb, count, seed, i, colour_cast)
    targets = teacher.encode(np.stack([preprocess(v, teacher.preprocess) for v in vs]))
    return np.stack([resize_and_crop(v, student_pp) for v in vs]), targets.astype(np.float32)


def build_view_bank(teacher: Teacher, images: list[np.ndarray], counts: list[int], student_pp: PreprocessCfg,
                    seed: int, progress: bool = True, labels: list[int] | None = None,
                    negatives: Sequence[np.ndarray] = (), negative_views: int = 2, engine=None,
                    colour_cast: float = 0.0) -> ViewBank:
    """Augmented views of `images` (`counts[i]` each) with the teacher's targets, each view's channels
    cast by up to ±`colour_cast` (views.augment).
    `negatives` (non-product images) add `negative_views` views each, labelled
    NEGATIVE, after the images' views; none: the bank is as without them.
    `engine`: a RayEngine to embed the views on (None: here)."""
    if len(negatives):
        labels = (list(labels) if labels is not None else [-1] * len(images)) + [NEGATIVE] * len(negatives)
        images = list(images) + list(negatives)
        counts = list(counts) + [negative_views] * len(negatives)
    image_labels = np.full(len(images), -1) if labels is None else np.asarray(labels)
    if engine is not None:
        from .ray_jobs import embed_views

        crops_, targets_, source_ = embed_views(engine, teacher, images, counts, student_pp, seed, progress,
                                                colour_cast)
        return ViewBank(crops=crops_, targets=targets_, source=source_, labels=image_labels[source_])
    crops, targets, source = [], [], []
    bar = tqdm(total=int(sum(counts)), desc="teacher embeds augmented views", unit="view", disable=not progress)
    chunk_views: list[np.ndarray] = []
    chunk_src: list[int] = []

    def flush() -> None:
        if not chunk_views:
            return
        batch = np.stack([preprocess(v, teacher.preprocess) for v in chunk_views])
        targets.append(teacher.encode(batch))
        crops.extend(resize_and_crop(v, student_pp) for v in chunk_views)
        source.extend(chunk_src)
        bar.update(len(chunk_views))
        chunk_views.clear()
        chunk_src.clear()

    for i, (img, count) in enumerate(zip(images, counts)):
        for v in image_views(img, count, seed, i, colour_cast):
            chunk_views.append(v)
            chunk_src.append(i)
        if len(chunk_views) >= 64:
            flush()
    flush()
    bar.close()
    source = np.asarray(source)
    return ViewBank(crops=np.stack(crops), targets=np.concatenate(targets).astype(np.float32),
                    source=source, labels=image_labels[source])


@dataclass(frozen=True)
class LabelTerm:
    """The cross-entropy term: the teacher's unit product prototypes and its logit scale."""

    prototypes: np.ndarray  # P x D
    scale: float
    weight: float


def negatives_penalty(z: torch.Tensor, anchors: torch.Tensor, margin: float, scale: float) -> torch.Tensor:
    """How far non-product embeddings `z` (N x D, unit) reach towards the products:
    the soft maximum (log-sum-exp at `scale`, a little above the true maximum) of
    each one's cosine to the product `anchors` (M x D, unit), hinged at `margin`.
    Only negatives that come closer than the margin to some product are pushed."""
    if len(z) == 0:
        return torch.zeros(())
    soft_max = torch.logsumexp(scale * z @ anchors.T, dim=1) / scale
    return torch.relu(soft_max - margin).mean()


def distill_loss(s: torch.Tensor, t: torch.Tensor, relational_weight: float, *,
                 prototypes: torch.Tensor | None = None, y: torch.Tensor | None = None, scale: float = 1.0,
                 label_weight: float = 0.0) -> torch.Tensor:
    """`y`: each view's product position in `prototypes`, -1 where unknown."""
    s = torch.nn.functional.normalize(s, dim=-1)
    loss = (1.0 - (s * t).sum(-1)).mean()
    if relational_weight > 0:
        loss = loss + relational_weight * ((s @ s.T - t @ t.T) ** 2).mean()
    known = y >= 0 if label_weight > 0 and prototypes is not None and y is not None else None
    if known is not None and bool(known.any()):
        loss = loss + label_weight * torch.nn.functional.cross_entropy(scale * s[known] @ prototypes.T, y[known])
    return loss


def distill(student: torch.nn.Module, bank: ViewBank, student_pp: PreprocessCfg, *, epochs: int,
            batch_size: int, learning_rate: float, relational_weight: float, seed: int,
            progress: bool = True, label_term: LabelTerm | None = None,
            negative_weight: float = NEGATIVE_WEIGHT, negative_margin: float = NEGATIVE_MARGIN,
            keep_norm_statistics: bool = False) -> DistillReport:
    """Train `student` on the bank's views. Views labelled NEGATIVE (see
    build_view_bank) are also pushed under `negative_margin` against the label
    term's product prototypes, weighted by `negative_weight`; a bank without
    negatives (or no label term) trains exactly as before.
    `keep_norm_statistics`: batch norms normalise by the statistics the student came with (a trained
    tower's) instead of each batch's, and keep them; their scales and shifts still train."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n = len(bank.crops)
    steps_per_epoch = max(1, n // batch_size)
    total = max(1, epochs * steps_per_epoch)
    opt = torch.optim.AdamW(student.parameters(), lr=learning_rate, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=total, pct_start=0.1)
    targets = torch.from_numpy(bank.targets)
    labels = torch.from_numpy(bank.labels.astype(np.int64))
    use_labels = label_term is not None and label_term.weight > 0 and bool((bank.labels >= 0).any())
    protos = torch.from_numpy(label_term.prototypes.astype(np.float32)) if use_labels else None
    use_negatives = label_term is not None and negative_weight > 0 and bool((bank.labels == NEGATIVE).any())
    anchors = torch.from_numpy(label_term.prototypes.astype(np.float32)) if use_negatives else None
    name = "cosine" + (f" + {relational_weight:g} x relational" if relational_weight > 0 else "")
    if use_labels:
        name += f" + {label_term.weight:g} x product cross-entropy (scale {label_term.scale:.1f})"
    if use_negatives:
        name += f" + {negative_weight:g} x negatives' soft-max product cosine above {negative_margin:g}"
    report = DistillReport(loss=name, epochs=epochs, views=n, seconds=0.0)
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc="distilling student", unit="epoch", disable=not progress)
    for epoch in bar:
        student.train()
        if keep_norm_statistics:
            for m in student.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        order = torch.randperm(n, generator=gen)
        losses, cosines = [], []
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size].numpy()
            x = torch.from_numpy(np.stack([normalize(bank.crops[i], student_pp) for i in idx]))
            t = targets[idx]
            s = student(x)
            loss = distill_loss(s, t, relational_weight, prototypes=protos, y=labels[idx],
                                scale=label_term.scale if use_labels else 1.0,
                                label_weight=label_term.weight if use_labels else 0.0)
            if use_negatives:
                neg = labels[idx] == NEGATIVE
                if bool(neg.any()):
                    loss = loss + negative_weight * negatives_penalty(
                        torch.nn.functional.normalize(s[neg], dim=-1), anchors, negative_margin, NEGATIVE_SCALE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            with torch.no_grad():
                cosines.append(torch.nn.functional.cosine_similarity(s, t).mean().item())
        row = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5),
               "train_cosine": round(float(np.mean(cosines)), 4)}
        report.history.append(row)
        bar.set_postfix(loss=row["loss"], cos=row["train_cosine"])
    student.eval()
    report.seconds = time.perf_counter() - t0
    return report
