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
import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Container, Iterable, Iterator, Mapping, Sequence

import numpy as np

from edge_search.display import has_control, printable
from edge_search.errors import CatalogError, ImageError
from edge_search.files import MAX_IMAGE_BYTES, MAX_TABLE_BYTES, open_regular_text, read_regular
from edge_search.core.columns import ShaColumn, Spill, TextBuilder, TextColumn
from edge_search.core.images import decode_image, load_image
from edge_search.core.products import NO_META

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
KNOWN_COLUMNS = ("id", "image", "name", "description", "price", "category")
_PRODUCT_FIELDS = ("name", "price", "category", "description")


# One row as read: a catalog holds its rows as columns (CatalogRows) and makes one of these when a row is read.
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


class CatalogRows(Sequence):
    """A catalog's rows as columns (edge_search.core.columns): a CatalogRow is made only when one is read.

    Held as one object per row, a million-image catalog cost the machine that builds its bundle ~1 KB per
    image before any vector; as columns it costs its text's bytes and a few words per row. Rows sharing
    an id share one product code (codes number products in order of first appearance in the catalog read)."""

    def __init__(self, *, line: np.ndarray, product: np.ndarray, ids: TextColumn, image: TextColumn,
                 name: TextColumn, description: TextColumn, price: np.ndarray, category: np.ndarray,
                 categories: tuple[str, ...], meta: Mapping[int, Mapping[str, Any]], sha256: ShaColumn,
                 thumb: ShaColumn | None = None, vouched: np.ndarray | None = None):
        self.line, self.product, self.ids, self.image = line, product, ids, image
        self.name, self.description, self.price = name, description, price  # (price NaN: none)
        self.category, self.categories = category, categories  # (category -1: none)
        self.meta, self.sha256 = meta, sha256  # (meta: row position -> its extra columns, rows that have any)
        # what a build learned of each image beside its sha256: its thumbnail's (where a worker made it)
        self.thumb = thumb if thumb is not None else ShaColumn.empty(len(line))
        # the sha256 came from the embedding cache's record of the file (read_catalog's `known`): not read
        self.vouched = vouched if vouched is not None else np.zeros(len(line), dtype=bool)

    @classmethod
    def of(cls, rows: Iterable[CatalogRow]) -> "CatalogRows":
        b = RowsBuilder()
        for r in rows:
            b.add(r)
        return b.freeze()

    def __len__(self) -> int:
        return len(self.line)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        price, category = float(self.price[i]), int(self.category[i])
        return CatalogRow(line=int(self.line[i]), id=self.ids[int(self.product[i])], image=self.image[i],
                          name=self.name[i], description=self.description[i],
                          price=None if math.isnan(price) else price,
                          category=self.categories[category] if category >= 0 else None,
                          meta=self.meta.get(i, NO_META), sha256=self.sha256[i])

    def __iter__(self) -> Iterator[CatalogRow]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def take(self, positions) -> "CatalogRows":
        """These rows, in this order (their product codes kept)."""
        positions = np.asarray(positions, dtype=np.int64)
        where = {int(p): n for n, p in enumerate(positions)} if self.meta else {}
        return CatalogRows(line=self.line[positions], product=self.product[positions], ids=self.ids,
                           image=self.image.take(positions), name=self.name.take(positions),
                           description=self.description.take(positions), price=self.price[positions],
                           category=self.category[positions], categories=self.categories,
                           meta={where[p]: m for p, m in self.meta.items() if p in where},
                           sha256=self.sha256.take(positions), thumb=self.thumb.take(positions),
                           vouched=self.vouched[positions])

    def changed(self, *, price: np.ndarray | None = None, meta: Mapping[int, Mapping[str, Any]] | None = None,
                sha256: ShaColumn | None = None, thumb: ShaColumn | None = None) -> "CatalogRows":
        """The same rows with these columns replaced."""
        return CatalogRows(line=self.line, product=self.product, ids=self.ids, image=self.image, name=self.name,
                           description=self.description, price=self.price if price is None else price,
                           category=self.category, categories=self.categories,
                           meta=self.meta if meta is None else meta, sha256=self.sha256 if sha256 is None else sha256,
                           thumb=self.thumb if thumb is None else thumb, vouched=self.vouched)

    def id(self, i: int) -> str:
        return self.ids[int(self.product[i])]

    def spill(self, to: Spill) -> None:
        """Every column mapped from a file in `to` (Spill), in place: the same rows, no longer in memory."""
        for text in (self.ids, self.image, self.name, self.description, self.sha256, self.thumb):
            text.spill(to)
        self.line, self.product, self.price = to.array(self.line), to.array(self.product), to.array(self.price)
        self.category, self.vouched = to.array(self.category), to.array(self.vouched)

    def row_ids(self) -> TextColumn:
        """Each row's product id, as a column."""
        return self.ids.take(self.product)

    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """Products in order of first appearance: (row positions grouped by product, each group's start;
        a last entry closes the last group). Within a product its rows keep catalog order."""
        codes, first = np.unique(self.product, return_index=True)
        rank = np.empty(int(codes.max()) + 1 if len(codes) else 0, dtype=np.int64)
        rank[codes] = np.argsort(np.argsort(first, kind="stable"), kind="stable")
        order = np.argsort(rank[self.product], kind="stable")
        counts = np.bincount(rank[self.product], minlength=len(codes))
        return order, np.concatenate(([0], np.cumsum(counts)))


