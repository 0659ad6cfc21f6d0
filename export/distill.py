"""Distilling the teacher's image tower into the student.

The student learns to reproduce the teacher's unit-length embeddings of
augmented views of the catalog (and of unlabeled store photos), so queries it
embeds land in the teacher's space. Loss: cosine between student and teacher
embeddings, plus a relational term that matches the batch's pairwise
similarity matrix (it keeps products apart the way the teacher does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from edge_search.manifest import PreprocessCfg
from edge_search.preprocess import normalize, preprocess, resize_and_crop

from .teacher import Teacher
from .views import views


@dataclass
class ViewBank:
    """Student-sized uint8 crops of augmented views with their teacher targets."""

    crops: np.ndarray  # N x S x S x 3 uint8
    targets: np.ndarray  # N x D float32, unit length
    source: np.ndarray  # N: which input image each view came from
    labels: np.ndarray  # N: product position of the view's image, -1 when unknown


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


def build_view_bank(teacher: Teacher, images: list[np.ndarray], counts: list[int], student_pp: PreprocessCfg,
                    seed: int, progress: bool = True, labels: list[int] | None = None) -> ViewBank:
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
        for v in views(img, count, seed=seed * 1_000_003 + i):
            chunk_views.append(v)
            chunk_src.append(i)
        if len(chunk_views) >= 64:
            flush()
    flush()
    bar.close()
    source = np.asarray(source)
    image_labels = np.full(len(images), -1) if labels is None else np.asarray(labels)
    return ViewBank(crops=np.stack(crops), targets=np.concatenate(targets).astype(np.float32),
                    source=source, labels=image_labels[source])


@dataclass(frozen=True)
class LabelTerm:
    """The cross-entropy term: the teacher's unit product prototypes and its logit scale."""

    prototypes: np.ndarray  # P x D
    scale: float
    weight: float


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
            progress: bool = True, label_term: LabelTerm | None = None) -> DistillReport:
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
    name = "cosine" + (f" + {relational_weight:g} x relational" if relational_weight > 0 else "")
    if use_labels:
        name += f" + {label_term.weight:g} x product cross-entropy (scale {label_term.scale:.1f})"
    report = DistillReport(loss=name, epochs=epochs, views=n, seconds=0.0)
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc="distilling student", unit="epoch", disable=not progress)
    for epoch in bar:
        student.train()
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
