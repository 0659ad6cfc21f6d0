"""Calibrating the "no match" decision at export, from data.

One flat cut-off on the top score cannot tell a product the catalog lacks
from a hard photo of one it has. The rules fitted here (and applied by
`Searcher.accepts`) use up to three figures per query: the top product's
score, against a floor that may differ per product; the margin between the
top two products; and, with `--negatives`, how far the top product's score
leads the nearest no-product scene (a reserved "no product" class: a query
closer to an empty counter than to any product is refused). Photos of
products that are *not* in the catalog are simulated by leaving each
calibration photo's own product out of the ranking (leave-one-product-out);
no-product scenes are scored against the other negatives (leave-one-out).

Every candidate rule (`RULES`) is fitted to the same budget: it rejects at
most `max_false_reject` of the calibration photos the model names correctly,
and, within it, as many simulated unknowns, wrongly named calibration photos
(`NoMatchSettings.refuse_wrong`) and negatives as it can. The rule
kept is the one that does best at 2-fold cross-validation (rejections minus
false rejects on the half it was not fitted on), so rules are compared at
the same false-reject rate.

Scores come from the bundle's own index and encoder, exactly as on the device.
Export stage only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_search.errors import ExportError
from edge_search.core.manifest import NoMatchRule
from edge_search.core.products import each_product
from edge_search.core.search import RANK_ALL, Searcher
from edge_search.evaluation.no_match import NoMatchOutcomes

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
    neg: np.ndarray  # the nearest no-product scene's score (-inf without negatives)

    def take(self, idx: np.ndarray) -> "CalibrationScores":
        return CalibrationScores(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def calibration_scores(searcher: Searcher, vectors: np.ndarray, truth: np.ndarray,
                       negatives: np.ndarray | None = None,
                       skip: Sequence[np.ndarray | None] | None = None) -> CalibrationScores:
    """Rank products for each query with the searcher itself (its index, its
    collapsing of a product's images), no cut-off: the top three products give
    both the full-catalog and the own-product-left-out figures. `skip[i]`: index
    keys query i is ranked without (a store photo that is itself in the catalog
    is scored as a shopper's photo of it would be, against the product's other images)."""
    skip = skip if skip is not None else [None] * len(vectors)
    hits = [None if s is not None and len(s) else
            [(h.id, h.score) for h in searcher.search_vector(v, k=3, min_score=RANK_ALL)[0]]
            for v, s in zip(vectors, skip)]
    # the positions of the products named, not of every product (a dict of a million ids on the driver)
    named = {pid for row in hits if row is not None for pid, _ in row}
    position = {p.id: i for i, p in enumerate(each_product(searcher.products.products)) if p.id in named}
    fetch = 3 * searcher.products.max_images if any(row is None for row in hits) else 0
    hits = [[(position[pid], score) for pid, score in row] if row is not None else
            _ranked_without(searcher, v, s, fetch) for row, v, s in zip(hits, vectors, skip)]
    out = {f: np.full(len(vectors), -1 if f.endswith("top") else -np.inf) for f in
           ("top", "s1", "s2", "alt_top", "alt_s1", "alt_s2")}
    for i, ranked in enumerate(hits):
        others = [r for r in ranked if r[0] != truth[i]]
        for prefix, rows in (("", ranked), ("alt_", others)):
            if rows:
                out[prefix + "top"][i], out[prefix + "s1"][i] = rows[0]
            if len(rows) > 1:
                out[prefix + "s2"][i] = rows[1][1]
    return CalibrationScores(truth=np.asarray(truth), top=out["top"].astype(np.int64), s1=out["s1"], s2=out["s2"],
                             alt_top=out["alt_top"].astype(np.int64), alt_s1=out["alt_s1"], alt_s2=out["alt_s2"],
                             neg=_nearest(vectors, negatives))


def _ranked_without(searcher: Searcher, vector: np.ndarray, skip: np.ndarray, fetch: int, want: int = 3
                    ) -> list[tuple[int, float]]:
    """The best `want` products (position, score) for `vector`, the index keys in `skip` not counted:
    `fetch` (want x a product's most images) more keys than those cover `want` products if the index has them."""
    keys, scores = searcher.index.search(vector[None, :], fetch + len(skip))
    ignored = set(int(k) for k in skip)
    ranked: list[tuple[int, float]] = []
    for key, score in zip(keys[0], scores[0]):
        if key < 0:
            break
        pos = int(searcher.products.key_to_product[key])
        if int(key) in ignored or pos < 0 or any(pos == p for p, _ in ranked):
            continue
        ranked.append((pos, float(score)))
        if len(ranked) == want:
            break
    return ranked


MIN_NEGATIVES = 4  # fewer no-product scenes than this: the negatives rules are not tried

# name -> (floor: "none" | "flat" | "product", margin over the runner-up, negatives as a reserved class)
RULES = {
    "flat": ("flat", False, False),
    "floor+margin": ("flat", True, False),
    "product-floors+margin": ("product", True, False),
    "negatives": ("none", False, True),
    "floor+margin+negatives": ("flat", True, True),
    "product-floors+margin+negatives": ("product", True, True),
}


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _nearest(vectors: np.ndarray, negatives: np.ndarray | None, loo: bool = False) -> np.ndarray:
    """Each query's best cosine against the negatives; `loo`: the queries are
    the negatives themselves, each scored against the others."""
    if negatives is None or not len(negatives) or (loo and len(negatives) < 2):
        return np.full(len(vectors), -np.inf)
    sims = _unit(vectors) @ _unit(negatives).T
    if loo:
        np.fill_diagonal(sims, -np.inf)
    return sims.max(axis=1).astype(np.float64)


@dataclass(frozen=True)
class NegativeScores:
    """No-product scenes as queries: their top two products and their nearest other negative."""

    top: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    neg: np.ndarray

    def take(self, idx: np.ndarray) -> "NegativeScores":
        return NegativeScores(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def negative_scores(searcher: Searcher, negatives: np.ndarray) -> NegativeScores:
    position = {p.id: i for i, p in enumerate(searcher.products.products)}
    top, s1, s2 = np.full(len(negatives), -1), np.full(len(negatives), -np.inf), np.full(len(negatives), -np.inf)
    for i, v in enumerate(negatives):
        ranked = [(position[h.id], h.score) for h in searcher.search_vector(v, k=2, min_score=RANK_ALL)[0]]
        if ranked:
            top[i], s1[i] = ranked[0]
        if len(ranked) > 1:
            s2[i] = ranked[1][1]
    return NegativeScores(top=top.astype(np.int64), s1=s1, s2=s2, neg=_nearest(negatives, negatives, loo=True))


@dataclass(frozen=True)
class Fitted:
    floors: np.ndarray  # per product position
    margin: float
    negative_margin: float  # -inf: negatives not used
    flat: float  # the floor of a product without its own


def _rejects(top, s1, s2, neg, fit: Fitted) -> np.ndarray:
    """Mirror of Searcher.accepts, vectorized (True: answered "no match")."""
    found = top >= 0
    floor = np.where(found, fit.floors[np.maximum(top, 0)], np.inf)
    with np.errstate(invalid="ignore"):
        closer_to_nothing = (s1 - neg) < fit.negative_margin
    return ~found | (s1 < floor) | (s1 - s2 < fit.margin) | closer_to_nothing


def _figures(sc: CalibrationScores, fit: Fitted, ng: NegativeScores | None) -> dict:
    outcomes = NoMatchOutcomes(
        right=sc.top == sc.truth, refused=_rejects(sc.top, sc.s1, sc.s2, sc.neg, fit),
        unknown_refused=_rejects(sc.alt_top, sc.alt_s1, sc.alt_s2, sc.neg, fit),
        negatives_refused=_rejects(ng.top, ng.s1, ng.s2, ng.neg, fit) if ng is not None else ())
    f = outcomes.figures()
    # wrong_refused: calibration photos the model names as another product, refused (refuse_wrong fits on it)
    out = {"queries": int(len(sc.truth)), **{k: f[k] for k in ("top1", "reject_recall", "false_reject_of_correct",
                                                                "false_reject_all", "precision_of_answers",
                                                                "wrong_refused")}}
    if ng is not None and len(ng.top):
        out["negative_reject"], out["negatives"] = f["negative_reject"], int(len(ng.top))
    return out


def _objective(f: dict, settings: NoMatchSettings) -> float:
    """What a rule is fitted and chosen for: the share of queries it should refuse that it does, weighted
    equally: simulated unknown products, the photos it names wrongly (`refuse_wrong`), and, when given,
    no-product scenes."""
    terms = [f["reject_recall"]]
    if settings.refuse_wrong and f.get("wrong_refused") is not None:
        terms.append(f["wrong_refused"])
    if "negative_reject" in f:
        terms.append(f["negative_reject"])
    return float(np.mean(terms))


def _floor_for_budget(slack: np.ndarray, budget: int) -> float:
    """The largest offset that rejects at most `budget` of these queries, where
    a query is rejected when its slack (score minus floor) is below the offset."""
    ordered = np.sort(slack)
    return float(ordered[budget]) if budget < len(ordered) else float(ordered[-1]) + 1e-6


def _fit(sc: CalibrationScores, ng: NegativeScores | None, n_products: int, settings: NoMatchSettings,
         rule: str) -> Fitted:
    """The rule's thresholds: the margin and negative cut-offs are searched over
    quantiles of the correct photos' figures; what is left of the budget goes
    to the score floor (or, without one, to the negatives cut-off)."""
    floor_kind, use_margin, use_neg = RULES[rule]
    correct = np.flatnonzero(sc.top == sc.truth)
    if not len(correct):  # a cross-validation half can lack any: answer everything
        return Fitted(np.full(n_products, -1.0), 0.0, -np.inf, -1.0)
    s1, margins, negdiff = sc.s1[correct], sc.s1[correct] - sc.s2[correct], sc.s1[correct] - sc.neg[correct]
    allowed = int(np.floor(settings.max_false_reject * len(correct)))
    # A product's own floor: the allowed quantile of its correct scores, shrunk
    # towards the pooled one by `shrinkage` pseudo-photos; the pooled offset
    # added below then spends the false-reject budget.
    base = np.zeros(n_products)
    if floor_kind == "product":
        pooled = float(np.quantile(s1, settings.max_false_reject))
        for p in range(n_products):
            own = s1[sc.truth[correct] == p]
            q = float(np.quantile(own, settings.max_false_reject)) if len(own) else pooled
            base[p] = (len(own) * q + settings.shrinkage * pooled) / (len(own) + settings.shrinkage) - pooled
    slack_all = s1 - base[sc.truth[correct]]
    steps = np.linspace(0, settings.max_false_reject, 6)
    m_cands = np.unique(np.concatenate([[0.0], np.maximum(np.quantile(margins, steps), 0.0)])) if use_margin \
        else np.array([0.0])
    # the negatives cut-off is searched only when a floor spends the rest of the budget
    d_cands = np.quantile(negdiff, steps) if use_neg and floor_kind != "none" else np.array([-np.inf])
    best = None
    for m in m_cands:
        for d in d_cands:
            keep = (margins >= m) & (negdiff >= d)
            budget = allowed - int((~keep).sum())
            if budget < 0:
                continue
            if floor_kind != "none":
                offset = _floor_for_budget(slack_all[keep], budget)
                fit = Fitted(base + offset, float(m), float(d), offset)
            elif use_neg:
                fit = Fitted(np.full(n_products, -1.0), float(m),
                             _floor_for_budget(negdiff[keep], budget), -1.0)
            else:
                fit = Fitted(np.full(n_products, -1.0), float(m), -np.inf, -1.0)
            score = _objective(_figures(sc, fit, ng), settings)
            if best is None or score > best[0] + 1e-12:
                best = (score, fit)
    return best[1]


def _down(x: float) -> float:
    """Five decimals in the manifest, rounded down so the written rule never
    rejects a query the fitted one accepts."""
    return float(np.floor(float(x) * 1e5) / 1e5)


def candidate_rules(settings: NoMatchSettings, negatives: bool) -> list[str]:
    if settings.rule is not None:
        return [settings.rule]
    return [r for r, (_, _, neg) in RULES.items() if negatives or not neg]


def calibrate_no_match(searcher: Searcher, vectors: np.ndarray, truth: np.ndarray, settings: NoMatchSettings,
                       *, source: str, seed: int = 0, negatives: np.ndarray | None = None,
                       negatives_file: str = "negatives.npy", skip: Sequence[np.ndarray | None] | None = None
                       ) -> tuple[NoMatchRule | None, float, dict]:
    """Fit the rule on calibration queries (embeddings + their product positions) and,
    optionally, embeddings of no-product scenes.
    -> (rule or None when the data cannot support one, the flat min_score, report).
    A rule that uses the negatives names `negatives_file`: the caller ships them there.
    `skip`: per query, index keys it is ranked without (calibration_scores)."""
    products = searcher.products
    use_neg = negatives is not None and len(negatives) >= MIN_NEGATIVES
    if settings.rule is not None and RULES[settings.rule][2] and not use_neg:
        raise ExportError(f"no-match rule {settings.rule!r} needs {MIN_NEGATIVES}+ --negatives photos")
    sc = calibration_scores(searcher, vectors, np.asarray(truth), negatives if use_neg else None, skip)
    ng = negative_scores(searcher, negatives) if use_neg else None
    n_correct = int((sc.top == sc.truth).sum())
    if len(products) < 3 or n_correct < MIN_CORRECT:
        return None, 0.0, {"calibrated": False, "source": source, "queries": int(len(truth)),
                           "reason": f"needs 3+ products and {MIN_CORRECT}+ correctly named calibration photos "
                                     f"(got {len(products)} products, {n_correct} correct)"}
    names = candidate_rules(settings, use_neg)
    rules: dict[str, dict] = {}
    rng = np.random.default_rng([seed, 77])
    fold = rng.permutation(len(truth)) % 2
    nfold = rng.permutation(len(ng.top)) % 2 if ng is not None else None
    for name in names:
        # 2-fold cross-validation: fit on one half, measure on the other, same budget for every rule
        cv = []
        for k in (0, 1):
            fit = _fit(sc.take(np.flatnonzero(fold != k)), ng.take(np.flatnonzero(nfold != k)) if ng else None,
                       len(products), settings, name)
            f = _figures(sc.take(np.flatnonzero(fold == k)), fit, ng.take(np.flatnonzero(nfold == k)) if ng else None)
            # a half with no correctly named photo has none to reject wrongly
            cv.append(_objective(f, settings) - (f["false_reject_of_correct"] or 0.0))
        fit = _fit(sc, ng, len(products), settings, name)
        rules[name] = {"cross_validation": round(float(np.mean(cv)), 4), **_figures(sc, fit, ng)}
    chosen = max(names, key=lambda n: (rules[n]["cross_validation"], -names.index(n)))
    floor_kind, _, neg_used = RULES[chosen]
    fit = _fit(sc, ng, len(products), settings, chosen)
    ids = [p.id for p in products.products]
    seen = sorted(set(sc.truth[sc.top == sc.truth].tolist())) if floor_kind == "product" else []
    rule = NoMatchRule(min_margin=_down(fit.margin), product_min_score={ids[p]: _down(fit.floors[p]) for p in seen},
                       max_false_reject=settings.max_false_reject, source=source,
                       negatives=negatives_file if neg_used else None,
                       negative_margin=_down(fit.negative_margin) if neg_used else None, rule=chosen)
    flat = _down(fit.flat)
    written = Fitted(np.array([rule.product_min_score.get(i, flat) for i in ids]), rule.min_margin,
                     rule.negative_margin if neg_used else -np.inf, flat)
    report = {"calibrated": True, "source": source, "rule": chosen, "per_product": floor_kind == "product",
              "negatives_used": bool(neg_used), "negatives_given": 0 if negatives is None else int(len(negatives)),
              "min_score": flat, "min_margin": rule.min_margin, "negative_margin": rule.negative_margin,
              **_figures(sc, written, ng), "rules": rules,
              "chosen_by": "2-fold cross-validation of (rejected unknowns" + (", wrong answers" if settings.refuse_wrong
                                                                            else "") +
                           " and negatives) - false rejects, every rule fitted to the same false-reject budget"}
    return rule, flat, report
