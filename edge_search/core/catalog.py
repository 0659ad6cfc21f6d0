"""Reading a retailer's catalog: CSV, JSONL, or a folder of DIR/<id>/*.jpg.

One row per product image; rows sharing an `id` are images of one product.
Validation reports every bad row at once, each with its line number.
Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Container, Iterable, Mapping

from edge_search.display import has_control, printable
from edge_search.errors import CatalogError, ImageError
from edge_search.files import MAX_IMAGE_BYTES, MAX_TABLE_BYTES, open_regular_text, read_regular
from edge_search.core.images import decode_image, load_image
from edge_search.core.products import NO_META

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
KNOWN_COLUMNS = ("id", "image", "name", "description", "price", "category")


# A catalog of millions of rows is held while it is built: slots; the image's path as a str (a Path object
# and the caches hashing it fills take ~600 bytes more per row); rows without extra columns share NO_META.
@dataclass(frozen=True, slots=True)
class CatalogRow:
    line: int
    id: str
    image: str  # the image file's path (relative paths already joined to the catalog's folder)
    name: str | None = None
    description: str | None = None
    price: float | None = None
    category: str | None = None
    meta: Mapping[str, Any] = field(default_factory=lambda: NO_META)  # (a mapping proxy is no plain default)
    sha256: str | None = None  # of the image's bytes, where reading the catalog took it (see read_catalog)


@dataclass(frozen=True)
class Catalog:
    source: Path
    rows: tuple[CatalogRow, ...]
    skipped: tuple[str, ...] = ()

    def positions(self) -> dict[str, list[int]]:
        """Products in order of first appearance, each with its rows' positions."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(self.rows):
            groups.setdefault(r.id, []).append(i)
        return groups

    def grouped(self) -> list[tuple[str, list[CatalogRow]]]:
        """Products in order of first appearance, each with its rows."""
        return [(pid, [self.rows[i] for i in keys]) for pid, keys in self.positions().items()]


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# where a caller knows a file's sha256 without reading it (the export's stat cache): path -> sha256 or None
KnownHashes = Callable[[str], "str | None"]


def _check_image(path: str, decoded: Container[str], known: KnownHashes | None = None,
                 read_images: bool = True) -> str | None:
    """The image decodes (ImageError if not); one whose sha256 is in `decoded` is known to, unread by
    OpenCV, and one whose sha256 `known` gives is not even read. Returns the sha256 when it took one.
    Without `read_images` nothing is read (the caller's workers read, hash and check each image)."""
    if not read_images:
        return known(path) if known is not None else None
    if not decoded:
        load_image(path)
        return None
    if known is not None:
        digest = known(path)
        if digest is not None and digest in decoded:
            return digest
    data = read_regular(path, limit=MAX_IMAGE_BYTES, what="image", error=ImageError)
    digest = hashlib.sha256(data).hexdigest()
    if digest not in decoded:
        decode_image(data, str(path))
    return digest


def _row_from_record(rec: dict[str, Any], line: int, base: Path, problems: list[str], where: str,
                     decoded: Container[str] = frozenset(), known: KnownHashes | None = None,
                     read_images: bool = True) -> CatalogRow | None:
    pid, image = _clean(rec.get("id")), _clean(rec.get("image"))
    bad = []
    if pid is None:
        bad.append("missing id")
    elif has_control(pid):  # a NUL or ESC in an id reaches file names, terminals and the index's key table
        bad.append(f"id {printable(pid)!r} holds control characters")
    if image is None:
        bad.append("missing image")
    price = None
    raw_price = _clean(rec.get("price"))
    if raw_price is not None:
        try:
            price = float(raw_price)
            if not math.isfinite(price):
                raise ValueError
        except ValueError:
            bad.append(f"price {raw_price!r} is not a number")
    path = None
    if image is not None:
        path = str(base / image)  # (an absolute `image` stays as it is)
        try:
            digest = _check_image(path, decoded, known, read_images)
        except ImageError as e:
            bad.append(f"image {image}: {str(e).split(': ', 1)[-1]}")
    if bad:
        problems.append(f"{where} line {line}: " + "; ".join(bad))
        return None
    meta = {k: v for k, v in rec.items() if k not in KNOWN_COLUMNS and _clean(v) is not None}
    category = _clean(rec.get("category"))
    return CatalogRow(line=line, id=pid, image=path, name=_clean(rec.get("name")),
                      description=_clean(rec.get("description")), price=price,
                      # a few categories repeat over millions of rows: one str each
                      category=sys.intern(category) if category is not None else None,
                      meta=meta or NO_META, sha256=digest)


_PRODUCT_FIELDS = ("name", "price", "category", "description")


