"""The settings of one query: their defaults and their one check.

Every caller (search, eval, the kiosk and its screen, export, the CLI) takes
k's default and the "rank everything" cut-off from here, and `QueryParams`
validates k, min_score, alpha and the filter once for all of them. Kept
apart from `search` so the CLI can show the defaults in its help without
loading the search machinery. Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_search.core.filters import Filter
from edge_search.errors import QueryError

DEFAULT_K = 5  # products a query returns unless told otherwise: search, run, the kiosk screen
# As `min_score`: a cut-off nothing falls below, so every product is ranked and every
# query answered (evaluation and calibration rank everything, then apply the rule themselves).
RANK_ALL = float("-inf")


@dataclass(frozen=True)
class QueryParams:
    """The settings of one query, validated here once for every caller
    (search, eval, the kiosk, export); messages name the setting, never a
    command-line flag (the CLI may put its flag in front, see `QueryError.setting`).

    `k` is a whole number of at least 1 (and at most `max_k` when a screen
    limits it); `min_score` is None (the bundle's rule), a finite number
    (scores are cosines: above 1 nothing is answered) or RANK_ALL. NaN and
    +inf are refused: NaN fails every comparison, so it would turn "no match"
    off or on for every query without a word. `alpha` (photo + words) is None
    (the bundle's) or in [0, 1]; `filter` is a `Filter` or None."""

    k: int = DEFAULT_K
    min_score: float | None = None
    alpha: float | None = None
    filter: Filter | None = None
    max_k: int | None = None

    def __post_init__(self) -> None:
        k = self.k
        whole = not isinstance(k, bool) and isinstance(k, (int, np.integer))
        if not whole or k < 1:
            raise QueryError("k", f"must be a whole number of at least 1, got {k!r}")
        if self.max_k is not None and k > self.max_k:
            raise QueryError("k", f"must be at most {self.max_k} (the most shown at once), got {k!r}")
        if self.min_score is not None:
            v = _as_float(self.min_score)
            if math.isnan(v) or v == math.inf:
                raise QueryError("min_score", f"must be a finite number (or -inf: answer every query), "
                                              f"got {self.min_score!r}")
        if self.alpha is not None:
            a = _as_float(self.alpha)
            if not 0 <= a <= 1:  # NaN fails this too
                raise QueryError("alpha", f"must be between 0 and 1, got {self.alpha!r}")
        if self.filter is not None and not isinstance(self.filter, Filter):
            raise QueryError("filter", f"must be a Filter, got {type(self.filter).__name__}")


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
