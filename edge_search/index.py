"""The catalog's vector index: usearch, cosine metric, one file.

Owns how vectors are stored (dtype, pre-scaling, optional f16 rescoring) and
searched (exact or HNSW). Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from usearch.index import Index

from .errors import BundleError
from .manifest import IndexInfo

# How many i8 candidates per wanted result are rescored with f16 vectors.
RESCORE_FACTOR = 4


def unit(vectors: np.ndarray) -> np.ndarray:
    """L2-normalized float32 rows.

    Note: usearch normalizes every vector before its i8 cast (x * 127), whatever
    the metric, so a unit 512-d vector keeps only ~11 levels per component and
    pre-scaling cannot buy more (measured); f16 rescoring is the remedy."""
    v = np.asarray(vectors, dtype=np.float32)
    return np.ascontiguousarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))


@dataclass
class VectorIndex:
    index: Index
    dtype: str
    exact: bool
    rescore: np.ndarray | None = None  # f16, row = key, unit length

    @classmethod
    def build(cls, vectors: np.ndarray, *, dtype: str, exact: bool = True, rescore: bool = False) -> "VectorIndex":
        n, dim = vectors.shape
        # dtype is always explicit: usearch's default depends on the CPU.
        index = Index(ndim=dim, metric="cos", dtype=dtype)
        # One thread: a multi-threaded build links the HNSW graph in a
        # different order each run, and exports must be byte-reproducible.
        index.add(np.arange(n, dtype=np.uint64), unit(vectors), threads=1)
        extra = unit(vectors).astype(np.float16) if rescore else None
        return cls(index=index, dtype=dtype, exact=exact, rescore=extra)

    @classmethod
    def open(cls, path: Path, info: IndexInfo, rescore_path: Path | None = None) -> "VectorIndex":
        try:
            index = Index.restore(str(path), view=True)
        except Exception as e:
            raise BundleError(f"{path}: cannot open index ({e})") from None
        if index is None or len(index) != info.count:
            raise BundleError(f"{path}: index holds {0 if index is None else len(index)} vectors, manifest says {info.count}")
        rescore = None
        if rescore_path is not None:
            try:
                rescore = np.load(rescore_path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise BundleError(f"{rescore_path}: cannot read rescoring vectors ({e})") from None
            if rescore.shape != (info.count, index.ndim):
                raise BundleError(f"{rescore_path}: shape {rescore.shape}, expected {(info.count, index.ndim)}")
        return cls(index=index, dtype=info.dtype, exact=info.exact, rescore=rescore)

    @property
    def ndim(self) -> int:
        return int(self.index.ndim)

    def __len__(self) -> int:
        return len(self.index)

    def save(self, index_path: Path, rescore_path: Path | None = None) -> None:
        self.index.save(str(index_path))
        if self.rescore is not None:
            if rescore_path is None:
                raise ValueError("this index rescores with f16 vectors: give a path for them")
            with open(rescore_path, "wb") as f:
                np.save(f, self.rescore, allow_pickle=False)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k keys and cosine similarities for each query; -1 pads missing slots."""
        q = np.atleast_2d(queries)
        k = max(1, min(k, len(self)))
        fetch = min(len(self), k * RESCORE_FACTOR) if self.rescore is not None else k
        m = self.index.search(unit(q), fetch, exact=self.exact)
        keys = np.full((len(q), fetch), -1, dtype=np.int64)
        scores = np.full((len(q), fetch), -np.inf, dtype=np.float32)
        if hasattr(m, "counts"):  # several queries: BatchMatches, padded rows
            for i, c in enumerate(np.asarray(m.counts).reshape(-1)):
                keys[i, :c] = m.keys[i, :c]
                scores[i, :c] = 1.0 - m.distances[i, :c]
        else:  # one query: Matches, already cut to what was found
            c = len(m.keys)
            keys[0, :c] = m.keys
            scores[0, :c] = 1.0 - np.asarray(m.distances)
        if (keys >= len(self)).any():  # key i is catalog image i: anything else is a corrupt file
            raise BundleError(f"index returned key {int(keys.max())} but holds {len(self)} vectors (corrupt index file)")
        if self.rescore is not None:
            qn = unit(q)
            safe = np.where(keys >= 0, keys, 0)
            cand = np.asarray(self.rescore[safe.ravel()], dtype=np.float32).reshape(*keys.shape, -1)
            scores = np.where(keys >= 0, np.einsum("nkd,nd->nk", cand, qn), -np.inf).astype(np.float32)
            order = np.argsort(-scores, axis=1, kind="stable")
            keys = np.take_along_axis(keys, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
        return keys[:, :k], scores[:, :k]
