"""95 % bootstrap intervals for the benchmark's figures.

Every figure is a share of photos (or a ratio of two such shares on the same
photos, or of two timings). Photos are resampled with replacement, `rounds`
times, from one seeded generator; an interval is the 2.5th and 97.5th
percentiles of the figure over the resamples. Paired figures (student vs
teacher on the same photos) share the resamples, so the ratio's interval
reflects how the two models' hits co-vary. Runtime dependencies only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROUNDS = 2000
SEED = 12  # stated in every report: intervals are reproducible


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int

    def to_json(self, digits: int = 4) -> dict:
        return {"value": round(self.value, digits), "ci95": [round(self.low, digits), round(self.high, digits)],
                "n": self.n}


def resamples(n: int, seed: int = SEED, rounds: int = ROUNDS, stream: int = 0) -> np.ndarray:
    """rounds x n indices into a population of n (one stream per population)."""
    return np.random.default_rng([seed, stream]).integers(0, max(n, 1), size=(rounds, n))


def share(hits: np.ndarray, idx: np.ndarray | None = None, *, within: np.ndarray | None = None) -> Estimate:
    """The share of True in `hits` (optionally among the rows where `within` is True)."""
    hits = np.asarray(hits, bool)
    within = np.ones(len(hits), bool) if within is None else np.asarray(within, bool)
    idx = resamples(len(hits)) if idx is None else idx
    value = float(hits[within].mean()) if within.any() else float("nan")
    num = (hits & within)[idx].sum(1)
    den = within[idx].sum(1)
    boot = num[den > 0] / den[den > 0]
    if not len(boot):
        return Estimate(value, float("nan"), float("nan"), int(within.sum()))
    low, high = np.percentile(boot, [2.5, 97.5])
    return Estimate(value, float(low), float(high), int(within.sum()))


def clustered_share(hits: np.ndarray, within: np.ndarray, clusters: np.ndarray, stream: int = 0) -> Estimate:
    """The share of True in `hits` among `within`, where rows of one cluster (the same photo measured in
    several draws) are resampled together: the clusters are drawn with replacement, not the rows."""
    hits, within = np.asarray(hits, bool), np.asarray(within, bool)
    _, c = np.unique(np.asarray(clusters), return_inverse=True)
    num = np.bincount(c, weights=hits & within)
    den = np.bincount(c, weights=within)
    value = float(num.sum() / den.sum()) if den.sum() else float("nan")
    idx = resamples(len(num), stream=stream)
    n, d = num[idx].sum(1), den[idx].sum(1)
    boot = n[d > 0] / d[d > 0]
    if not len(boot):
        return Estimate(value, float("nan"), float("nan"), int(within.sum()))
    low, high = np.percentile(boot, [2.5, 97.5])
    return Estimate(value, float(low), float(high), int(within.sum()))


def budget_cut(values: np.ndarray, budget: float) -> float:
    """The cut below which at most `budget` of `values` (the right answers' separator values) fall."""
    ordered = np.sort(values)
    return float(ordered[int(np.floor(budget * len(ordered)))])


def ratio(a: np.ndarray, b: np.ndarray, idx: np.ndarray | None = None) -> Estimate:
    """mean(a) / mean(b) over the same rows (paired), e.g. student hits / teacher hits."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    idx = resamples(len(a)) if idx is None else idx
    sa, sb = a[idx].sum(1), b[idx].sum(1)
    ok = sb > 0
    boot = sa[ok] / sb[ok]
    low, high = np.percentile(boot, [2.5, 97.5]) if len(boot) else (float("nan"), float("nan"))
    return Estimate(float(a.sum() / b.sum()) if b.sum() else float("nan"), float(low), float(high), len(a))


def auc_value(values: np.ndarray, positive: np.ndarray) -> float:
    """P(a positive's value > a negative's), ties counting half (Mann-Whitney); nan without both kinds."""
    pos, neg = values[positive], values[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.sort(neg)
    below = np.searchsorted(order, pos, side="left")
    ties = np.searchsorted(order, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))


def auc(values: np.ndarray, positive: np.ndarray, idx: np.ndarray | None = None) -> Estimate:
    """How well `values` rank the `positive` rows above the others: 0.5 is no better than chance, 1 perfect
    (e.g. a confidence score's right answers above its wrong ones). n: the rows."""
    values, positive = np.asarray(values, float), np.asarray(positive, bool)
    idx = resamples(len(values)) if idx is None else idx
    boot = np.asarray([auc_value(values[i], positive[i]) for i in idx])
    boot = boot[~np.isnan(boot)]
    low, high = np.percentile(boot, [2.5, 97.5]) if len(boot) else (float("nan"), float("nan"))
    return Estimate(auc_value(values, positive), float(low), float(high), len(values))


def median_ratio(slow: np.ndarray, fast: np.ndarray, seed: int = SEED, rounds: int = ROUNDS) -> Estimate:
    """median(slow) / median(fast) of two sets of timings, each resampled on its own."""
    slow, fast = np.asarray(slow, float), np.asarray(fast, float)
    i, j = resamples(len(slow), seed, rounds, stream=90), resamples(len(fast), seed, rounds, stream=91)
    boot = np.median(slow[i], 1) / np.median(fast[j], 1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return Estimate(float(np.median(slow) / np.median(fast)), float(low), float(high), len(slow))


def fmt(e: Estimate | dict | None, pct: bool = True) -> str:
    """'25.3 % [20.6, 30.4]' (pct) or '4.21 [3.9, 4.6]'."""
    if e is None:
        return "–"
    if isinstance(e, dict):
        e = Estimate(e["value"], e["ci95"][0], e["ci95"][1], e["n"])
    if pct:
        return f"{100 * e.value:.1f} % [{100 * e.low:.1f}, {100 * e.high:.1f}]"
    return f"{e.value:.2f} [{e.low:.2f}, {e.high:.2f}]"
