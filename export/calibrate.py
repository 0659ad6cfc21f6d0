"""Calibrating the "no match" decision at export, from data.

One flat cut-off on the top score cannot tell a product the catalog lacks
from a hard photo of one it has. The rule fitted here (and applied by
`Searcher.accepts`) uses two figures per query: the top product's score,
against a floor that may differ per product, and the margin between the top
two products. Photos of products that are *not* in the catalog are simulated
by leaving each calibration photo's own product out of the ranking
(leave-one-product-out), so the fit needs no extra data.

Fit: the rule that rejects the most simulated unknowns while rejecting at
most `max_false_reject` of the calibration photos the model names correctly.
Per-product floors (a product's own score quantile, shrunk towards the global
floor) are kept only when they do better at 2-fold cross-validation.

Scores come from the bundle's own index and encoder, exactly as on the device.
Export stage only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_search.manifest import NoMatchRule
from edge_search.search import Searcher

from .config import NoMatchSettings

MIN_CORRECT = 10  # fewer correctly named calibration photos than this: no calibration


@dataclass(frozen=True)
class CalibrationScores:
    """Per query: its product, and the top two products' positions and scores,
    with the full catalog (`top`, `s1`, `s2`) and with its own product left out
    (`alt_*`: what a product missing from the catalog would score)."""

    truth: np.ndarray
    top: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    alt_top: np.ndarray
    alt_s1: np.ndarray
    alt_s2: np.ndarray

    def take(self, idx: np.ndarray) -> "CalibrationScores":
        return CalibrationScores(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def calibration_scores(searcher: Searcher, vectors: np.ndarray, truth: np.ndarray) -> CalibrationScores:
    """Rank products for each query with the searcher itself (its index, its
    collapsing of a product's images), no cut-off: the top three products give
    both the full-catalog and the own-product-left-out figures."""
    position = {p.id: i for i, p in enumerate(searcher.products.products)}
    out = {f: np.full(len(vectors), -1 if f.endswith("top") else -np.inf) for f in
           ("top", "s1", "s2", "alt_top", "alt_s1", "alt_s2")}
    for i, v in enumerate(vectors):
        ranked = [(position[h.id], h.score) for h in searcher.search_vector(v, k=3, min_score=-np.inf)[0]]
        others = [r for r in ranked if r[0] != truth[i]]
        for prefix, rows in (("", ranked), ("alt_", others)):
            if rows:
                out[prefix + "top"][i], out[prefix + "s1"][i] = rows[0]
            if len(rows) > 1:
                out[prefix + "s2"][i] = rows[1][1]
    return CalibrationScores(truth=np.asarray(truth), top=out["top"].astype(np.int64), s1=out["s1"], s2=out["s2"],
                             alt_top=out["alt_top"].astype(np.int64), alt_s1=out["alt_s1"], alt_s2=out["alt_s2"])


def _rejects(top: np.ndarray, s1: np.ndarray, s2: np.ndarray, floors: np.ndarray, margin: float) -> np.ndarray:
    """Mirror of Searcher.accepts, vectorized (True: answered "no match")."""
    found = top >= 0
    floor = np.where(found, floors[np.maximum(top, 0)], np.inf)
    return ~found | (s1 < floor) | (s1 - s2 < margin)


def _figures(sc: CalibrationScores, floors: np.ndarray, margin: float) -> dict:
    correct = sc.top == sc.truth
    known_rej = _rejects(sc.top, sc.s1, sc.s2, floors, margin)
    unknown_rej = _rejects(sc.alt_top, sc.alt_s1, sc.alt_s2, floors, margin)
    accepted = ~known_rej
    return {"queries": int(len(sc.truth)), "top1": round(float(correct.mean()), 4),
            "reject_recall": round(float(unknown_rej.mean()), 4),
            "false_reject_of_correct": round(float(known_rej[correct].mean()) if correct.any() else 0.0, 4),
            "false_reject_all": round(float(known_rej.mean()), 4),
            "precision_of_answers": round(float(correct[accepted].mean()) if accepted.any() else 1.0, 4)}


def _floor_for_budget(slack: np.ndarray, budget: int) -> float:
    """The largest offset that rejects at most `budget` of these queries, where
    a query is rejected when its slack (score minus floor) is below the offset."""
    ordered = np.sort(slack)
    return float(ordered[budget]) if budget < len(ordered) else float(ordered[-1]) + 1e-6


def _fit(sc: CalibrationScores, n_products: int, settings: NoMatchSettings,
         per_product: bool) -> tuple[np.ndarray, float, float]:
    """-> (floor per product position, min margin, the floor of a product without calibration photos)."""
    correct = np.flatnonzero(sc.top == sc.truth)
    if not len(correct):  # a cross-validation half can lack any: answer everything
        return np.full(n_products, -1.0), 0.0, -1.0
    s1, margins = sc.s1[correct], sc.s1[correct] - sc.s2[correct]
    allowed = int(np.floor(settings.max_false_reject * len(correct)))
    # A product's own floor: the allowed quantile of its correct scores, shrunk
    # towards the pooled one by `shrinkage` pseudo-photos; the pooled offset
    # added below then spends the false-reject budget.
    base = np.zeros(n_products)
    if per_product:
        pooled = float(np.quantile(s1, settings.max_false_reject))
        for p in range(n_products):
            own = s1[sc.truth[correct] == p]
            q = float(np.quantile(own, settings.max_false_reject)) if len(own) else pooled
            base[p] = (len(own) * q + settings.shrinkage * pooled) / (len(own) + settings.shrinkage) - pooled
    slack_all = s1 - base[sc.truth[correct]]
    best = None
    candidates = np.quantile(margins, np.linspace(0, settings.max_false_reject, 6)) if settings.use_margin else []
    for m in np.unique(np.concatenate([[0.0], np.maximum(candidates, 0.0)])):
        keep = margins >= m
        budget = allowed - int((~keep).sum())
        if budget < 0:
            continue
        offset = _floor_for_budget(slack_all[keep], budget)
        recall = float(_rejects(sc.alt_top, sc.alt_s1, sc.alt_s2, base + offset, m).mean())
        if best is None or recall > best[0] + 1e-12:
            best = (recall, base + offset, float(m), offset)
    return best[1], best[2], best[3]


def _down(x: float) -> float:
    """Five decimals in the manifest, rounded down so the written rule never
    rejects a query the fitted one accepts."""
    return float(np.floor(float(x) * 1e5) / 1e5)


def calibrate_no_match(searcher: Searcher, vectors: np.ndarray, truth: np.ndarray, settings: NoMatchSettings,
                       *, source: str, seed: int = 0) -> tuple[NoMatchRule | None, float, dict]:
    """Fit the rule on calibration queries (embeddings + their product positions).
    -> (rule or None when the data cannot support one, the flat min_score, report)."""
    products = searcher.products
    sc = calibration_scores(searcher, vectors, np.asarray(truth))
    n_correct = int((sc.top == sc.truth).sum())
    if len(products) < 3 or n_correct < MIN_CORRECT:
        return None, 0.0, {"calibrated": False, "source": source, "queries": int(len(truth)),
                           "reason": f"needs 3+ products and {MIN_CORRECT}+ correctly named calibration photos "
                                     f"(got {len(products)} products, {n_correct} correct)"}
    cv = {}
    choice = settings.per_product
    if choice is None:
        # 2-fold cross-validation: fit on one half, measure on the other
        fold = np.random.default_rng([seed, 77]).permutation(len(truth)) % 2
        for label, flag in (("global", False), ("per_product", True)):
            score = []
            for k in (0, 1):
                floors, m, _ = _fit(sc.take(np.flatnonzero(fold != k)), len(products), settings, flag)
                f = _figures(sc.take(np.flatnonzero(fold == k)), floors, m)
                score.append(f["reject_recall"] - f["false_reject_of_correct"])
            cv[label] = round(float(np.mean(score)), 4)
        choice = cv["per_product"] > cv["global"]
    floors, margin, flat = _fit(sc, len(products), settings, choice)
    ids = [p.id for p in products.products]
    seen = sorted(set(sc.truth[sc.top == sc.truth].tolist())) if choice else []
    rule = NoMatchRule(min_margin=_down(margin), product_min_score={ids[p]: _down(floors[p]) for p in seen},
                       max_false_reject=settings.max_false_reject, source=source)
    flat = _down(flat)
    applied = np.array([rule.product_min_score.get(i, flat) for i in ids])
    report = {"calibrated": True, "source": source, "per_product": bool(choice), "cross_validation": cv or None,
              "min_score": flat, "min_margin": rule.min_margin, **_figures(sc, applied, rule.min_margin)}
    if choice:
        g_floors, g_margin, _ = _fit(sc, len(products), settings, False)
        report["flat_rule_same_budget"] = _figures(sc, g_floors, g_margin)
    return rule, flat, report
