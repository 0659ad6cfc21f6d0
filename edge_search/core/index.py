"""The catalog's vector index: usearch, cosine metric, one file.

Owns how vectors are stored (dtype, pre-scaling, optional f16 rescoring) and
searched (exact or HNSW). Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from usearch.index import Index

from edge_search.errors import BundleError
from edge_search.core.manifest import IndexInfo

# How many i8 candidates per wanted result are rescored with f16 vectors.
RESCORE_FACTOR = 4
# usearch v2 file: bytes per stored component, and the header's kind codes
# (metric cos, scalar per dtype, u64 keys, u32 neighbour slots) as 2.26 writes them
_COMPONENT_BYTES = {"f32": 4, "f16": 2, "i8": 1}
_KINDS = {"f32": bytes([99, 11, 14, 15]), "f16": bytes([99, 12, 14, 15]), "i8": bytes([99, 23, 14, 15])}


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
        problem = check_index_file(Path(path), info.count, info.dtype)
        if problem:
            raise BundleError(f"{path}: corrupt index ({problem})")
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


def check_index_file(path: Path, count: int, dtype: str) -> str | None:
    """What is structurally wrong with a usearch v2 index file, or None.

    usearch trusts its files: a neighbour slot past the graph, or a level table
    that disagrees with the nodes, is followed into unmapped memory and kills
    the interpreter (seen with 4 flipped bytes in a 3 kB index). A bundle whose
    checksums match can still carry such a file (an export bug, a bad disk
    before hashing), so the runtime walks the layout once, vectorized, before
    handing the file to usearch: vectors block, header, graph header, level
    table, then every node's level and neighbour lists."""
    try:
        buf = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as e:
        return f"cannot map it: {e}"
    if dtype not in _COMPONENT_BYTES:
        return f"unknown dtype {dtype!r}"

    def ints(kind: str, n: int, at: int) -> np.ndarray:
        width = np.dtype(kind).itemsize
        return buf[at:at + n * width].view(kind) if at + n * width <= len(buf) else np.zeros(0, kind)

    head = ints("<u4", 2, 0)
    if len(head) < 2:
        return "too short"
    rows, cols = int(head[0]), int(head[1])
    if rows != count or cols == 0 or cols % _COMPONENT_BYTES[dtype]:
        return f"holds {rows} vectors of {cols} bytes, manifest says {count} {dtype} vectors"
    ndim = cols // _COMPONENT_BYTES[dtype]
    h = 8 + rows * cols
    if len(buf) < h + 64 + 40 or bytes(buf[h:h + 7]) != b"usearch":
        return "no usearch header after the vectors"
    present, deleted, dims = (int(x) for x in ints("<u8", 3, h + 17))
    if present != count or deleted or dims != ndim:
        return f"header says {present} vectors ({deleted} deleted) of {dims} dimensions"
    if bytes(buf[h + 13:h + 17]) != _KINDS[dtype] or buf[h + 41]:
        return f"header kinds are not a cosine {dtype} index with one vector per key"
    n, conn, conn0, max_level, entry = (int(x) for x in ints("<u8", 5, h + 64))
    if n != count or not 2 <= conn <= 1024 or not conn <= conn0 <= 4096 or max_level > 64 or (n and entry >= n):
        return "graph header out of range"
    at = h + 64 + 40
    levels = ints("<i2", n, at).astype(np.int64)
    if len(levels) != n:
        return "graph level table cut short"
    if n == 0:
        return None if len(buf) == at else "bytes after an empty graph"
    if levels.min() < 0 or levels.max() > max_level:
        return "node level out of range"
    base, upper = 8 + 2 + 4 + 4 * conn0, 4 + 4 * conn  # key, level, then (count, slots) per level
    sizes = base + levels * upper
    starts = at + 2 * n + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if at + 2 * n + int(sizes.sum()) != len(buf):
        return "graph nodes do not fill the file"
    if not np.array_equal(buf[(starts + 8)[:, None] + np.arange(2)].copy().view("<i2").ravel(), levels):
        return "a node's level disagrees with the level table"
    lists = [(starts + 10, conn0)] + [(starts[levels >= lvl] + base + (lvl - 1) * upper, conn)
                                      for lvl in range(1, int(levels.max()) + 1)]
    for where, cap in lists:
        for chunk in range(0, len(where), 4096):  # bounded temporaries on a 100k-vector catalog
            w = where[chunk:chunk + 4096]
            counts = buf[w[:, None] + np.arange(4)].copy().view("<u4").ravel()
            if (counts > cap).any():
                return "a node has more neighbours than the graph allows"
            slots = buf[(w + 4)[:, None] + np.arange(4 * cap)].copy().view("<u4").reshape(len(w), cap)
            if (slots[np.arange(cap)[None, :] < counts[:, None]] >= n).any():
                return "a neighbour points outside the graph"
    return None
