"""A catalog build's product table, made from the catalog's columns: each Product is made when it is read.

The table a build writes (products.jsonl, the key file) and searches (the gates) was a tuple of Product
objects, one per product and again per key layout; at a million products that is ~0.3 KB each on the
machine that builds the bundle (issue #15). Here a product is its group of catalog rows, and its keys a
row of a key matrix. Must not import torch.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from edge_search.core.catalog import Catalog
from edge_search.core.columns import ShaColumn, Spill
from edge_search.core.products import NO_META, Product, ProductTable
from edge_search.core.thumbnails import FOLDER as THUMBS_FOLDER


class CatalogProducts(Sequence):
    """The catalog's products in order of first appearance; index key i is catalog row i (a product's
    rows, in catalog order, whatever order they come in). Each product takes its rows' first non-empty
    name, price, category and description, their extra columns merged (the first row's value of each
    wins), and its first image's thumbnail (by digest in `thumbs`; none without)."""

    def __init__(self, catalog: Catalog, thumbs: ShaColumn | None = None):
        self._rows, self._thumbs = catalog.rows, thumbs
        self._order, self._starts = catalog.rows.groups()

    def __len__(self) -> int:
        return len(self._starts) - 1

    def spill(self, to: Spill) -> None:
        self._order, self._starts = to.array(self._order), to.array(self._starts)

    def keys_of(self, i: int) -> np.ndarray:
        return self._order[self._starts[i]:self._starts[i + 1]]

    def key_to_product(self) -> np.ndarray:
        lookup = np.empty(len(self._order), dtype=np.int64)
        lookup[self._order] = np.repeat(np.arange(len(self)), np.diff(self._starts))
        return lookup

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        keys = self.keys_of(i)
        rows = [self._rows[int(k)] for k in keys]
        pick = lambda attr: next((getattr(r, attr) for r in rows if getattr(r, attr) is not None), None)  # noqa: E731
        meta = {}
        for r in rows:
            meta.update({k: v for k, v in r.meta.items() if k not in meta})
        thumb = self._thumbs[int(keys[0])] if self._thumbs is not None else None
        return Product(id=rows[0].id, name=pick("name") or rows[0].id, keys=tuple(int(k) for k in keys),
                       price=pick("price"), category=pick("category"), description=pick("description"),
                       thumbnail=f"{THUMBS_FOLDER}/{thumb}.jpg" if thumb is not None else None,
                       meta=meta or NO_META)

    def __iter__(self) -> Iterator[Product]:
        return (self[i] for i in range(len(self)))


class RekeyedProducts(Sequence):
    """`products` (whose keys are catalog rows) with each row's keys taken from a rows x blocks matrix,
    block by block: product p's keys are row_keys[r, b] for each block b, for each of its rows r."""

    def __init__(self, products: Sequence[Product], row_keys: np.ndarray):
        self._products, self._row_keys = products, row_keys

    def __len__(self) -> int:
        return len(self._products)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        p = self._products[i]
        rows = list(p.keys)
        return Product(id=p.id, name=p.name, keys=tuple(int(k) for k in self._row_keys[rows].T.ravel()),
                       price=p.price, category=p.category, description=p.description, thumbnail=p.thumbnail,
                       meta=p.meta)

    def __iter__(self) -> Iterator[Product]:
        return (self[i] for i in range(len(self)))


def catalog_table(catalog: Catalog, thumbs: ShaColumn | None = None) -> ProductTable:
    products = CatalogProducts(catalog, thumbs)
    return ProductTable(products=products, key_to_product=products.key_to_product())


def spilled_table(table: ProductTable, to: Spill) -> ProductTable:
    """`table` with its per-key and per-row arrays mapped from files in `to` (columns.Spill)."""
    if isinstance(table.products, CatalogProducts):
        table.products.spill(to)
    return ProductTable(products=table.products, key_to_product=to.array(table.key_to_product))


def rekeyed_table(table: ProductTable, row_keys: np.ndarray, key_space: int,
                  removed: np.ndarray | None = None) -> ProductTable:
    """`table` (keys = catalog rows) under a rows x blocks key matrix; every key of `key_space` but the
    `removed` ones must be some row's (ValueError otherwise)."""
    row_product = table.key_to_product[:len(row_keys)]
    lookup = np.full(key_space, -1, dtype=np.int64)
    flat = row_keys.T.ravel()
    if len(flat) and (flat.min() < 0 or flat.max() >= key_space or len(np.unique(flat)) != len(flat)):
        raise ValueError("a key layout gives a key out of range or twice")
    lookup[flat] = np.tile(row_product, row_keys.shape[1])
    orphans = lookup < 0
    if removed is not None and len(removed):
        if not orphans[removed].all():
            raise ValueError(f"removed index key {int(removed[~orphans[removed]][0])} still belongs to a product")
        orphans[removed] = False
    if orphans.any():
        raise ValueError(f"{int(orphans.sum())} index keys belong to no product")
    return ProductTable(products=RekeyedProducts(table.products, row_keys), key_to_product=lookup)
