"""Export settings: one frozen, validated dataclass, and the gates' thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from edge_search.errors import ExportError

from edge_search.export_defaults import DEFAULT_PRETRAINED, DEFAULT_STUDENT, DEFAULT_TEACHER  # noqa: F401


@dataclass(frozen=True)
class Gates:
    """Fidelity thresholds; each failed gate stops the export."""

    onnx_min_cosine: float = 0.999  # torch vs ONNX fp32, same inputs
    int8_mean_cosine: float = 0.97  # ONNX fp32 vs int8 on held-back images
    int8_top1_agreement: float = 0.95
    index_top1_agreement: float = 0.995  # chosen index vs exact f32 search
    catalog_self_top1: float = 1.0  # every catalog image finds its own product (student catalog)
    # A random-weight teacher maps every image to nearly the same vector, so
    # agreement figures on it measure noise: such exports record the gates
    # without enforcing them (and say so loudly).
    enforce: bool = True

    def with_overrides(self, overrides: dict[str, float]) -> "Gates":
        names = {f.name for f in fields(self)} - {"enforce"}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ExportError(f"unknown gate(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return replace(self, **overrides)


@dataclass(frozen=True)
class ExportConfig:
    catalog: Path
    out: Path
    teacher: str = DEFAULT_TEACHER
    pretrained: str | None = DEFAULT_PRETRAINED
    student: str | None = DEFAULT_STUDENT  # None: ship the teacher's own image tower
    student_pretrained: bool = False
    distill_images: tuple[Path, ...] = ()
    epochs: int = 30
    views_per_image: int = 16
    batch_size: int = 32
    learning_rate: float = 2e-3
    relational_weight: float = 1.0
    image_size: int | None = None  # student input side; None: the teacher's
    quantize: str = "int8"
    index_dtype: str | None = None  # None: chosen by measurement
    catalog_encoder: str | None = None  # "teacher" / "student"; None: chosen by measurement
    seed: int = 0
    skip_bad: bool = False
    force: bool = False
    name: str | None = None
    threads: int = 2
    gates: Gates = field(default_factory=Gates)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.views_per_image < 1 or self.batch_size < 2:
            raise ExportError("epochs must be >= 0, views per image >= 1, batch size >= 2")
        if self.quantize not in ("int8", "none"):
            raise ExportError(f"--quantize must be int8 or none, got {self.quantize!r}")
        if self.index_dtype not in (None, "i8", "f16", "f32"):
            raise ExportError(f"--index-dtype must be i8, f16 or f32, got {self.index_dtype!r}")
        if self.catalog_encoder not in (None, "teacher", "student"):
            raise ExportError(f"--catalog-encoder must be teacher or student, got {self.catalog_encoder!r}")
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            raise ExportError(f"--image-size must be between 32 and 1024, got {self.image_size}")
