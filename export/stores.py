"""Per-store bundles: `--stores STORES.csv` (columns `store,id`, optional `price`, `aisle`, `in_stock`).

Each store gets a bundle holding only its products, with its own prices and
aisle locations, built on the chain's models from the chain's embeddings
(computed once: the embedding cache serves every store). Bad rows are
reported with their line numbers, all at once. Must not import torch.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge_search.core.catalog import Catalog
from edge_search.display import printable
from edge_search.errors import CatalogError
from edge_search.files import MAX_TABLE_BYTES, open_regular_text

STORE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a folder name on every file system, never hidden
TRUE, FALSE = {"1", "true", "yes", "y"}, {"0", "false", "no", "n"}


@dataclass(frozen=True)
class StoreItem:
    line: int
    id: str
    price: float | None = None
    aisle: str | None = None
    in_stock: bool | None = None


def read_stores(path: str | Path, catalog: Catalog, *, skip_bad: bool = False) -> tuple[dict[str, list[StoreItem]],
                                                                                         tuple[str, ...]]:
    """Store id -> its items in file order; and the skipped rows (with skip_bad), each naming its line."""
    path = Path(path)
    ids = set(catalog.rows.ids)
    stores: dict[str, list[StoreItem]] = {}
    seen: dict[tuple[str, str], int] = {}
    problems = []
    with open_regular_text(path, limit=MAX_TABLE_BYTES, what="stores file", error=CatalogError, newline="",
                           encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or []) if h]
        missing = [c for c in ("store", "id") if c not in header]
        if missing:
            raise CatalogError(f"{path}: header lacks required column(s) {', '.join(missing)} (store,id[,price,aisle,"
                               "in_stock])")
        for rec in reader:
            rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items() if k is not None}
            line, bad = reader.line_num, []
            store, pid = rec.get("store", ""), rec.get("id", "")
            if not STORE_ID.fullmatch(store):
                bad.append(f"store {printable(store)!r} is not a safe folder name (letters, digits, . _ -; "
                           "not starting with . _ or -)")
            if pid not in ids:
                bad.append(f"id {printable(pid)!r} is not in the catalog")
            price = None
            if rec.get("price"):
                try:
                    price = float(rec["price"])
                    if not math.isfinite(price) or price < 0:
                        raise ValueError
                except ValueError:
                    bad.append(f"price {printable(rec['price'])!r} is not a number of 0 or more")
            stock = rec.get("in_stock", "").lower()
            if stock and stock not in TRUE | FALSE:
                bad.append(f"in_stock {printable(rec['in_stock'])!r} is not yes/no (1/0, true/false)")
            if not bad and (store, pid) in seen:
                bad.append(f"store {store!r} lists id {pid!r} again (first on line {seen[(store, pid)]})")
            if bad:
                problems.append(f"{path} line {line}: " + "; ".join(bad))
                continue
            seen[(store, pid)] = line
            stores.setdefault(store, []).append(StoreItem(line=line, id=pid, price=price,
                                                          aisle=rec.get("aisle") or None,
                                                          in_stock=None if not stock else stock in TRUE))
    if problems and not skip_bad:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise CatalogError(f"{path}: {len(problems)} bad row(s):\n  " + "\n  ".join(shown))
    if not stores:
        raise CatalogError(f"{path}: no store rows")
    return stores, tuple(problems)


def store_catalog(catalog: Catalog, items: list[StoreItem]) -> Catalog:
    """The chain's catalog cut to one store's products, in catalog order, with the store's price,
    aisle and stock (kept in each product's metadata, which search, JSON and the kiosk show)."""
    by_id = {item.id: item for item in items}
    rows = catalog.rows
    # the store's products by code (rows share their product's code): one id lookup per product, not per row
    item_of_code = [by_id.get(rows.ids[c]) for c in range(len(rows.ids))]
    keep = np.flatnonzero([item_of_code[c] is not None for c in rows.product])
    cut = rows.take(keep)
    price = cut.price.copy()
    meta = {}
    for j in range(len(cut)):
        item = item_of_code[int(cut.product[j])]
        if item.price is not None:
            price[j] = item.price
        extra = dict(cut.meta.get(j, {}))
        if item.aisle is not None:
            extra["aisle"] = item.aisle
        if item.in_stock is not None:
            extra["in_stock"] = item.in_stock
        if extra:
            meta[j] = extra
    return replace(catalog, rows=cut.changed(price=price, meta=meta))
