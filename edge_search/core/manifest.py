"""The bundle manifest: the single source of truth for how a bundle is read.

Owns the schema (dataclasses, parsing, validation) of `manifest.json`. The
format is documented in models/BUNDLE_FORMAT.md; keep the two in step.
Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_search.errors import BundleError, ManifestError
from edge_search.files import MAX_MANIFEST_BYTES, read_regular
from edge_search.core.thumbnails import FOLDER as THUMBS_FOLDER, ThumbnailsInfo

SCHEMA_VERSION = 1
# written only by bundles whose index has a delta segment (IndexInfo.delta) and no projection: a version-1
# reader would search the base segment alone, answering with removed products and never with added ones
SEGMENTED_SCHEMA_VERSION = 2
# written only by bundles whose graph holds projected vectors (IndexInfo.projection_file), with or without
# a delta: an older reader would query a D-dimensional graph with full-length vectors
PROJECTED_SCHEMA_VERSION = 3
READABLE_SCHEMA_VERSIONS = (SCHEMA_VERSION, SEGMENTED_SCHEMA_VERSION, PROJECTED_SCHEMA_VERSION)
MANIFEST_NAME = "manifest.json"

RESIZE_MODES = ("shortest", "longest", "squash")
MAX_INPUT_SIDE = 1024  # the largest open_clip towers take 448-518 px; more is a damaged manifest
MAX_EMBED_DIM = 16384
CV2_INTERPOLATIONS = ("area", "linear", "cubic", "lanczos")
INDEX_DTYPES = ("i8", "f16", "f32")


@dataclass(frozen=True)
class PreprocessCfg:
    """How a photo becomes the model's input, named as open_clip names it.

    `cv2_interpolation` is ours: open_clip resizes with PIL, the device with
    OpenCV, and the export picks the OpenCV filter that agrees best with PIL's.
    """

    size: tuple[int, int] = (224, 224)
    mode: str = "RGB"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0
    cv2_interpolation: str = "area"

    def __post_init__(self) -> None:
        size = self.size
        if isinstance(size, int):
            size = (size, size)
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
            raise ValueError(f"preprocess size must be whole numbers, got {list(size)}")
        size = tuple(size)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(size) != 2 or min(size) < 8 or max(size) > MAX_INPUT_SIDE:
            raise ValueError(f"preprocess size must be two sides of 8 to {MAX_INPUT_SIDE} pixels, got {size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("preprocess mean and std need three values")
        # pixels are scaled to [0, 1] first: a mean outside it or a std of 0, NaN or inf is not a normalization
        if not all(math.isfinite(m) and 0 <= m <= 1 for m in self.mean):
            raise ValueError(f"preprocess mean must be three numbers in [0, 1], got {self.mean}")
        if not all(math.isfinite(s) and 0 < s <= 1 for s in self.std):
            raise ValueError(f"preprocess std must be three numbers in (0, 1], got {self.std}")
        if isinstance(self.fill_color, bool) or not isinstance(self.fill_color, int) or not 0 <= self.fill_color <= 255:
            raise ValueError(f"preprocess fill_color must be 0..255, got {self.fill_color!r}")
        if self.mode != "RGB":
            raise ValueError(f"preprocess mode must be RGB, got {self.mode!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("preprocess mean and std need three values, std positive")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.cv2_interpolation not in CV2_INTERPOLATIONS:
            raise ValueError(
                f"cv2_interpolation must be one of {CV2_INTERPOLATIONS}, got {self.cv2_interpolation!r}"
            )


@dataclass(frozen=True)
class ModelInfo:
    file: str
    input: str
    output: str
    embed_dim: int
    precision: str  # "int8", "fp16" (weights stored as float16, computed in float32) or "fp32"
    opset: int

    def __post_init__(self) -> None:
        if not 1 <= self.embed_dim <= MAX_EMBED_DIM:
            raise ValueError(f"model embed_dim must be 1..{MAX_EMBED_DIM}, got {self.embed_dim}")
        if self.opset < 1:
            raise ValueError(f"model opset must be positive, got {self.opset}")


@dataclass(frozen=True)
class IndexDelta:
    """A catalog build's changes to its base's index, kept beside the base's own file (which is
    shipped once): `file` holds the added images' vectors under keys count .. count + delta.count - 1
    (dense; None when nothing was added), and `removed_file` the base segment's keys whose images
    left the catalog (sorted u64)."""

    file: str | None
    count: int
    removed: int = 0
    removed_file: str | None = None
    rescore_file: str | None = None  # the delta's f16 rescoring vectors, row = key - base count

    def __post_init__(self) -> None:
        if self.count < 0 or self.removed < 0:
            raise ValueError(f"index delta counts must not be negative, got {self.count} and {self.removed}")
        if (self.removed_file is None) != (self.removed == 0):
            raise ValueError("index delta: 'removed_file' must be given exactly when 'removed' is not 0")
        if (self.file is None) != (self.count == 0):
            raise ValueError("index delta: 'file' must be given exactly when 'count' is not 0")


MAX_EXPANSION = 4096  # an HNSW search width beyond this is no search a kiosk can afford


@dataclass(frozen=True)
class IndexInfo:
    file: str
    dtype: str
    metric: str
    count: int  # vectors in `file` (the base segment); keys 0 .. count - 1
    exact: bool = True
    # i8 candidates rescored with these f16 vectors (same row order as keys)
    rescore_file: str | None = None
    catalog_encoder: str = "student"
    delta: IndexDelta | None = None  # None: one segment, every key in `file`
    # HNSW search width the export chose by measurement (every segment uses it); None: usearch's default
    # (64), as in bundles made before it and in exact-search bundles
    expansion_search: int | None = None
    # dim x D float32 (.npy): every segment's graph holds unit vectors times it; its candidates are rescored
    # with the full vectors of `rescore_file` (and the delta's). None: the graph holds the vectors themselves
    projection_file: str | None = None

    def __post_init__(self) -> None:
        if self.projection_file is not None and self.rescore_file is None:
            raise ValueError("index: a 'projection_file' needs the full vectors of a 'rescore_file'")
        if self.count < 0:
            raise ValueError(f"index count must not be negative, got {self.count}")
        if self.expansion_search is not None and not 1 <= self.expansion_search <= MAX_EXPANSION:
            raise ValueError(f"index expansion_search must be 1 .. {MAX_EXPANSION}, got {self.expansion_search}")
        if self.delta is not None:
            if self.delta.removed > self.count:
                raise ValueError(f"index delta removes {self.delta.removed} of {self.count} base vectors")
            if (self.delta.rescore_file is None) != (self.rescore_file is None or self.delta.count == 0):
                raise ValueError("index delta: 'rescore_file' must be given exactly when the index rescores "
                                 "and the delta holds vectors")
        if self.dtype not in INDEX_DTYPES:
            raise ValueError(f"index dtype must be one of {INDEX_DTYPES}, got {self.dtype!r}")
        if self.metric != "cos":
            raise ValueError(f"index metric must be 'cos', got {self.metric!r}")

    @property
    def schema_version(self) -> int:
        """The manifest version a bundle with this index has: the oldest reader that searches it right."""
        if self.projection_file is not None:
            return PROJECTED_SCHEMA_VERSION
        return SEGMENTED_SCHEMA_VERSION if self.delta is not None else SCHEMA_VERSION

    @property
    def shape_words(self) -> str:
        """What about this index decides its schema version, in words (for the error that refuses it)."""
        return (("with" if self.delta is not None else "without") + " a delta segment, "
                + ("on a projected graph" if self.projection_file is not None else "its graph unprojected"))

    @property
    def key_space(self) -> int:
        """Keys 0 .. key_space - 1: the base segment's, then the delta's."""
        return self.count + (self.delta.count if self.delta else 0)

    @property
    def live(self) -> int:
        """Vectors a search can return: the key space less the removed keys."""
        return self.key_space - (self.delta.removed if self.delta else 0)

    def files(self) -> list[str]:
        """Every file the index reads."""
        names = [self.file] + [n for n in (self.rescore_file, self.projection_file) if n]
        if self.delta is not None:
            names += [n for n in (self.delta.file, self.delta.removed_file, self.delta.rescore_file) if n]
        return names


@dataclass(frozen=True)
class NoMatchRule:
    """The calibrated "no match" decision (manifest `search.calibration`).

    A query is answered only when its top product's score reaches that
    product's floor (`product_min_score`, else the manifest's `min_score`) and
    leads the second product by at least `min_margin`. Fitted at export so
    that at most `max_false_reject` of the calibration photos the model names
    correctly are rejected, while as many photos of products left out of the
    catalog (and of non-product scenes, `--negatives`) as possible are.

    With `negatives` (a file in the bundle: N x D unit vectors of scenes with
    no product, a reserved "no product" class) a query is also refused when
    its nearest negative comes within `negative_margin` of its top product's
    score (`best - nearest negative < negative_margin`). `rule` names the
    candidate the export chose (export/calibrate.py RULES).
    """

    min_margin: float
    product_min_score: dict[str, float] = field(default_factory=dict)
    max_false_reject: float = 0.05
    source: str = ""
    negatives: str | None = None
    negative_margin: float | None = None
    rule: str | None = None

    def __post_init__(self) -> None:
        floors = (self.min_margin, self.max_false_reject, *self.product_min_score.values())
        if not all(math.isfinite(v) for v in floors):
            raise ValueError("calibration values must be finite numbers")
        if (self.negatives is None) != (self.negative_margin is None):
            raise ValueError("calibration negatives and negative_margin go together")
        if self.negative_margin is not None and not (math.isfinite(self.negative_margin)
                                                     and -2 <= self.negative_margin <= 2):
            raise ValueError(f"calibration negative_margin must be in [-2, 2], got {self.negative_margin}")
        if not 0 <= self.min_margin <= 2:
            raise ValueError(f"calibration min_margin must be in [0, 2], got {self.min_margin}")
        if not 0 <= self.max_false_reject <= 1:
            raise ValueError(f"calibration max_false_reject must be in [0, 1], got {self.max_false_reject}")


# photo + words: weight of the photo. Chosen on the grocery benchmark's "photo + category word" sweep (README).
DEFAULT_FUSION_ALPHA = 0.9


@dataclass(frozen=True)
class TextInfo:
    """The text tower (manifest `text`; absent unless exported with --with-text).

    `model` takes `input` (N x context_length int64 token ids from
    `tokenizer`) and returns `output` (N x D, unit length) in the same space
    as the image index. `index` holds one vector per product (key = position
    in products.jsonl): the text tower's embedding of its name and
    description. A text query scores product p as
    (1 - product_text_weight) * image-index score + product_text_weight * text-index score;
    a photo plus words query embeds normalize(alpha * image + (1 - alpha) * text).
    With `trim_padding`, token rows may be cut after the batch's last end token.
    """

    file: str
    input: str
    output: str
    precision: str
    opset: int
    context_length: int
    tokenizer: str
    index: str | None = None
    product_text_weight: float = 0.0
    fusion_alpha: float = DEFAULT_FUSION_ALPHA
    # the tower reads nothing after the end token (causal mask, end-token pooling): rows may be cut there
    trim_padding: bool = False

    def __post_init__(self) -> None:
        if self.context_length < 2:
            raise ValueError(f"text context_length must be at least 2, got {self.context_length}")
        for name in ("product_text_weight", "fusion_alpha"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v <= 1):
                raise ValueError(f"text {name} must be in [0, 1], got {v}")


# --- the records of how the bundle was made, typed where something reads them ----------------------
# `teacher`, `student` and `fidelity` are free-form JSON objects (the export may add keys at will); the
# parts `inspect` and `eval` show are read through these dataclasses, each field checked for its type
# when present and None when absent (older bundles lack some). Search never reads them, so a malformed
# record is reported where it is shown and does not stop a bundle from answering.


class _Record:
    """Typed reads from one record; every error names the field by its dotted path."""

    def __init__(self, data: Any, path: str, where: str):
        if not isinstance(data, dict):
            raise ManifestError(where, f"{path} must be a JSON object, got {_kind(data)}")
        self.data, self.path, self.where = data, path, where

    def _bad(self, key: str, want: str) -> ManifestError:
        return ManifestError(self.where, f"{self.path}.{key} must be {want}, got {_shown(self.data[key])}")

    def text(self, key: str) -> str | None:
        v = self.data.get(key)
        if v is not None and not isinstance(v, str):
            raise self._bad(key, "text")
        return v

    def flag(self, key: str) -> bool | None:
        v = self.data.get(key)
        if v is not None and not isinstance(v, bool):
            raise self._bad(key, "true or false")
        return v

    def whole(self, key: str) -> int | None:
        v = self.data.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise self._bad(key, "a whole number")
        return v

    def number(self, key: str) -> float | None:
        v = self.data.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self._bad(key, "a finite number")
        return float(v)

    def record(self, key: str) -> "_Record | None":
        v = self.data.get(key)
        return None if v is None else _Record(v, f"{self.path}.{key}", self.where)

    def records(self, key: str) -> "list[_Record]":
        v = self.data.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self._bad(key, "a list")
        return [_Record(x, f"{self.path}.{key}[{i}]", self.where) for i, x in enumerate(v)]


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def _shown(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class TeacherRecord:
    """Manifest `teacher`, the parts shown: the model, its weights and their licence."""

    model: str | None = None
    pretrained: str | None = None  # a tag, a checkpoint file name, or "random"
    licence: str | None = None
    random_weights: bool = False  # true: an untrained teacher, the bundle is a pipeline check only

    @classmethod
    def parse(cls, data: Any, where: str) -> "TeacherRecord":
        r = _Record(data or {}, "teacher", where)
        return cls(model=r.text("model"), pretrained=r.text("pretrained"), licence=r.text("licence"),
                   random_weights=bool(r.flag("random_weights")))


@dataclass(frozen=True)
class StudentRecord:
    """Manifest `student`, the parts shown (the record is null when the teacher's own tower ships)."""

    arch: str | None = None
    image_size: int | None = None
    params: int | None = None
    epochs: int | None = None  # of distillation
    views: int | None = None
    loss: str | None = None

    @classmethod
    def parse(cls, data: Any, where: str) -> "StudentRecord | None":
        if data is None:
            return None
        r = _Record(data, "student", where)
        d = r.record("distillation")
        return cls(arch=r.text("arch"), image_size=r.whole("image_size"), params=r.whole("params"),
                   epochs=d.whole("epochs") if d else None, views=d.whole("views") if d else None,
                   loss=d.text("loss") if d else None)


@dataclass(frozen=True)
class Agreement:
    """A shipped model against its reference (int8 vs fp32, ONNX vs PyTorch) on the export's gate inputs."""

    mean_cosine: float | None = None
    min_cosine: float | None = None
    top1_agreement: float | None = None

    @classmethod
    def parse(cls, r: "_Record | None") -> "Agreement | None":
        if r is None:
            return None
        return cls(mean_cosine=r.number("mean_cosine"), min_cosine=r.number("min_cosine"),
                   top1_agreement=r.number("top1_agreement"))


@dataclass(frozen=True)
class CatalogEncoderChoice:
    """Manifest `fidelity.catalog_encoder`: who embeds the catalog, and each option's figure."""

    decided_by: str  # the figure the choice used (older bundles: augmented_query_top1)
    top1: dict[str, float | None]  # option -> its `decided_by` figure
    chosen: str | None = None


@dataclass(frozen=True)
class PrecisionChoice:
    """Manifest `fidelity.precision`: the numeric forms the export timed and the one it shipped."""

    chosen: str | None
    ms_p50: dict[str, float | None]  # form -> batch-1 p50 on the export machine


@dataclass(frozen=True)
class FidelityRecord:
    """Manifest `fidelity`, the parts shown; the rest (gates, calibration report, ...) stays free-form."""

    int8_vs_fp32: Agreement | None = None
    fp16_vs_fp32: Agreement | None = None
    precision: PrecisionChoice | None = None
    onnx_vs_torch: Agreement | None = None
    catalog_encoder: CatalogEncoderChoice | None = None
    index_agreement: tuple[tuple[str, float | None], ...] = ()  # storage candidate -> top-1 vs exact f32
    text_int8_vs_fp32: Agreement | None = None
    # catalog encoder -> (recall@1, recall@5) of product names as word queries
    text_names_recall: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any, where: str) -> "FidelityRecord":
        r = _Record(data or {}, "fidelity", where)
        choice = None
        ce = r.record("catalog_encoder")
        if ce is not None:
            decided_by = ce.text("decided_by") or "augmented_query_top1"
            options = {k: _Record(v, f"{ce.path}.{k}", where) for k, v in ce.data.items() if isinstance(v, dict)}
            choice = CatalogEncoderChoice(decided_by=decided_by, chosen=ce.text("chosen"),
                                          top1={k: o.number(decided_by) for k, o in options.items()})
        index = r.record("index")
        candidates = tuple((c.text("label") or "?", c.number("top1_agreement_vs_exact_f32"))
                           for c in (index.records("candidates") if index else []))
        text = r.record("text")
        names = {}
        t2i = text.record("text_to_image") if text else None
        for by in ([k for k in t2i.data if k != "queries"] if t2i else []):
            got = t2i.record(by)
            n = got.record("names") if got else None
            if n is not None:
                names[by] = (n.number("recall@1"), n.number("recall@5"))
        timed = r.record("precision")
        forms = timed.record("candidates") if timed else None
        precision = None if timed is None else PrecisionChoice(
            chosen=timed.text("chosen"),
            ms_p50={k: _Record(v, f"{forms.path}.{k}", where).number("ms_p50")
                    for k, v in (forms.data if forms else {}).items() if isinstance(v, dict)})
        return cls(int8_vs_fp32=Agreement.parse(r.record("int8_vs_fp32")),
                   fp16_vs_fp32=Agreement.parse(r.record("fp16_vs_fp32")), precision=precision,
                   onnx_vs_torch=Agreement.parse(r.record("onnx_vs_torch")), catalog_encoder=choice,
                   index_agreement=candidates,
                   text_int8_vs_fp32=Agreement.parse(text.record("int8_vs_fp32") if text else None),
                   text_names_recall=names)


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    name: str
    created: str
    preprocess: PreprocessCfg
    model: ModelInfo
    index: IndexInfo
    products_file: str
    product_count: int
    min_score: float
    files: dict[str, dict[str, Any]]
    producer: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    student: dict[str, Any] | None = None
    fidelity: dict[str, Any] = field(default_factory=dict)
    calibration: NoMatchRule | None = None  # None: the flat min_score alone decides "no match"
    text: TextInfo | None = None  # None: no text model (exported without --with-text)
    # how this bundle came to be: its base bundle and what changed (a --base catalog build), and the
    # checksums of the unshipped build/ files a later catalog build reads; None in older bundles
    lineage: dict[str, Any] | None = None
    # thumbnails named by their sha256, counted here and named by the product table (core/thumbnails.py);
    # None in bundles that list each thumbnail in `files`
    thumbnails: ThumbnailsInfo | None = None
    # how the export ran: engine ("local" or "ray"), workers, the Ray version; None in older bundles
    build: dict[str, Any] | None = None
    # the product table's key file (index key -> line, .npy): lets a reader parse a product's line only
    # when it is asked for; None in older bundles, whose table is parsed whole
    products_keys: str | None = None

    # the typed records (see TeacherRecord); `where` names the manifest file in an error
    def teacher_record(self, where: str = MANIFEST_NAME) -> TeacherRecord:
        return TeacherRecord.parse(self.teacher, where)

    def student_record(self, where: str = MANIFEST_NAME) -> StudentRecord | None:
        return StudentRecord.parse(self.student, where)

    def fidelity_record(self, where: str = MANIFEST_NAME) -> FidelityRecord:
        return FidelityRecord.parse(self.fidelity, where)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocess"]["size"] = list(self.preprocess.size)
        d["products"] = {"file": d.pop("products_file"), "count": d.pop("product_count")}
        keys = d.pop("products_keys")
        if keys is not None:  # left out when unset: such bundles keep their old shape
            d["products"]["keys"] = keys
        d["search"] = {"min_score": d.pop("min_score")}
        calibration = d.pop("calibration")
        if calibration is not None:  # optional keys left out when unset: such bundles keep their old shape
            d["search"]["calibration"] = {k: v for k, v in calibration.items()
                                          if v is not None or k not in _CALIBRATION_OPTIONAL}
        if d["text"] is None:
            del d["text"]
        if d["index"]["delta"] is None:  # one segment: the version-1 shape
            del d["index"]["delta"]
        if d["index"]["expansion_search"] is None:  # left out when unset: such bundles keep their old shape
            del d["index"]["expansion_search"]
        if d["index"]["projection_file"] is None:
            del d["index"]["projection_file"]
        if d["lineage"] is None:
            del d["lineage"]
        if d["build"] is None:
            del d["build"]
        if self.thumbnails is None:
            del d["thumbnails"]
        else:
            d["thumbnails"] = self.thumbnails.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _need(d: dict, key: str, kind: type | tuple, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise ManifestError(where, f"missing key '{key}'")
    value = d[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ManifestError(where, f"key '{key}' has the wrong type ({type(value).__name__})")
    return value


def parse_manifest(data: Any, where: str) -> Manifest:
    """Validate a decoded manifest; every problem is a one-line ManifestError naming the field."""
    if not isinstance(data, dict):
        raise ManifestError(where, "manifest is not a JSON object")
    version = _need(data, "schema_version", int, where)
    if version not in READABLE_SCHEMA_VERSIONS:
        raise ManifestError(
            where, f"unknown schema_version {version} (this edge-search reads versions "
                   f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))})"
        )
    pp = _need(data, "preprocess", dict, where)
    model = _need(data, "model", dict, where)
    index = _need(data, "index", dict, where)
    products = _need(data, "products", dict, where)
    search = _need(data, "search", dict, where)
    files = _need(data, "files", dict, where)
    try:
        preprocess = PreprocessCfg(
            size=tuple(_need(pp, "size", list, where + " preprocess")),
            mode=_need(pp, "mode", str, where + " preprocess"),
            mean=tuple(_need(pp, "mean", list, where + " preprocess")),
            std=tuple(_need(pp, "std", list, where + " preprocess")),
            interpolation=_need(pp, "interpolation", str, where + " preprocess"),
            resize_mode=_need(pp, "resize_mode", str, where + " preprocess"),
            fill_color=_need(pp, "fill_color", int, where + " preprocess"),
            cv2_interpolation=_need(pp, "cv2_interpolation", str, where + " preprocess"),
        )
        model_info = ModelInfo(
            file=_need(model, "file", str, where + " model"),
            input=_need(model, "input", str, where + " model"),
            output=_need(model, "output", str, where + " model"),
            embed_dim=_need(model, "embed_dim", int, where + " model"),
            precision=_need(model, "precision", str, where + " model"),
            opset=_need(model, "opset", int, where + " model"),
        )
        rescore = index.get("rescore_file")
        if rescore is not None and not isinstance(rescore, str):
            raise ManifestError(where + " index", "key 'rescore_file' has the wrong type")
        projection = index.get("projection_file")
        if projection is not None and not isinstance(projection, str):
            raise ManifestError(where + " index", "key 'projection_file' has the wrong type")
        index_info = IndexInfo(
            file=_need(index, "file", str, where + " index"),
            dtype=_need(index, "dtype", str, where + " index"),
            metric=_need(index, "metric", str, where + " index"),
            count=_need(index, "count", int, where + " index"),
            exact=_need(index, "exact", bool, where + " index"),
            rescore_file=rescore,
            catalog_encoder=_need(index, "catalog_encoder", str, where + " index"),
            delta=_parse_delta(index["delta"], where + " index delta") if "delta" in index else None,
            expansion_search=_need(index, "expansion_search", int, where + " index")
            if "expansion_search" in index else None,
            projection_file=projection,
        )
    except (TypeError, ValueError) as e:
        raise ManifestError(where, f"{e}") from None
    if version != index_info.schema_version:
        raise ManifestError(where, f"schema_version {version} for an index {index_info.shape_words} (such bundles "
                                   f"are version {index_info.schema_version})")
    min_score = _need(search, "min_score", float, where + " search")
    if not math.isfinite(min_score):
        raise ManifestError(where, "search min_score is not a finite number")
    calibration = _parse_calibration(search["calibration"], where) if "calibration" in search else None
    text = _parse_text(data["text"], where) if data.get("text") is not None else None
    for name, entry in files.items():
        digest = _need(entry, "sha256", str, f"{where} files[{name}]")
        size = _need(entry, "bytes", int, f"{where} files[{name}]")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or size < 0:
            raise ManifestError(where, f"files[{name}] needs a 64-digit hex sha256 and a byte count of 0 or more")
    if _need(products, "count", int, where + " products") < 0:
        raise ManifestError(where, "products count must not be negative")
    records = {key: data.get(key) for key in ("producer", "teacher", "student", "fidelity", "lineage", "build")}
    for key, value in records.items():  # free-form records, but shown by inspect: objects or nothing
        if value is not None and not isinstance(value, dict):
            raise ManifestError(where, f"key '{key}' must be a JSON object, got {type(value).__name__}")
    return Manifest(
        schema_version=version,
        name=_need(data, "name", str, where),
        created=_need(data, "created", str, where),
        preprocess=preprocess,
        model=model_info,
        index=index_info,
        products_file=_need(products, "file", str, where + " products"),
        product_count=_need(products, "count", int, where + " products"),
        products_keys=_need(products, "keys", str, where + " products") if "keys" in products else None,
        min_score=min_score,
        files=files,
        producer=data.get("producer") or {},
        teacher=data.get("teacher") or {},
        student=data.get("student"),
        fidelity=data.get("fidelity") or {},
        calibration=calibration,
        text=text,
        lineage=data.get("lineage"),
        build=data.get("build"),
        thumbnails=_parse_thumbnails(data["thumbnails"], where) if "thumbnails" in data else None,
    )


