"""The student image encoder: a small timm backbone projected into the
teacher's embedding space, or the teacher's own single-pass image tower
(`--student teacher-tower`), L2-normalized inside the network (and so inside
the ONNX graph)."""

from __future__ import annotations

import copy

import timm
import torch
from torch import nn

from edge_search.errors import ExportError

from .config import TEACHER_TOWER

FRESH_LR = 2e-3  # distillation learning rate of a student started from random or ImageNet weights
# from the teacher's trained weights a fresh student's rate unlearns them before it can follow the targets;
# 6e-4, not the 2e-4 first run: dev R@1 0.776 against 0.723 on the grocery benchmark (docs/benchmarks)
FROM_TEACHER_LR = 6e-4


def distill_learning_rate(arch: str) -> float:
    return FROM_TEACHER_LR if arch == TEACHER_TOWER else FRESH_LR


def make_student(arch: str, teacher, image_size: int, *, pretrained: bool = False) -> nn.Module:
    """The module distillation trains: `arch` a timm name, or TEACHER_TOWER for a trainable copy of
    `teacher`'s single-pass tower (export.teacher.Teacher). That copy runs once at the student's side
    where the teacher runs at each of its test sides: distillation teaches one small pass what the
    teacher's ensemble sees, starting from everything the teacher learned about photos."""
    if arch != TEACHER_TOWER:
        return build_student(arch, teacher.embed_dim, image_size, pretrained=pretrained)
    tower = copy.deepcopy(teacher.visual).eval()
    tower.requires_grad_(True)  # a loaded teacher is frozen
    try:  # a CNN runs at any side; a ViT's position embeddings fix its own
        with torch.no_grad():
            tower(torch.zeros(1, 3, image_size, image_size))
    except Exception as e:  # torch raises RuntimeError, AssertionError or ValueError here, by architecture
        raise ExportError(f"--student {TEACHER_TOWER}: teacher '{teacher.name}' cannot run at {image_size} px "
                          f"({type(e).__name__}); give --image-size {teacher.preprocess.size[0]}, its own side") from None
    return tower


class Embedder(nn.Module):
    """Wraps an image tower so its output is a unit-length embedding."""

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.tower(image), dim=-1)


class Student(nn.Module):
    def __init__(self, backbone: nn.Module, features: int, embed_dim: int):
        super().__init__()
        self.backbone = backbone
        self.project = nn.Linear(features, embed_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.project(self.backbone(image))


def build_student(arch: str, embed_dim: int, image_size: int, *, pretrained: bool = False) -> Student:
    if arch not in timm.list_models() and not (pretrained and arch in timm.list_models(pretrained=True)):
        raise ExportError(f"unknown student architecture '{arch}' (any timm model name, e.g. mobilenetv3_small_100)")
    try:
        backbone = timm.create_model(arch, pretrained=pretrained, num_classes=0)
    except Exception as e:  # timm/hub raise many kinds when weights cannot be fetched
        if pretrained:
            raise ExportError(
                f"cannot get ImageNet weights for student '{arch}' (offline?): drop --student-pretrained "
                f"to start from random weights ({type(e).__name__})"
            ) from None
        raise ExportError(f"cannot build student '{arch}' ({type(e).__name__}: {e})") from None
    backbone.eval()
    with torch.no_grad():
        features = int(backbone(torch.zeros(1, 3, image_size, image_size)).shape[-1])
    return Student(backbone, features, embed_dim)
