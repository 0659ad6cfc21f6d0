"""Retrieval quality of a bundle on labeled query photos (`edge-search eval`).

Owns reading the queries file and computing the figures: recall@k, mean
reciprocal rank, the share answered "no match", per-category recall, the most
confused product pairs, and latency. Queries whose id the bundle lacks are
photos of products it does not sell: they measure the "no match" rule from
the other side (reject recall). Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edge_search.errors import EdgeSearchError, ImageError
from edge_search.files import MAX_TABLE_BYTES, open_regular_text
from edge_search.core.manifest import MANIFEST_NAME
from edge_search.core.search import RANK_ALL, Searcher
from edge_search.evaluation.no_match import NoMatchOutcomes

RANKS = (1, 2, 3, 4, 5, 10)
RANDOM_TEACHER_CAVEAT = ("the bundle's teacher has RANDOM weights (exported with --pretrained random): "
                         "these figures are a pipeline check, not a quality result")


class QueriesError(EdgeSearchError):
    """The queries file is missing or malformed."""


@dataclass(frozen=True)
class Query:
    line: int
    image: Path
    id: str


def read_queries(path: str | Path) -> list[Query]:
    """`image,id` rows; image paths relative to the file."""
    path = Path(path)
    try:
        with open_regular_text(path, limit=MAX_TABLE_BYTES, what="queries file", error=QueriesError, newline="",
                               encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if "image" not in header or "id" not in header:
                raise QueriesError(f"{path}: header must have columns image,id (got {','.join(header) or 'nothing'})")
            queries, bad = [], []
            for rec in reader:
                rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items() if k is not None}
                if not rec.get("image") or not rec.get("id"):
                    bad.append(reader.line_num)
                    continue
                queries.append(Query(reader.line_num, path.parent / rec["image"], rec["id"]))
    except FileNotFoundError:
        raise QueriesError(f"{path}: no such queries file") from None
    except UnicodeDecodeError:
        raise QueriesError(f"{path}: not UTF-8 text") from None
    except csv.Error as e:
        raise QueriesError(f"{path}: malformed CSV ({e})") from None
    if bad:
        raise QueriesError(f"{path}: line(s) {', '.join(map(str, bad[:20]))} lack an image or an id")
    if not queries:
        raise QueriesError(f"{path}: no queries")
    return queries


@dataclass
class EvalReport:
    queries: int
    recall: dict[int, float]
    mrr: float
    no_match_share: float
    min_score: float
    per_category: dict[str, dict]
    confused: list[dict]
    latency_ms: dict[str, float]
    unknown_ids: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    calibrated: bool = False  # the bundle's rule has per-product floors and a margin, not min_score alone
    # in-catalog photos ranked right at 1 that the rule still refused (None: no such photo)
    false_reject_of_correct: float | None = None
    # photos of products the bundle lacks (their ids are in unknown_ids) that were refused
    reject_recall: float | None = None
    # what a shopper meets: in-catalog photos named right with the rule applied; of every photo counted
    # (in-catalog and not in the bundle), the share given a wrong product's name; of the names given, the
    # share that were right (None: no name given)
    answered_right: float | None = None
    named_wrong: float | None = None
    right_when_named: float | None = None
    caveat: str | None = None  # said before any figure: e.g. a random-weight teacher's figures mean nothing

    def to_json(self) -> dict:
        d = asdict(self)
        d["recall"] = {f"@{k}": round(v, 4) for k, v in self.recall.items()}
        for key in ("mrr", "no_match_share", "false_reject_of_correct", "reject_recall", "answered_right",
                    "named_wrong", "right_when_named"):
            d[key] = None if d[key] is None else round(d[key], 4)
        return d


def _caveat(searcher: Searcher) -> str | None:
    m = searcher.manifest
    if m is None:
        return None
    where = str(searcher.root / MANIFEST_NAME) if searcher.root is not None else MANIFEST_NAME
    return RANDOM_TEACHER_CAVEAT if m.teacher_record(where).random_weights else None


def evaluate(searcher: Searcher, queries: list[Query], *, on_progress: Callable[[int], None] | None = None) -> EvalReport:
    """Search every query photo with the bundle's own "no match" rule.
    Unreadable photos are listed, not counted; photos whose id the bundle
    does not know are listed and count only towards reject recall."""
    known = {p.id: p for p in searcher.products.products}
    kmax = min(max(RANKS), len(known))
    ranks, embed_ms, search_ms, categories, confused = [], [], [], [], Counter()
    refused, unknown_refused = [], []
    unknown, unreadable = [], []
    for n, q in enumerate(queries, 1):
        if on_progress:
            on_progress(n)
        try:
            # ranked with no cut-off; the rule is applied after, so a refused photo still has a rank
            result = searcher.search_image(q.image, k=kmax, min_score=RANK_ALL)
        except ImageError as e:
            unreadable.append(str(e))
            continue
        answered = searcher.answers(result)
        if q.id not in known:
            unknown.append(f"line {q.line}: {q.id}")
            unknown_refused.append(not answered)
            continue
        ids = [h.id for h in result.hits]
        rank = ids.index(q.id) + 1 if q.id in ids else None
        ranks.append(rank)
        categories.append(known[q.id].category or "(none)")
        if rank != 1 and ids:
            confused[(q.id, ids[0])] += 1
        refused.append(not answered)
        embed_ms.append(result.timings_ms["preprocess"] + result.timings_ms["embed"])
        search_ms.append(result.timings_ms["search"])
    if not ranks:
        raise QueriesError("no query could be evaluated (all unreadable or unknown ids)")
    r = np.array([x if x is not None else 10**9 for x in ranks])
    per_cat: dict[str, dict] = {}
    for cat in sorted(set(categories)):
        sel = np.array([c == cat for c in categories])
        per_cat[cat] = {"queries": int(sel.sum()), "recall@1": round(float((r[sel] == 1).mean()), 4)}
    no_match = NoMatchOutcomes(right=r == 1, refused=refused, unknown_refused=unknown_refused).shares()
    pct = lambda xs, p: round(float(np.percentile(xs, p)), 3)  # noqa: E731
    return EvalReport(
        queries=len(ranks),
        recall={k: float((r <= k).mean()) for k in RANKS if k <= kmax},
        mrr=float(np.mean([1.0 / x if x is not None else 0.0 for x in ranks])),
        no_match_share=no_match["false_reject_all"].value,
        min_score=searcher.min_score,
        per_category=per_cat,
        confused=[{"true": a, "predicted": b, "count": c} for (a, b), c in confused.most_common(10)],
        latency_ms={"embed_p50": pct(embed_ms, 50), "embed_p95": pct(embed_ms, 95),
                    "search_p50": pct(search_ms, 50), "search_p95": pct(search_ms, 95)},
        unknown_ids=unknown, unreadable=unreadable,
        calibrated=searcher.calibration is not None,
        false_reject_of_correct=no_match["false_reject_of_correct"].value,
        reject_recall=no_match["reject_recall"].value,
        answered_right=no_match["answered_right"].value,
        named_wrong=no_match["named_wrong"].value,
        right_when_named=no_match["right_when_named"].value,
        caveat=_caveat(searcher),
    )