def _parse_thumbnails(t: Any, where: str) -> ThumbnailsInfo:
    where = where + " thumbnails"
    if not isinstance(t, dict):
        raise ManifestError(where, "must be a JSON object")
    if t.get("folder") != THUMBS_FOLDER or t.get("naming") != "sha256":
        raise ManifestError(where, f"this edge-search reads thumbnails in '{THUMBS_FOLDER}' named by sha256 only")
    sizes = {k: _need(t, k, int, where) for k in ("count", "bytes", "max_bytes")}
    if min(sizes.values()) < 0 or sizes["max_bytes"] > sizes["bytes"] or sizes["bytes"] > sizes["count"] * sizes["max_bytes"]:
        raise ManifestError(where, "count, bytes and max_bytes must be 0 or more and agree with each other")
    return ThumbnailsInfo(**sizes)


def _parse_text(t: Any, where: str) -> TextInfo:
    where = where + " text"
    index = t.get("index") if isinstance(t, dict) else None
    if index is not None and not isinstance(index, str):
        raise ManifestError(where, "key 'index' has the wrong type")
    try:
        return TextInfo(file=_need(t, "file", str, where), input=_need(t, "input", str, where),
                        output=_need(t, "output", str, where), precision=_need(t, "precision", str, where),
                        opset=_need(t, "opset", int, where), context_length=_need(t, "context_length", int, where),
                        tokenizer=_need(t, "tokenizer", str, where), index=index,
                        product_text_weight=_need(t, "product_text_weight", float, where),
                        fusion_alpha=_need(t, "fusion_alpha", float, where),
                        trim_padding=bool(t.get("trim_padding", False)))
    except ValueError as e:
        raise ManifestError(where, f"{e}") from None


