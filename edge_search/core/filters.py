"""Filters on catalog metadata: `--filter category=Fruit`, `--filter price<2.5`.

A filter is a conjunction of conditions `FIELD OP VALUE`, OP one of
= != < <= > >=. FIELD is a product field (id, name, category, description,
price) or a column kept in `meta`. `=` and `!=` compare numbers as numbers
and text case-insensitively; < <= > >= need a number on both sides, and a
product without one does not match. The searcher applies the filter inside
the search (over-fetching), so k results come back when enough match.
Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from edge_search.errors import FilterError
from edge_search.core.products import Product, ProductTable

FIELDS = ("id", "name", "category", "description", "price")
OPS = ("<=", ">=", "!=", "=", "<", ">")  # two-character operators first
_EXPR = re.compile(r"^\s*([^<>=!\s][^<>=!]*?)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*$")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def field_value(product: Product, name: str) -> Any:
    if name in FIELDS:
        return getattr(product, name)
    return product.meta.get(name)


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str

    def matches(self, product: Product) -> bool:
        have = field_value(product, self.field)
        if self.op in ("=", "!="):
            a, b = _number(have), _number(self.value)
            if have is None:
                same = False
            elif a is not None and b is not None:
                same = a == b
            else:
                same = str(have).strip().casefold() == self.value.casefold()
            return same if self.op == "=" else not same
        a, b = _number(have), float(self.value)
        if a is None:
            return False
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[self.op]

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value}"


def parse_condition(expr: str) -> Condition:
    m = _EXPR.match(expr)
    if not m or not m.group(3):
        raise FilterError(f"--filter {expr!r}: expected FIELD OP VALUE with OP one of {' '.join(OPS)}, "
                          "e.g. category=Fruit or price<2.5")
    name, op, value = m.group(1).strip(), m.group(2), m.group(3)
    if op not in ("=", "!=") and _number(value) is None:
        raise FilterError(f"--filter {expr!r}: '{op}' needs a number, got {value!r}")
    return Condition(field=name, op=op, value=value)


@dataclass(frozen=True)
class Filter:
    conditions: tuple[Condition, ...]

    @classmethod
    def parse(cls, exprs: list[str] | tuple[str, ...], products: ProductTable | list[Product] | None = None) -> "Filter":
        """Parse several expressions (all must hold); with `products`, unknown fields are refused."""
        flt = cls(tuple(parse_condition(e) for e in exprs))
        return flt if products is None else flt.check_fields(products)

    def check_fields(self, products: ProductTable | list[Product]) -> "Filter":
        """This filter, once every field it names is one the products have; else a FilterError."""
        known = set(FIELDS) | {k for p in getattr(products, "products", products) for k in p.meta}
        for c in self.conditions:
            if c.field not in known:
                extra = sorted(known - set(FIELDS))
                raise FilterError(f"--filter '{c}': unknown field '{c.field}' (fields: {', '.join(FIELDS)}"
                                  + (f"; catalog columns: {', '.join(extra[:10])}" if extra else "") + ")")
        return self

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def allows(self, product: Product) -> bool:
        return all(c.matches(product) for c in self.conditions)

    def __str__(self) -> str:
        return " and ".join(map(str, self.conditions))


def split_query(line: str) -> tuple[str, list[str]]:
    """A typed line -> (words, filter expressions): `red apple price<1 category=Fruit`
    is the words "red apple" and two conditions (a token with an operator and no spaces)."""
    words, exprs = [], []
    for token in line.split():
        (exprs if _EXPR.match(token) else words).append(token)
    return " ".join(words), exprs
