"""The "no match" figures, defined once for every caller.

The export's calibration (export/calibrate.py, on simulated unknowns), `edge-search
eval` (on labelled photos) and the grocery benchmark (with bootstrap intervals)
all measure a rule the same way: from what it did to each query. Each figure is
a share: of some queries, those where something holds. A share with no query to
take it over is None (undefined), never 0 or 1, so an empty set cannot pass for
a perfect or a hopeless rule. Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _flags(x) -> np.ndarray:
    return np.asarray(x, dtype=bool).reshape(-1)


@dataclass(frozen=True)
class Share:
    """Of the queries where `within`, the share where `hits` (None when no query is within)."""

    hits: np.ndarray
    within: np.ndarray

    @property
    def value(self) -> float | None:
        return float(self.hits[self.within].mean()) if self.within.any() else None


@dataclass(frozen=True)
class NoMatchOutcomes:
    """What a rule did, query by query.

    `right`: in-catalog photos whose own product ranked first (ranked with no
    cut-off); `refused`: the same photos, answered "no match" by the rule;
    `unknown_refused`: photos of products the catalog lacks (real, or simulated
    by leaving their product out), refused; `negatives_refused`: scenes with no
    product, refused."""

    right: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    refused: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    unknown_refused: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    negatives_refused: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        for name in ("right", "refused", "unknown_refused", "negatives_refused"):
            object.__setattr__(self, name, _flags(getattr(self, name)))
        if len(self.right) != len(self.refused):
            raise ValueError(f"right and refused describe the same photos: {len(self.right)} vs {len(self.refused)}")

    def shares(self) -> dict[str, Share]:
        """Every figure as a share, by the name the manifest and reports use."""
        known, unknown, scenes = (np.ones(len(a), bool) for a in
                                  (self.right, self.unknown_refused, self.negatives_refused))
        # what a shopper meets, over every photo (in-catalog and of products the catalog lacks): a name given
        # to a photo of a product the catalog lacks is always a wrong one
        named = np.concatenate([~self.refused, ~self.unknown_refused])
        right_named = np.concatenate([self.right & ~self.refused, np.zeros(len(self.unknown_refused), bool)])
        return {
            "top1": Share(self.right, known),  # raw recall@1, before the rule
            "answered_right": Share(self.right & ~self.refused, known),
            "false_reject_all": Share(self.refused, known),  # in-catalog photos answered "no match"
            "false_reject_of_correct": Share(self.refused, self.right),
            "precision_of_answers": Share(self.right, ~self.refused),
            "wrong_refused": Share(self.refused, ~self.right),  # in-catalog photos ranked wrong, refused
            "named_wrong": Share(named & ~right_named, np.ones(len(named), bool)),
            "right_when_named": Share(right_named, named),
            "reject_recall": Share(self.unknown_refused, unknown),
            "negative_reject": Share(self.negatives_refused, scenes),
        }

    def figures(self, digits: int = 4) -> dict[str, float | None]:
        return {name: None if s.value is None else round(s.value, digits) for name, s in self.shares().items()}
