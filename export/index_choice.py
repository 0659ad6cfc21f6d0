"""Choosing how the index stores and searches vectors, by measurement.

Each candidate storage is compared with exact f32 search on real query
embeddings; the smallest that keeps top-1 product agreement at the gate wins.
Then exact search and HNSW are timed on the same queries. With a projection
(`export --index-projection D`) the graph holds D-d vectors whose candidates
are rescored in full, so every candidate rescores and the search is HNSW: a
projected graph searched exactly would only add the projection's error.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edge_search.core.index import SMALL_DELTA, VectorIndex, unit

# (label, dtype, rescore)
CANDIDATES = (
    ("i8", "i8", False),
    ("i8+f16-rescore", "i8", True),
    ("f16", "f16", False),
    ("f32", "f32", False),
)
# a projected graph of each dtype, its candidates rescored with the full f16 vectors
PROJECTED_CANDIDATES = (
    ("projected-i8+f16-rescore", "i8", True),
    ("projected-f16+f16-rescore", "f16", True),
    ("projected-f32+f16-rescore", "f32", True),
)


@dataclass(frozen=True)
class IndexChoice:
    label: str
    dtype: str
    rescore: bool
    exact: bool
    report: dict


# Two catalog images whose exact f32 scores differ by less than this are a tie:
# float summation order alone moves scores by ~1e-6, and a degenerate space
# (a random teacher) is full of such ties. f16/i8 rounding errors are far larger.
TIE = 1e-5


EXACT_CHUNK = 1024  # catalog vectors scored against every query at once (1 000 queries: 4 MB at a time)
BUILD_CHUNK = 8192  # catalog vectors read at once into an index being built


@dataclass(frozen=True)
class RowSource:
    """Catalog vectors read by position, a chunk at a time: an array in memory, or a catalog build's vectors
    on disk (IndexVectors), whose choice must not hold them all at once (a copy per step was 3x the index)."""

    take: Callable[[np.ndarray], np.ndarray]  # positions -> their vectors, float32
    count: int
    dim: int

    @classmethod
    def of(cls, vectors) -> "RowSource":
        if isinstance(vectors, RowSource):
            return vectors
        if isinstance(vectors, np.ndarray):
            return cls(take=lambda p: vectors[p], count=len(vectors), dim=int(vectors.shape[1]))
        return cls(take=vectors.take, count=len(vectors), dim=int(vectors.dim))

    def subset(self, positions: np.ndarray) -> "RowSource":
        """These positions of this source, renumbered 0 .. len(positions) - 1."""
        return RowSource(take=lambda p: self.take(positions[p]), count=len(positions), dim=self.dim)

    def __len__(self) -> int:
        return self.count

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.count, size):
            positions = np.arange(start, min(start + size, self.count))
            yield positions, np.asarray(self.take(positions), np.float32)

    def index(self, *, dtype: str, rescore: bool, projection: np.ndarray | None = None,
              exact: bool = True) -> VectorIndex:
        return VectorIndex.build_keyed(self.chunks(BUILD_CHUNK), count=self.count, dim=self.dim, dtype=dtype,
                                       exact=exact, rescore=rescore, projection=projection)


@dataclass(frozen=True)
class ExactTop1:
    """Exact f32 search's top-1 for each query, kept as a key and a score per query rather than a queries x
    catalog matrix of scores (which grows with the catalog: 500 queries x 50 000 images is 100 MB); the
    catalog's vectors are read again where a score is needed, not kept."""

    rows: RowSource  # the catalog's vectors
    queries: np.ndarray  # unit length
    best: np.ndarray  # each query's top-1 catalog row
    best_score: np.ndarray

    @classmethod
    def of(cls, vectors, queries: np.ndarray) -> "ExactTop1":
        rows = RowSource.of(vectors)
        qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        best = np.zeros(len(qn), np.int64)
        best_score = np.full(len(qn), -np.inf, np.float32)
        for positions, chunk in rows.chunks(EXACT_CHUNK):
            scores = qn @ unit(chunk).T
            top = scores.argmax(axis=1)
            score = scores[np.arange(len(qn)), top]
            better = score > best_score  # (strictly: the first of equal scores wins, as argmax over all would)
            best[better], best_score[better] = positions[top[better]], score[better]
        return cls(rows=rows, queries=qn, best=best, best_score=best_score)

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Each query's exact f32 score against the catalog row given for it."""
        wanted, back = np.unique(rows, return_inverse=True)
        return np.einsum("ij,ij->i", self.queries, unit(self.rows.take(wanted))[back])


def _agreement(index: VectorIndex, queries: np.ndarray, exact: ExactTop1, key_product: np.ndarray) -> float:
    """Share of queries whose top-1 product is exact search's, ties counted as agreement."""
    keys, _ = index.search(queries, 1)
    got = keys[:, 0]
    same = key_product[got] == key_product[exact.best]
    tied = exact.score(got) >= exact.best_score - TIE
    return float((same | tied).mean())


