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
from typing import Any, Iterator, Mapping

import numpy as np

from edge_search.errors import BundleError
from edge_search.files import MAX_TABLE_BYTES, read_regular


def product_words(name: str, description: str | None) -> str:
    """A product's own words, as the teacher's text tower is trained on and the text index holds them."""
    return f"{name}. {description}" if description else name


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


@dataclass(frozen=True)
class ProductTable:
    products: tuple[Product, ...]
    key_to_product: np.ndarray  # index key -> position in products

    @cached_property  # read on every search; 100k products make a scan cost ms
    def max_images(self) -> int:
        return max((len(p.keys) for p in self.products), default=1)

    def __len__(self) -> int:
        return len(self.products)

    @classmethod
    def from_products(cls, products: list[Product], key_count: int,
                      removed: np.ndarray | None = None) -> "ProductTable":
        """Every key but the `removed` ones (a segmented index's tombstones) belongs to one product."""
        lookup = np.full(key_count, -1, dtype=np.int64)
        for pos, p in enumerate(products):
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
        return cls(products=tuple(products), key_to_product=lookup)

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
    def load(cls, path: Path, key_count: int, removed: np.ndarray | None = None) -> "ProductTable":
        products = []
        data = read_regular(path, limit=MAX_TABLE_BYTES, what="product table", error=BundleError)
        # a line at a time, not the whole table decoded and split; and only at "\n", as it was written
        # (str.splitlines also splits at U+2028 or U+0085 inside a product's name)
        lines = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="\n")
        try:
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    products.append(Product(
                        id=str(d["id"]), name=str(d.get("name") or d["id"]), keys=tuple(int(k) for k in d["keys"]),
                        price=None if d.get("price") is None else float(d["price"]),
                        category=d.get("category"), description=d.get("description"),
                        thumbnail=d.get("thumbnail"), meta=dict(d["meta"]) if d.get("meta") else NO_META,
                    ))
                except (ValueError, KeyError, TypeError) as e:
                    raise BundleError(f"{path}: line {n} is not a valid product ({type(e).__name__}: {e})") from None
        except UnicodeDecodeError as e:
            raise BundleError(f"{path}: cannot read ({e})") from None
        try:
            return cls.from_products(products, key_count, removed)
        except ValueError as e:
            raise BundleError(f"{path}: {e}") from None

    def lines(self) -> Iterator[str]:
        """products.jsonl, a line at a time (a million products' lines are not held as one string)."""
        for p in self.products:
            yield json.dumps(p.to_json(), ensure_ascii=False) + "\n"
