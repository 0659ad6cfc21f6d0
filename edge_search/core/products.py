"""The bundle's product table (`products.jsonl`): one product per line.

Each product lists the index keys of its images, so several catalog images
collapse to one product at search time. Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from edge_search.errors import BundleError
from edge_search.files import MAX_TABLE_BYTES, read_regular


def product_words(name: str, description: str | None) -> str:
    """A product's own words, as the teacher's text tower is trained on and the text index holds them."""
    return f"{name}. {description}" if description else name


PRODUCT_KEYS_FILE = "products.keys.npy"  # the table's key file (see ProductTable.load)
NO_META: Mapping[str, Any] = MappingProxyType({})  # shared by every product (and catalog row) without extra fields


@dataclass(frozen=True, slots=True)  # (slots: a catalog holds millions of them)
class Product:
    id: str
    name: str
    keys: tuple[int, ...]
    price: float | None = None
    category: str | None = None
    description: str | None = None
    thumbnail: str | None = None
    meta: Mapping[str, Any] = field(default_factory=lambda: NO_META)  # (a mapping proxy is no plain default)

    def to_json(self) -> dict[str, Any]:
        d = {"id": self.id, "name": self.name, "price": self.price, "category": self.category,
             "description": self.description, "thumbnail": self.thumbnail, "keys": list(self.keys)}
        if self.meta:
            d["meta"] = self.meta
        return d


def _product(line: str | bytes, where: str, n: int) -> Product:
    """Line `n` of a product table."""
    try:
        d = json.loads(line)
        return Product(id=str(d["id"]), name=str(d.get("name") or d["id"]), keys=tuple(int(k) for k in d["keys"]),
                       price=None if d.get("price") is None else float(d["price"]),
                       category=d.get("category"), description=d.get("description"),
                       thumbnail=d.get("thumbnail"), meta=dict(d["meta"]) if d.get("meta") else NO_META)
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # (UnicodeDecodeError is a ValueError)
        raise BundleError(f"{where}: line {n} is not a valid product ({type(e).__name__}: {e})") from None


class ProductLines(Sequence):
    """A product table's products, each parsed from its line when first asked for.

    A kiosk restarting on 100 000 products needs the handful its first answer
    names, not 100 000 parsed objects (0.8 s here); the lines are found with one
    scan for newlines. Iterating parses every line (once)."""

    def __init__(self, data: bytes, where: str):
        self._data, self._where = data, where
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A)
        if not len(data) or data[-1:] != b"\n":
            ends = np.append(ends, len(data))
        starts = np.concatenate(([0], ends[:-1] + 1))
        # blank lines are skipped, as the whole-table reader skips them; a product's line is never this short
        short = np.flatnonzero(ends - starts < 8)
        keep = np.ones(len(starts), dtype=bool)
        keep[[i for i in short if not data[starts[i]:ends[i]].strip()]] = False
        self._starts, self._ends = starts[keep], ends[keep]
        self._numbers = np.flatnonzero(keep) + 1  # line numbers, for errors
        self._parsed: list[Product | None] = [None] * len(self._starts)

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        p = self._parsed[i]
        if p is None:
            line = self._data[int(self._starts[i]):int(self._ends[i])]
            p = self._parsed[i] = _product(line, self._where, int(self._numbers[i]))
        return p

    def __iter__(self) -> Iterator[Product]:
        return (self[i] for i in range(len(self)))

    def each(self) -> Iterator[Product]:
        """Every product, parsed from its line and not kept (one pass over a large table)."""
        for i in range(len(self)):
            p = self._parsed[i]
            yield p if p is not None else _product(self._data[int(self._starts[i]):int(self._ends[i])], self._where,
                                                   int(self._numbers[i]))


def each_product(products: Sequence[Product]) -> Iterator[Product]:
    """Every product once, not kept where they are parsed from lines (a check of a large table)."""
    return products.each() if isinstance(products, ProductLines) else iter(products)


@dataclass(frozen=True)
class ProductTable:
    products: Sequence[Product]  # a tuple, or ProductLines (parsed when asked for) when read with its key file
    key_to_product: np.ndarray  # index key -> position in products; -1 for a removed key

    @cached_property  # read on every search; 100k products make a scan cost ms
    def max_images(self) -> int:
        owned = self.key_to_product[self.key_to_product >= 0]
        return max(int(np.bincount(owned).max(initial=0)), 1) if len(owned) else 1

    def __len__(self) -> int:
        return len(self.products)

    @classmethod
    def from_products(cls, products: list[Product], key_count: int,
                      removed: np.ndarray | None = None) -> "ProductTable":
        """Every key but the `removed` ones (a segmented index's tombstones) belongs to one product."""
        return cls(products=tuple(products), key_to_product=_key_lookup(products, key_count, removed))

    def best_scores(self, scores: np.ndarray) -> np.ndarray:
        """Query x image-key scores -> query x product scores, each product's best image (as search
        ranks them); -inf for a product without images. Columns beyond the table's keys are ignored."""
        scores = np.asarray(scores, dtype=np.float32)
        owned = np.flatnonzero(self.key_to_product >= 0)  # removed keys (a segmented index's) count for none
        order = owned[np.argsort(self.key_to_product[owned], kind="stable")]  # keys grouped by product
        counts = np.bincount(self.key_to_product[owned], minlength=len(self))
        starts = (np.cumsum(counts) - counts).astype(np.intp)
        out = np.full((len(scores), len(self)), -np.inf, dtype=np.float32)
        has = counts > 0
        if has.any():
            out[:, has] = np.maximum.reduceat(scores[:, order], starts[has], axis=1)
        return out

    @classmethod
    def load(cls, path: Path, key_count: int, removed: np.ndarray | None = None,
             keys_path: Path | None = None) -> "ProductTable":
        """products.jsonl; with its key file (`keys_path`), its lines are parsed only when asked for
        and the key -> product lookup is read from that file (`check_keys` compares the two)."""
        data = read_regular(path, limit=MAX_TABLE_BYTES, what="product table", error=BundleError)
        if keys_path is not None:
            lines = ProductLines(data, str(path))
            return cls(products=lines, key_to_product=read_key_file(keys_path, key_count, len(lines), removed))
        products = []
        # a line at a time, not the whole table decoded and split; and only at "\n", as it was written
        # (str.splitlines also splits at U+2028 or U+0085 inside a product's name)
        lines = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="\n")
        try:
            for n, line in enumerate(lines, 1):
                if line.strip():
                    products.append(_product(line, str(path), n))
        except UnicodeDecodeError as e:
            raise BundleError(f"{path}: cannot read ({e})") from None
        try:
            return cls.from_products(products, key_count, removed)
        except ValueError as e:
            raise BundleError(f"{path}: {e}") from None

    def check_keys(self, path: Path, keys_path: Path, removed: np.ndarray | None = None) -> None:
        """Every line parsed, and the keys the lines give are the key file's (what `load` with a key
        file takes on trust until this runs: install and a checked open run it)."""
        try:
            lookup = _key_lookup(self.products, len(self.key_to_product), removed)
        except ValueError as e:
            raise BundleError(f"{path}: {e}") from None
        if not np.array_equal(lookup, self.key_to_product):
            key = int(np.flatnonzero(lookup != self.key_to_product)[0])
            raise BundleError(f"{keys_path}: key {key} belongs to product line {int(self.key_to_product[key]) + 1}, "
                              f"{path.name} gives it to line {int(lookup[key]) + 1}")

    def lines(self) -> Iterator[str]:
        """products.jsonl, a line at a time (a million products' lines are not held as one string)."""
        for p in self.products:
            yield json.dumps(p.to_json(), ensure_ascii=False) + "\n"