class RowsBuilder:
    """CatalogRows appended one row at a time; rows sharing an id are checked against the product's first."""

    def __init__(self):
        self._line, self._product, self._price = array("q"), array("i"), array("d")
        self._category, self._categories = array("i"), {}
        self._ids, self._image, self._name, self._description = TextBuilder(), TextBuilder(), TextBuilder(), \
            TextBuilder()
        self._codes: dict[str, int] = {}  # product id -> code (one entry per product, not per row)
        self._first = array("q")  # product code -> its first row
        self._category_names: list[str] = []
        self._meta: dict[int, Mapping[str, Any]] = {}
        self._sha, self._sha_known, self._vouched = bytearray(), bytearray(), bytearray()

    def __len__(self) -> int:
        return len(self._line)

    def _value(self, field_: str, row: int):
        if field_ == "price":
            return None if math.isnan(self._price[row]) else self._price[row]
        if field_ == "category":
            code = self._category[row]
            return None if code < 0 else self._category_names[code]
        return {"name": self._name, "description": self._description}[field_].get(row)

    def clashes(self, row: CatalogRow) -> tuple[int, list[str]] | None:
        """Where `row` contradicts the first row of its product (rows sharing an id are images of one
        product, so they must agree on its name, price, category and description; a row may leave one
        empty): (that row's line, the clashes), or None."""
        code = self._codes.get(row.id)
        if code is None:
            return None
        first = self._first[code]
        found = []
        for f in _PRODUCT_FIELDS:
            mine, theirs = getattr(row, f), self._value(f, first)
            if mine is not None and theirs is not None and mine != theirs:
                found.append(f"{f} {mine!r} (line {self._line[first]} says {theirs!r})")
        return (self._line[first], found) if found else None

    def add(self, row: CatalogRow, *, vouched: bool = False) -> None:
        n = len(self._line)
        code = self._codes.get(row.id)
        if code is None:
            code = self._codes[row.id] = len(self._codes)
            self._ids.append(row.id)
            self._first.append(n)
        self._line.append(row.line)
        self._product.append(code)
        self._image.append(row.image)
        self._name.append(row.name)
        self._description.append(row.description)
        self._price.append(math.nan if row.price is None else row.price)
        if row.category is not None and row.category not in self._categories:
            self._categories[row.category] = len(self._category_names)
            self._category_names.append(row.category)
        self._category.append(-1 if row.category is None else self._categories[row.category])
        if row.meta:
            self._meta[n] = row.meta
        self._sha += bytes.fromhex(row.sha256) if row.sha256 is not None else bytes(32)
        self._sha_known.append(row.sha256 is not None)
        self._vouched.append(vouched)

    def freeze(self) -> CatalogRows:
        n = len(self._line)

        def view(buffer, dtype):  # the builder's own buffer, not a copy (a builder is done with once frozen)
            return np.frombuffer(buffer, dtype=dtype) if n else np.zeros(0, dtype)

        sha = ShaColumn(view(self._sha, np.uint8).reshape(n, 32), view(self._sha_known, np.bool_))
        return CatalogRows(line=view(self._line, np.int64), product=view(self._product, np.int32),
                           ids=self._ids.freeze(), image=self._image.freeze(), name=self._name.freeze(),
                           description=self._description.freeze(), price=view(self._price, np.float64),
                           category=view(self._category, np.int32), categories=tuple(self._category_names),
                           meta=self._meta, sha256=sha, vouched=view(self._vouched, np.bool_))


