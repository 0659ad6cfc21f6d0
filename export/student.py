"""The student image encoder: a small timm backbone projected into the
teacher's embedding space, L2-normalized inside the network (and so inside
the ONNX graph)."""

from __future__ import annotations

import timm
import torch
from torch import nn

from edge_search.errors import ExportError


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