def _key_lookup(products: Sequence[Product], key_count: int, removed: np.ndarray | None) -> np.ndarray:
    """Index key -> product position, checked: every key but the `removed` ones belongs to one product."""
    lookup = np.full(key_count, -1, dtype=np.int64)
    for pos, p in enumerate(each_product(products)):
        for key in p.keys:
            if not 0 <= key < key_count or lookup[key] != -1:
                raise ValueError(f"product '{p.id}': key {key} out of range or shared")
            lookup[key] = pos
    orphans = lookup < 0
    if removed is not None and len(removed):
        if not orphans[removed].all():
            key = int(removed[~orphans[removed]][0])
            raise ValueError(f"removed index key {key} still belongs to product '{products[lookup[key]].id}'")
        orphans[removed] = False
    if orphans.any():
        raise ValueError(f"{int(orphans.sum())} index keys belong to no product")
    return lookup


def key_file_bytes(table: ProductTable) -> bytes:
    """The product table's key file (products.keys.npy): index key -> line, int32, -1 for a removed key."""
    buf = io.BytesIO()
    np.save(buf, table.key_to_product.astype(np.int32), allow_pickle=False)
    return buf.getvalue()


def read_key_file(path: Path, key_count: int, products: int, removed: np.ndarray | None = None) -> np.ndarray:
    """A key file's lookup, checked against the index's key space, the table's length and the removed
    keys (the file is small: 4 bytes per image)."""
    try:
        lookup = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BundleError(f"{path}: cannot read the product keys ({e})") from None
    if lookup.ndim != 1 or lookup.dtype.kind not in "iu" or len(lookup) != key_count:
        raise BundleError(f"{path}: product keys must be {key_count} integers, got {lookup.dtype} {lookup.shape}")
    lookup = lookup.astype(np.int64)
    if len(lookup) and (lookup.min() < -1 or lookup.max() >= products):
        raise BundleError(f"{path}: product keys must name lines 0 .. {products - 1} (or -1 for a removed key)")
    gone = np.zeros(key_count, dtype=bool)
    if removed is not None and len(removed):
        gone[removed] = True
    if (gone != (lookup < 0)).any():
        key = int(np.flatnonzero(gone != (lookup < 0))[0])
        raise BundleError(f"{path}: key {key} " + ("is removed but names a product" if gone[key] else "belongs to no product"))
    return lookup