def _parse_delta(d: Any, where: str) -> IndexDelta:
    if not isinstance(d, dict):
        raise ManifestError(where, "must be a JSON object")
    unknown = set(d) - {"file", "count", "removed", "removed_file", "rescore_file"}
    if unknown:
        raise ManifestError(where, f"unknown key(s) {', '.join(sorted(unknown))}")
    optional = {}
    for key in ("file", "removed_file", "rescore_file"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise ManifestError(where, f"key '{key}' has the wrong type")
        optional[key] = d.get(key)
    removed = d.get("removed", 0)
    if not isinstance(removed, int) or isinstance(removed, bool):
        raise ManifestError(where, "key 'removed' has the wrong type")
    return IndexDelta(count=_need(d, "count", int, where), removed=removed, **optional)


_CALIBRATION_OPTIONAL = {"negatives", "negative_margin", "rule"}
_CALIBRATION_KEYS = {"min_margin", "product_min_score", "max_false_reject", "source", *_CALIBRATION_OPTIONAL}


def _parse_calibration(cal: Any, where: str) -> NoMatchRule:
    """Strict: the rule decides what the device answers, so a key this reader
    does not know could change a decision it would silently skip."""
    where = where + " search.calibration"
    if not isinstance(cal, dict):
        raise ManifestError(where, "must be a JSON object")
    unknown = sorted(set(cal) - _CALIBRATION_KEYS)
    if unknown:
        raise ManifestError(where, f"unknown key(s) {', '.join(unknown)}")
    floors = _need(cal, "product_min_score", dict, where)
    for pid, v in floors.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ManifestError(where, f"product_min_score['{pid}'] is not a number")
    try:
        return NoMatchRule(min_margin=_need(cal, "min_margin", float, where),
                           product_min_score={k: float(v) for k, v in floors.items()},
                           max_false_reject=_need(cal, "max_false_reject", float, where),
                           source=_need(cal, "source", str, where),
                           negatives=_need(cal, "negatives", str, where) if "negatives" in cal else None,
                           negative_margin=_need(cal, "negative_margin", float, where)
                           if "negative_margin" in cal else None,
                           rule=_need(cal, "rule", str, where) if "rule" in cal else None)
    except ValueError as e:
        raise ManifestError(where, f"{e}") from None


def read_manifest_bytes(bundle_dir: Path) -> bytes:
    """The raw bytes of a bundle's manifest.json (what a signature covers)."""
    path = Path(bundle_dir) / MANIFEST_NAME
    try:
        is_dir = Path(bundle_dir).is_dir()
    except OSError as e:  # a folder we may not look into
        raise BundleError(f"{bundle_dir}: cannot open the bundle ({e.strerror or e})") from None
    if not is_dir:
        raise BundleError(f"{bundle_dir}: not a bundle directory")
    if not os.path.lexists(path):
        raise BundleError(f"{path}: missing (is {bundle_dir} a bundle?)")
    return read_regular(path, limit=MAX_MANIFEST_BYTES, what="manifest", error=BundleError)


def manifest_from_bytes(data: bytes, where: str) -> Manifest:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(f"{where}: cannot read ({e})") from None
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as e:
        raise BundleError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise BundleError(f"{where}: not valid JSON (nested too deeply)") from None
    return parse_manifest(decoded, where)


def read_manifest(bundle_dir: Path) -> Manifest:
    data = read_manifest_bytes(bundle_dir)
    return manifest_from_bytes(data, str(Path(bundle_dir) / MANIFEST_NAME))
