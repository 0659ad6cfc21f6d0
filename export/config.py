"""Export settings: one frozen, validated dataclass, and the gates' thresholds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from edge_search.errors import ExportError

from .engine import EngineSettings

# ViT-B-32 trained on LAION-2B: MIT-licensed weights (a kiosk may ship them),
# strong on product-like photos, 512-d, and the size our speed target is set against.
DEFAULT_TEACHER = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
# ~1.5 M parameters: an int8 file well under 5 MB and a few ms per frame on 2 cores.
DEFAULT_STUDENT = "mobilenetv3_small_100"
# --student: a copy of the teacher's single-pass image tower, distilled from its weights (student.make_student)
TEACHER_TOWER = "teacher-tower"


@dataclass(frozen=True)
class Gates:
    """Fidelity thresholds; each failed gate stops the export."""

    onnx_min_cosine: float = 0.999  # torch vs ONNX fp32, same inputs
    int8_mean_cosine: float = 0.97  # ONNX fp32 vs int8 on held-back images
    int8_top1_agreement: float = 0.95
    # fp16-stored weights computed in fp32: only the weights' rounding moves the output
    fp16_mean_cosine: float = 0.999
    fp16_top1_agreement: float = 0.99
    index_top1_agreement: float = 0.995  # chosen index vs exact f32 search
    # the shipped model names the catalog's own images, and mild views of them, whatever embeds the catalog
    catalog_self_top1: float = 0.95
    catalog_views_top1: float = 0.95
    # --with-text: the text tower's int8 vs fp32 on text_export.GATE_PHRASES
    text_int8_mean_cosine: float = 0.98
    text_int8_min_cosine: float = 0.95
    # A random-weight teacher maps every image to nearly the same vector, so
    # agreement figures on it measure noise: such exports record the gates
    # without enforcing them (and say so loudly).
    enforce: bool = True

    def with_overrides(self, overrides: dict[str, float]) -> "Gates":
        names = {f.name for f in fields(self)} - {"enforce"}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ExportError(f"unknown gate(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        bad = sorted(k for k, v in overrides.items() if not math.isfinite(v))
        if bad:  # a NaN threshold passes every comparison it is in: the gate would be off, silently
            raise ExportError(f"gate(s) {', '.join(bad)}: the threshold must be a finite number")
        return replace(self, **overrides)

    def with_spec(self, items: list[str] | tuple[str, ...]) -> "Gates":
        """These gates with `NAME=NUMBER` overrides (the `--gate` option of export and the benchmark)."""
        overrides = {}
        for item in items:
            name, sep, value = item.partition("=")
            try:
                overrides[name.strip().replace("-", "_")] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise ExportError(f"--gate {item!r}: expected NAME=NUMBER, e.g. int8_top1_agreement=0.9")
        return self.with_overrides(overrides)


@dataclass(frozen=True)
class FinetuneSettings:
    """How the teacher is adapted; validated on construction."""

    epochs: int = 20
    batch_size: int = 64  # photos per step
    photos_per_product: int = 4  # a step draws batch_size / this products, this many photos each
    learning_rate: float | None = None  # None: finetune.FROM_SCRATCH_LR or PRETRAINED_LR
    weight_decay: float = 0.05
    warmup: float = 0.05  # share of the steps with a linear warm-up, then cosine decay
    image_size: int | None = None  # training side (CNN towers only); None: the teacher's own
    # several training sides (CNN towers only): each step trains at one drawn from them, so every side a
    # student or a test-time ensemble later runs at is learnt on all the photos; empty: image_size alone
    train_sides: tuple[int, ...] = ()
    augment: float = 1.0  # strength of the photo augmentation (views.augment)
    catalog_augment: float = 0.5  # catalog views: the device embeds the clean studio shot
    # photos' and negatives' per-channel gain range (views.augment): another store's light; 0: none
    colour_cast: float = 0.0
    catalog_weight: float = 1.0  # photo <-> catalog image term
    # An additive margin in that term (as CosFace puts one in a classifier): a photo's cosine to its own
    # product's image counts catalog_margin less in the soft-max, so the photo must clear the other
    # products by that much instead of only ranking first; one no-match floor across products asks as
    # much of the embedding. 0: the plain term.
    catalog_margin: float = 0.0
    text_weight: float = 1.0  # photo and catalog image <-> product text term
    # photo <-> the other photos of its product in the batch (supervised contrastive): on the grocery
    # benchmark it took held-out photos from 0.33 to 0.49 recall@1 (with lr 3e-3, 30 epochs, 112 px)
    photo_weight: float = 0.5
    train_text: bool | None = None  # None: only a random-weight teacher trains its text tower
    holdout: float = 0.1  # share of each product's photos kept back for no-match calibration
    # Classification-style term: photos and catalog views each classified against all the
    # products' learnable unit prototypes (normalised-softmax cross-entropy at class_scale, with
    # label smoothing). None: on for a teacher trained from random weights, off for a pretrained one.
    class_weight: float | None = None
    class_scale: float = 16.0
    label_smoothing: float = 0.1
    # Negatives (non-product photos, finetune_teacher(negatives=...)): each step embeds
    # negatives_per_step of them and penalises the soft maximum of their cosine to the products
    # (prototypes and the step's catalog views) above negative_margin. No negatives: no term.
    negative_weight: float = 1.0
    negative_margin: float = 0.2
    negatives_per_step: int = 16
    # Products missing from a catalog: each photo is also a stand-in for a product the index lacks, so
    # its cosine to the nearest OTHER product's catalog image (embedded once an epoch) is hinged at
    # unknown_margin. The other terms only rank its own product first; this one bounds how close the
    # rest may come, which a single no-match floor needs. 0: no term.
    unknown_weight: float = 0.0
    unknown_margin: float = 0.5
    known_margin: float = 0.7  # ... and its cosine to its own product's image held above this

    def __post_init__(self) -> None:
        # epochs 0: hold photos back and calibrate on them, but keep the teacher as loaded
        # (one fine-tuned by an earlier export and kept with --save-models)
        if self.epochs < 0 or self.photos_per_product < 1 or self.batch_size < 2 * self.photos_per_product:
            raise ExportError("fine-tuning needs epochs >= 0, photos per product >= 1 "
                              "and a batch of two products or more")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise ExportError(f"fine-tuning learning rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.holdout < 0.5:
            raise ExportError(f"fine-tuning holdout must be in [0, 0.5), got {self.holdout}")
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            raise ExportError(f"fine-tuning image size must be between 32 and 1024, got {self.image_size}")
        if any(not isinstance(v, int) or not 32 <= v <= 1024 for v in self.train_sides):
            raise ExportError(f"fine-tuning training sides must be whole numbers between 32 and 1024, "
                              f"got {list(self.train_sides)}")
        if min(self.catalog_weight, self.text_weight, self.photo_weight) < 0 or \
                self.catalog_weight + self.text_weight + self.photo_weight + (self.class_weight or 0) == 0:
            raise ExportError("fine-tuning loss weights must be >= 0, one of them positive")
        if not 0 <= self.warmup < 1 or not 0 <= self.augment <= 2 or not 0 <= self.catalog_augment <= 2:
            raise ExportError("fine-tuning warmup must be in [0, 1) and augment strengths in [0, 2]")
        if not 0 <= self.colour_cast <= 0.5:
            raise ExportError(f"fine-tuning colour cast must be in [0, 0.5], got {self.colour_cast}")
        if not 0 <= self.catalog_margin < 1:
            raise ExportError(f"fine-tuning catalog margin must be a cosine in [0, 1), got {self.catalog_margin}")
        if (self.class_weight is not None and self.class_weight < 0) or self.class_scale <= 0 \
                or not 0 <= self.label_smoothing < 1:
            raise ExportError("fine-tuning class weight must be >= 0, class scale > 0, label smoothing in [0, 1)")
        if self.negative_weight < 0 or not -1 <= self.negative_margin <= 1 or self.negatives_per_step < 1:
            raise ExportError("fine-tuning negative weight must be >= 0, its margin a cosine in [-1, 1] "
                              "and negatives per step >= 1")
        if self.unknown_weight < 0 or not -1 <= self.unknown_margin <= self.known_margin <= 1:
            raise ExportError("fine-tuning unknown-product weight must be >= 0 and its margins cosines in [-1, 1], "
                              "the unknown one no higher than the known one")

    def sides(self, teacher_side: int) -> tuple[int, ...]:
        """The sides training draws from (a teacher whose own side is `teacher_side`)."""
        return tuple(self.train_sides) or (self.image_size or teacher_side,)


@dataclass(frozen=True)
class NoMatchSettings:
    """How the "no match" rule is calibrated (export/calibrate.py)."""

    max_false_reject: float = 0.05  # share of correctly named calibration photos the rule may reject
    # None: the candidate of calibrate.RULES that does best at 2-fold cross-validation; a name forces it
    rule: str | None = None
    shrinkage: float = 8.0  # pseudo-photos pulling a product's floor towards the pooled one
    # True: the calibration photos the model names as another product count among those the rule should
    # refuse, beside the simulated unknown products and the negatives. Off: on the grocery dev photos it
    # refused 7 right answers for 7 wrong ones (bench/calibration_dev.py, docs/benchmarks/README.md)
    refuse_wrong: bool = False

    def __post_init__(self) -> None:
        from .calibrate import RULES

        if not 0 <= self.max_false_reject < 0.5 or self.shrinkage < 0:
            raise ExportError("no-match calibration needs max_false_reject in [0, 0.5) and shrinkage >= 0")
        if self.rule is not None and self.rule not in RULES:
            raise ExportError(f"no-match rule must be one of {', '.join(RULES)}, got {self.rule!r}")


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
    # the distillation views' per-channel gain range (views.augment): another store's light; 0: none
    colour_cast: float = 0.0
    batch_size: int = 32
    learning_rate: float | None = None  # distillation's; None: student.distill_learning_rate(student)
    relational_weight: float = 1.0
    # product cross-entropy on views whose product is known (catalog images, labeled photos). 1.0 for the
    # teacher's own copy too: 0.1 made it follow the teacher closer but name wrong more often on dev
    # (bench/student_recipe.py --label-weight, bench/retries.py; docs/benchmarks)
    label_weight: float = 1.0
    image_size: int | None = None  # student input side; None: the teacher's
    # the shipped image model's form (precision.py): "auto" times int8 and fp16-stored weights here
    quantize: str = "auto"
    index_dtype: str | None = None  # None: chosen by measurement
    # the index graph on the catalog vectors' top D principal directions, candidates rescored in full
    # (a catalog past ~100k images: bench/search_params.py); None: the graph holds the vectors themselves
    index_projection: int | None = None
    catalog_encoder: str | None = None  # "teacher" / "student"; None: chosen by measurement
    seed: int = 0
    skip_bad: bool = False
    force: bool = False
    name: str | None = None
    threads: int = 2
    gates: Gates = field(default_factory=Gates)
    finetune_labeled: Path | None = None  # image,id CSV: adapt the teacher to these photos first
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    no_match: NoMatchSettings = field(default_factory=NoMatchSettings)
    save_models: Path | None = None  # also keep the fine-tuned teacher and the fp32 student here
    with_text: bool = False  # also ship the teacher's text tower, its tokenizer and a product-text index
    sign_key: Path | None = None  # Ed25519 private key: manifest.sig is written before the bundle is published
    # photos of scenes with no product (empty counter, hands, floor): must get "no match"; used by the
    # no-match calibration (and the teacher's and student's training, where they take negatives)
    negatives: Path | None = None
    # a catalog build on this bundle's models (no fine-tuning, distillation or quantization)
    base: Path | None = None
    # with `base`: a single fresh index segment, every key renumbered, instead of the base's file plus a delta
    rebase: bool = False
    embedding_cache: Path | None = None  # None: edge_search.files.default_cache_dir()
    stores: Path | None = None  # store,id[,price,aisle,in_stock] CSV: one bundle per store under `out`
    # with `stores`: the previous release's folder; each store bundle keeps the index keys of its bundle
    # there (OUT/<store>/), so a device's delta is small
    previous: Path | None = None
    # where the embedding of catalog images and distillation views and the store builds run (engine.py)
    engine: EngineSettings = field(default_factory=EngineSettings)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.views_per_image < 1 or self.batch_size < 2:
            raise ExportError("epochs must be >= 0, views per image >= 1, batch size >= 2")
        if not 0 <= self.colour_cast <= 0.5:
            raise ExportError(f"--colour-cast must be between 0 and 0.5, got {self.colour_cast}")
        if self.rebase and self.base is None:
            raise ExportError("--rebase re-bases a catalog build on --base BUNDLE: give --base")
        if self.previous is not None and self.stores is None:
            raise ExportError("--previous names the last release's store bundles: it goes with --stores")
        if not math.isfinite(self.label_weight) or self.label_weight < 0:
            raise ExportError(f"--distill-label-weight must be >= 0, got {self.label_weight}")
        if self.quantize not in ("auto", "int8", "fp16", "none"):
            raise ExportError(f"--quantize must be auto, int8, fp16 or none, got {self.quantize!r}")
        if self.index_projection is not None and self.index_projection < 1:
            raise ExportError(f"--index-projection must be a number of dimensions >= 1, got {self.index_projection}")
        if self.index_projection is not None and self.base is not None:
            raise ExportError("--index-projection is chosen with the model: a build on --base keeps its base's index "
                              "projection (or its absence)")
        if self.index_dtype not in (None, "i8", "f16", "f32"):
            raise ExportError(f"--index-dtype must be i8, f16 or f32, got {self.index_dtype!r}")
        if self.catalog_encoder not in (None, "teacher", "student", "teacher+student", "teacher+student+views"):
            raise ExportError(f"--catalog-encoder must be teacher, student, teacher+student or "
                              f"teacher+student+views, got {self.catalog_encoder!r}")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise ExportError(f"distillation learning rate must be in (0, 1), got {self.learning_rate}")
        if self.student == TEACHER_TOWER and self.student_pretrained:
            raise ExportError(f"--student-pretrained starts a timm student from ImageNet weights; "
                              f"'{TEACHER_TOWER}' starts from the teacher's")
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            raise ExportError(f"--image-size must be between 32 and 1024, got {self.image_size}")
        if self.no_match.rule is not None and self.no_match.rule.endswith("negatives") and self.negatives is None:
            raise ExportError(f"--no-match-rule {self.no_match.rule} needs --negatives")