def _bytes_per_vector(index: VectorIndex) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        p, r = Path(tmp) / "i.usearch", Path(tmp) / "r.npy"
        index.save(p, r if index.rescore is not None else None)
        size = p.stat().st_size + (r.stat().st_size if index.rescore is not None else 0)
    if index.projection is not None:
        size += index.projection.nbytes
    return size / max(1, len(index))


def _time_search(index: VectorIndex, queries: np.ndarray, k: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for q in queries:
            index.search(q[None], k)
        best = min(best, (time.perf_counter() - t0) / len(queries))
    return best * 1e3


def choose_index(vectors: np.ndarray, key_product: np.ndarray, queries: np.ndarray, *, threshold: float,
                 forced_dtype: str | None = None, projection: np.ndarray | None = None) -> IndexChoice:
    exact = ExactTop1.of(vectors, queries)
    rows = []
    for label, dtype, rescore in (CANDIDATES if projection is None else PROJECTED_CANDIDATES):
        # (a projected candidate's agreement is measured on its graph, as it will be searched)
        index = VectorIndex.build(vectors, dtype=dtype, exact=projection is None, rescore=rescore,
                                  projection=projection)
        agree = _agreement(index, queries, exact, key_product)
        rows.append({"label": label, "dtype": dtype, "rescore": rescore,
                     "top1_agreement_vs_exact_f32": round(agree, 5),
                     "bytes_per_vector": round(_bytes_per_vector(index), 1)})
    allowed = [r for r in rows if forced_dtype is None or (r["dtype"] == forced_dtype and
                                                           (projection is not None or not r["rescore"]))]
    passing = [r for r in allowed if r["top1_agreement_vs_exact_f32"] >= threshold] if forced_dtype is None else allowed
    pick = min(passing or [rows[-1]], key=lambda r: r["bytes_per_vector"])
    exact_search, timing = choose_search(vectors, key_product, queries, dtype=pick["dtype"], rescore=pick["rescore"],
                                         threshold=threshold, exact=exact, projection=projection)
    report = {"candidates": rows, "chosen": pick["label"], "forced_dtype": forced_dtype, "threshold": threshold,
              "projected_dims": None if projection is None else int(projection.shape[1]), **timing}
    return IndexChoice(label=pick["label"], dtype=pick["dtype"], rescore=pick["rescore"],
                       exact=exact_search, report=report)


# HNSW search widths tried, narrowest first (64 is usearch's default): the first whose top-1 agreement with
# exact search reaches the threshold is the one HNSW is timed and shipped with (bench/search_params.py
# measured recall@10 against width at 100k and 1M vectors)
EXPANSIONS = (64, 128, 256, 512)


def choose_search(vectors, key_product: np.ndarray, queries: np.ndarray, *, dtype: str, rescore: bool,
                  threshold: float, exact: ExactTop1 | None = None,
                  projection: np.ndarray | None = None) -> tuple[bool, dict]:
    """Exact search or HNSW for an index of these vectors, timed on these queries: HNSW only when, at the
    narrowest of EXPANSIONS that is as faithful (top-1 product agreement with exact f32 at the threshold),
    it is faster by a fifth; always HNSW on a projected graph. Returns (exact, figures); with HNSW,
    figures["expansion_search"] is its width. `vectors`: an array or a RowSource, read a chunk at a time."""
    vectors = RowSource.of(vectors)
    if exact is None:
        exact = ExactTop1.of(vectors, queries)
    chosen = vectors.index(dtype=dtype, rescore=rescore, projection=projection)
    k = min(5, len(vectors))
    exact_ms = _time_search(chosen, queries[:200], k)
    chosen.exact = False
    tried = []
    for width in EXPANSIONS:
        chosen.index.expansion_search = width
        agree = _agreement(chosen, queries, exact, key_product)
        tried.append({"expansion_search": width, "hnsw_top1_agreement": round(agree, 5)})
        if agree >= threshold:
            break
    hnsw_ms = _time_search(chosen, queries[:200], k)  # at the last width tried
    # small catalogs search exactly, whatever the timing says: under SMALL_DELTA components one exact pass
    # costs less than a usearch call's own overhead, and a timing of 12 vectors is the machine's noise
    # (it chose HNSW for the tiny test bundle one run in a few)
    use_hnsw = projection is not None or (len(vectors) * vectors.dim > SMALL_DELTA and hnsw_ms < 0.8 * exact_ms
                                          and tried[-1]["hnsw_top1_agreement"] >= threshold)
    return not use_hnsw, {"queries": int(len(queries)), "exact_search_ms": round(exact_ms, 4),
                          "hnsw_search_ms": round(hnsw_ms, 4), "hnsw_top1_agreement": tried[-1]["hnsw_top1_agreement"],
                          "hnsw_widths": tried, "search": "hnsw" if use_hnsw else "exact",
                          "expansion_search": tried[-1]["expansion_search"] if use_hnsw else None}