def _drop_conflicts(rows: list[CatalogRow], problems: list[str], where: str) -> list[CatalogRow]:
    """Rows sharing an id are images of one product, so they must agree on its name, price,
    category and description (a row may leave one empty). A row that contradicts the
    product's first row is a bad row naming both lines: merged silently, one of two prices
    would be dropped without a word. With --skip-bad it is skipped and the first row's values stand."""
    first: dict[str, CatalogRow] = {}
    kept = []
    for row in rows:
        seen = first.setdefault(row.id, row)
        clashes = [f"{f} {getattr(row, f)!r} (line {seen.line} says {getattr(seen, f)!r})" for f in _PRODUCT_FIELDS
                   if getattr(row, f) is not None and getattr(seen, f) is not None and getattr(row, f) != getattr(seen, f)]
        if seen is not row and clashes:
            problems.append(f"{where} line {row.line}: id '{row.id}' repeats with another " + ", ".join(clashes))
            continue
        kept.append(row)
    return kept


def _records_csv(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with open_regular_text(path, limit=MAX_TABLE_BYTES, what="catalog", error=CatalogError, newline="",
                           encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise CatalogError(f"{path}: empty file, expected a header with id,image")
        missing = [c for c in ("id", "image") if c not in [h.strip() for h in reader.fieldnames if h]]
        if missing:
            raise CatalogError(f"{path}: header lacks required column(s) {', '.join(missing)}")
        for rec in reader:
            rec = {(k or "").strip(): v for k, v in rec.items() if k is not None}
            yield reader.line_num, rec


def _records_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with open_regular_text(path, limit=MAX_TABLE_BYTES, what="catalog", error=CatalogError) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, {"__error__": f"not valid JSON ({e.msg})"}
                continue
            yield n, rec if isinstance(rec, dict) else {"__error__": "not a JSON object"}


def _rows_from_folder(root: Path, read_images: bool = True) -> tuple[list[CatalogRow], list[str]]:
    rows, problems = [], []
    n = 0
    for product_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for img in sorted(p for p in product_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            n += 1
            try:
                if read_images:
                    load_image(img)
            except ImageError as e:
                problems.append(f"{img}: {str(e).split(': ', 1)[-1]}")
                continue
            if has_control(product_dir.name):
                problems.append(f"{printable(product_dir)}: folder name (the product id) holds control characters")
                continue
            rows.append(CatalogRow(line=n, id=product_dir.name, image=str(img), name=product_dir.name))
    return rows, problems


def read_catalog(path: str | Path, *, skip_bad: bool = False, decoded: Container[str] = frozenset(),
                 known: KnownHashes | None = None, read_images: bool = True) -> Catalog:
    """Read and validate a catalog; raises CatalogError listing every bad row
    unless `skip_bad`, in which case the bad rows are listed in `skipped`.
    Every image must decode; `decoded` holds the sha256 of images known to (a base
    bundle's: the same bytes decoded when it was built), which are not decoded
    again: in a nightly catalog build that decoding was most of the time. With
    `decoded`, each row keeps its image's sha256, so a build need not read it again; `known` gives the
    sha256 of files whose bytes a caller can vouch for without reading them (they are not read at all
    when that sha256 is in `decoded`). `read_images=False` reads no image at all (the Ray engine's workers
    read, hash and decode them, and report a bad one with its row)."""
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"{path}: no such catalog file or folder")
    problems: list[str] = []
    if path.is_dir():
        rows, problems = _rows_from_folder(path, read_images)
    else:
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".jsonl", ".ndjson"):
            raise CatalogError(f"{path}: unknown catalog format '{suffix}' (use .csv, .jsonl or a folder)")
        records = _records_csv(path) if suffix == ".csv" else _records_jsonl(path)
        rows = []
        try:
            for line, rec in records:
                if "__error__" in rec:
                    problems.append(f"{path} line {line}: {rec['__error__']}")
                    continue
                row = _row_from_record(rec, line, path.parent, problems, str(path), decoded, known, read_images)
                if row is not None:
                    rows.append(row)
        except UnicodeDecodeError:
            raise CatalogError(f"{path}: not UTF-8 text") from None
        except csv.Error as e:
            raise CatalogError(f"{path}: malformed CSV ({e})") from None
        rows = _drop_conflicts(rows, problems, str(path))
    if problems and not skip_bad:
        listing = "; ".join(problems[:20]) + (f"; … and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise CatalogError(f"{path}: {len(problems)} bad row(s), nothing written (use --skip-bad to go on): {listing}")
    if not rows:
        raise CatalogError(f"{path}: no usable product images")
    return Catalog(source=path, rows=tuple(rows), skipped=tuple(problems))