@dataclass(frozen=True)
class Catalog:
    source: Path
    rows: CatalogRows  # (any sequence of CatalogRow given is held as CatalogRows)
    skipped: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.rows, CatalogRows):
            object.__setattr__(self, "rows", CatalogRows.of(self.rows))

    def positions(self) -> dict[str, list[int]]:
        """Products in order of first appearance, each with its rows' positions."""
        order, starts = self.rows.groups()
        return {self.rows.id(int(order[starts[g]])): order[starts[g]:starts[g + 1]].tolist()
                for g in range(len(starts) - 1)}

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
                 read_images: bool = True) -> tuple[str | None, bool]:
    """The image decodes (ImageError if not); one whose sha256 is in `decoded` is known to, unread by
    OpenCV, and one whose sha256 `known` gives is not even read. Returns the sha256 when it took one, and
    whether `known` vouched for the file. Without `read_images` nothing is read (the caller's workers
    read, hash and check each image)."""
    vouched = known(path) if known is not None and (decoded or not read_images) else None
    if not read_images:
        return vouched, vouched is not None
    if not decoded:
        load_image(path)
        return None, False
    if vouched is not None and vouched in decoded:
        return vouched, True
    data = read_regular(path, limit=MAX_IMAGE_BYTES, what="image", error=ImageError)
    digest = hashlib.sha256(data).hexdigest()
    if digest not in decoded:
        decode_image(data, str(path))
    return digest, vouched is not None


def _row_from_record(rec: dict[str, Any], line: int, base: Path, problems: list[str], where: str,
                     decoded: Container[str] = frozenset(), known: KnownHashes | None = None,
                     read_images: bool = True) -> tuple[CatalogRow, bool] | None:
    """The row, and whether `known` vouched for its image (see _check_image); None for a bad row."""
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
        # (an absolute `image` stays as it is; not a Path: pathlib interns every part of every path)
        path = os.path.join(base, image)
        try:
            digest, vouched = _check_image(path, decoded, known, read_images)
        except ImageError as e:
            bad.append(f"image {image}: {str(e).split(': ', 1)[-1]}")
    if bad:
        problems.append(f"{where} line {line}: " + "; ".join(bad))
        return None
    meta = {k: v for k, v in rec.items() if k not in KNOWN_COLUMNS and _clean(v) is not None}
    category = _clean(rec.get("category"))
    return CatalogRow(line=line, id=pid, image=path, name=_clean(rec.get("name")),
                      description=_clean(rec.get("description")), price=price, category=category,
                      meta=meta or NO_META, sha256=digest), vouched



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


def _rows_from_folder(root: Path, read_images: bool = True) -> tuple[RowsBuilder, list[str]]:
    rows, problems = RowsBuilder(), []
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
            rows.add(CatalogRow(line=n, id=product_dir.name, image=str(img), name=product_dir.name))
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
        rows = RowsBuilder()
        # a row that contradicts its product's first row is a bad row naming both lines (merged silently,
        # one of two prices would be dropped without a word); with --skip-bad the first row's values stand
        clashes = []
        try:
            for line, rec in records:
                if "__error__" in rec:
                    problems.append(f"{path} line {line}: {rec['__error__']}")
                    continue
                read = _row_from_record(rec, line, path.parent, problems, str(path), decoded, known, read_images)
                if read is None:
                    continue
                row, vouched = read
                clash = rows.clashes(row)
                if clash is not None:
                    clashes.append(f"{path} line {row.line}: id '{row.id}' repeats with another " + ", ".join(clash[1]))
                    continue
                rows.add(row, vouched=vouched)
        except UnicodeDecodeError:
            raise CatalogError(f"{path}: not UTF-8 text") from None
        except csv.Error as e:
            raise CatalogError(f"{path}: malformed CSV ({e})") from None
        problems += clashes
    if problems and not skip_bad:
        listing = "; ".join(problems[:20]) + (f"; … and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise CatalogError(f"{path}: {len(problems)} bad row(s), nothing written (use --skip-bad to go on): {listing}")
    if not rows:
        raise CatalogError(f"{path}: no usable product images")
    return Catalog(source=path, rows=rows.freeze(), skipped=tuple(problems))
