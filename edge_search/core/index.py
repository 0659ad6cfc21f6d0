"""The catalog's vector index: usearch, cosine metric, one file or a base and a delta.

Owns how vectors are stored (dtype, pre-scaling, optional f16 rescoring, an
optional projection the graph is built in: `export --index-projection D`) and
searched (exact or HNSW), and how a catalog build's delta segment and removed
keys are searched together with its base's file (`SegmentedIndex`).
Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Union

import numpy as np
from usearch.index import Index, MetricKind, search as exact_search

from edge_search.errors import BundleError
from edge_search.core.manifest import IndexInfo

# A segmented search first fetches this many candidates per wanted result from the base segment (its
# removed keys are dropped after the search), and grows the fetch by the same factor while too few survive.
REMOVED_SLACK = 2
# A delta segment up to this many components (vectors x dimensions) is searched in numpy, exactly: one
# usearch call costs ~0.15 ms of wrapper overhead on these CPUs (measured), more than a 2^20-component
# product; a larger delta is searched by usearch like its base.
SMALL_DELTA = 1 << 20

# How many i8 (or projected) candidates per wanted result are rescored with f16 vectors.
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
    rescore: np.ndarray | None = None  # f16, row = key - first_key, unit length
    first_key: int = 0  # keys first_key .. first_key + len - 1 (a delta segment's start after its base)
    # dim x D: the graph holds each vector times this (a D-d walk is that much cheaper per step on a
    # catalog that outgrows the cache); its candidates are rescored in full with `rescore`
    projection: np.ndarray | None = None
    rescore_factor: int = RESCORE_FACTOR  # candidates rescored per wanted result

    def __post_init__(self) -> None:
        if self.projection is not None and self.rescore is None:
            raise ValueError("a projected graph needs the full vectors to rescore its candidates")

    @classmethod
    def build(cls, vectors: np.ndarray, *, dtype: str, exact: bool = True, rescore: bool = False,
              first_key: int = 0, projection: np.ndarray | None = None) -> "VectorIndex":
        n, dim = vectors.shape
        graph_dim = dim if projection is None else projection.shape[1]
        # dtype is always explicit: usearch's default depends on the CPU.
        index = Index(ndim=graph_dim, metric="cos", dtype=dtype)
        # One thread: a multi-threaded build links the HNSW graph in a
        # different order each run, and exports must be byte-reproducible.
        v = unit(vectors)
        if n:
            index.add(np.arange(first_key, first_key + n, dtype=np.uint64), _graph_rows(v, projection), threads=1)
        extra = v.astype(np.float16) if rescore or projection is not None else None
        return cls(index=index, dtype=dtype, exact=exact, rescore=extra, first_key=first_key, projection=projection)

    @classmethod
    def build_keyed(cls, chunks: Iterable[tuple[np.ndarray, np.ndarray]], *, count: int, dim: int, dtype: str,
                    exact: bool = True, rescore: bool = False, first_key: int = 0,
                    projection: np.ndarray | None = None) -> "VectorIndex":
        """The index of `count` vectors with keys first_key .. first_key + count - 1, added as (keys, vectors)
        chunks arrive (a catalog too large to hold twice in memory); one thread, as build()."""
        index = Index(ndim=dim if projection is None else projection.shape[1], metric="cos", dtype=dtype)
        extra = np.zeros((count, dim), np.float16) if rescore or projection is not None else None
        added = 0
        for keys, vectors in chunks:
            if not len(keys):
                continue
            keys = np.asarray(keys, np.int64)
            if keys.min() < first_key or keys.max() >= first_key + count:
                raise ValueError(f"keys {keys.min()} .. {keys.max()} outside {first_key} .. {first_key + count - 1}")
            v = unit(vectors)
            try:
                index.add(keys.astype(np.uint64), _graph_rows(v, projection), threads=1)
            except RuntimeError as e:  # usearch refuses a key given twice
                raise ValueError(f"keys {keys.min()} .. {keys.max()}: {e}") from None
            if extra is not None:
                extra[keys - first_key] = v.astype(np.float16)
            added += len(keys)
        if added != count or len(index) != count:
            raise ValueError(f"{added} vectors added ({len(index)} distinct keys), expected {count}")
        return cls(index=index, dtype=dtype, exact=exact, rescore=extra, first_key=first_key, projection=projection)

    @classmethod
    def open(cls, path: Path, info: IndexInfo, rescore_path: Path | None = None,
             projection: np.ndarray | None = None) -> "VectorIndex":
        """The base segment (or the only one) of a bundle's index (`projection`: see load_projection)."""
        return cls.open_file(path, count=info.count, dtype=info.dtype, exact=info.exact, rescore_path=rescore_path,
                             expansion_search=info.expansion_search, projection=projection)

    @classmethod
    def open_file(cls, path: Path, *, count: int, dtype: str, exact: bool, rescore_path: Path | None = None,
                  first_key: int = 0, expansion_search: int | None = None,
                  projection: np.ndarray | None = None) -> "VectorIndex":
        problem = check_index_file(Path(path), count, dtype)
        if problem:
            raise BundleError(f"{path}: corrupt index ({problem})")
        try:
            index = Index.restore(str(path), view=True)
        except Exception as e:
            raise BundleError(f"{path}: cannot open index ({e})") from None
        if index is None or len(index) != count:
            raise BundleError(f"{path}: index holds {0 if index is None else len(index)} vectors, manifest says {count}")
        if expansion_search is not None:  # (a search setting, not stored in the file)
            index.expansion_search = expansion_search
        if projection is not None and projection.shape[1] != index.ndim:
            raise BundleError(f"{path}: a graph of {index.ndim} dimensions, its projection makes {projection.shape[1]}")
        dim = int(index.ndim) if projection is None else int(projection.shape[0])
        rescore = None
        if rescore_path is not None:
            try:
                rescore = np.load(rescore_path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise BundleError(f"{rescore_path}: cannot read rescoring vectors ({e})") from None
            if rescore.shape != (count, dim) or rescore.dtype != np.float16:
                raise BundleError(f"{rescore_path}: {rescore.dtype} {rescore.shape}, expected float16 {(count, dim)}")
        elif projection is not None:
            raise BundleError(f"{path}: a projected graph without the full vectors to rescore its candidates")
        return cls(index=index, dtype=dtype, exact=exact, rescore=rescore, first_key=first_key, projection=projection)

    @property
    def ndim(self) -> int:
        """The dimensions of the vectors it holds and is queried with (a projected graph's are fewer)."""
        return int(self.index.ndim) if self.projection is None else int(self.projection.shape[0])

    def __len__(self) -> int:
        return len(self.index)

    def save(self, index_path: Path, rescore_path: Path | None = None) -> None:
        self.index.save(str(index_path))
        if self.rescore is not None:
            if rescore_path is None:
                raise ValueError("this index rescores with f16 vectors: give a path for them")
            with open(rescore_path, "wb") as f:
                np.save(f, self.rescore, allow_pickle=False)

    def search(self, queries: np.ndarray, k: int, *, normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k keys and cosine similarities for each query; -1 pads missing slots.
        `normalized`: the queries are already unit rows (float32, contiguous)."""
        q = np.atleast_2d(queries)
        n = len(self.index)  # once: every len() of a usearch index is a call into its wrapper
        if not n:
            return np.full((len(q), 1), -1, dtype=np.int64), np.full((len(q), 1), -np.inf, dtype=np.float32)
        k = max(1, min(k, n))
        fetch = min(n, k * self.rescore_factor) if self.rescore is not None else k
        qn = q if normalized else unit(q)
        m = self.index.search(_graph_rows(qn, self.projection), fetch, exact=self.exact)
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
        # keys are dense from first_key: anything else is a corrupt file
        outside = (keys >= self.first_key + n) | ((keys < self.first_key) & (keys >= 0)) if self.first_key \
            else keys >= n
        if outside.any():
            raise BundleError(f"index returned key {int(keys[outside][0])} but holds keys {self.first_key} .. "
                              f"{self.first_key + n - 1} (corrupt index file)")
        if self.rescore is not None:
            keys, scores = self._rescored(keys, qn)
        return keys[:, :k], scores[:, :k]

    def _rescored(self, keys: np.ndarray, qn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The candidates ranked by the cosine of their full f16 vectors with each query, best first.
        Cosine, not the inner product: f16 rounding leaves a unit vector's norm off by ~1e-4, more than
        the gaps between the vectors of a catalog whose images look alike, and ranking by that noise
        cost an i8 index 19 points of top-1 agreement on the tiny test catalog (0.92 with cosine, 0.73
        without). usearch's own f16 kernel on the candidate rows: numpy's f16 -> f32 conversion of
        40 x 512 values alone took 56 us a query, the kernel's whole pass 12 us (1M bench index)."""
        out_k = np.full(keys.shape, -1, dtype=np.int64)
        out_s = np.full(keys.shape, -np.inf, dtype=np.float32)
        for i in range(len(keys)):
            found = keys[i][keys[i] >= 0]
            if not len(found):
                continue
            cand = np.asarray(self.rescore[found - self.first_key], dtype=np.float16)
            m = exact_search(cand, qn[i].astype(np.float16), len(found), MetricKind.Cos, exact=True, threads=1)
            rows = np.asarray(m.keys, dtype=np.int64)
            out_k[i, :len(rows)] = found[rows]
            out_s[i, :len(rows)] = 1.0 - np.asarray(m.distances, dtype=np.float32)
        return out_k, out_s


@dataclass
class SegmentedIndex:
    """A base segment searched with its delta: the base's keys in `removed` are never returned,
    the delta's keys follow the base's. Results are the merged top-k by score, as one index of the
    live vectors would rank them (exactly so with exact search)."""

    base: VectorIndex
    delta: VectorIndex
    removed: np.ndarray  # sorted base keys

    def __post_init__(self) -> None:
        # one lookup drops removed keys and usearch's -1 padding alike (index -1 is the last slot: dead)
        self._dead = np.zeros(len(self.base) + 1, dtype=bool)
        self._dead[self.removed] = True
        self._dead[-1] = True
        # sizes once: every len() of a usearch index is a call into its wrapper
        self._n_base, self._n_delta = len(self.base), len(self.delta)
        self._n_live = self._n_base - len(self.removed) + self._n_delta
        self._removed_share = len(self.removed) / max(1, self._n_base)
        self._small = None  # a small delta's unit vectors, row = key - its first key
        n = self._n_delta
        if n and n * self.delta.ndim <= SMALL_DELTA:
            stored = self.delta.rescore if self.delta.rescore is not None else self.delta.index.get(
                np.arange(self.delta.first_key, self.delta.first_key + n, dtype=np.uint64))
            self._small = unit(np.asarray(stored, dtype=np.float32))
            self._small_keys = np.arange(self.delta.first_key, self.delta.first_key + n, dtype=np.int64)

    def __len__(self) -> int:
        return self._n_live

    def _search_base(self, qn: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Base keys and scores with a mask of the live ones, at least `want` live per query where the
        base holds them."""
        # a few more than wanted: removed keys are a small share, and a query that meets many fetches again
        fetch = min(self._n_base, max(1, want + 2 + math.ceil(want * REMOVED_SLACK * self._removed_share)))
        while True:
            keys, scores = self.base.search(qn, fetch, normalized=True)
            alive = ~self._dead[keys]
            if fetch >= self._n_base or (int(alive.sum()) >= want if len(qn) == 1 else
                                         (alive.sum(axis=1) >= want).all()):
                return keys, scores, alive
            fetch = min(self._n_base, fetch * REMOVED_SLACK * 2)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        qn = unit(np.atleast_2d(queries))
        k = max(1, min(k, self._n_live))
        bk, bs, alive = self._search_base(qn, min(k, self._n_base - len(self.removed)))
        if len(qn) == 1 and self._small is not None:
            return self._merge_one(qn[0], bk[0][alive[0]], bs[0][alive[0]], k)
        if self._small is not None:  # exact, in numpy: every delta vector's score, the top k kept
            dscores = qn @ self._small.T
            if dscores.shape[1] > k:
                top = np.argpartition(-dscores, k - 1, axis=1)[:, :k]
                dkeys, dscores = top + self.delta.first_key, np.take_along_axis(dscores, top, axis=1)
            else:
                dkeys = np.broadcast_to(self._small_keys, dscores.shape)
        elif self._n_delta:
            dkeys, dscores = self.delta.search(qn, k, normalized=True)
        else:
            dkeys = dscores = np.zeros((len(qn), 0))
        out_k = np.full((len(qn), k), -1, dtype=np.int64)
        out_s = np.full((len(qn), k), -np.inf, dtype=np.float32)
        for i in range(len(qn)):
            keys = np.concatenate((bk[i][alive[i]], dkeys[i]))
            scores = np.concatenate((bs[i][alive[i]], dscores[i]))
            order = np.argsort(-scores, kind="stable")[:k]
            out_k[i, :len(order)], out_s[i, :len(order)] = keys[order], scores[order]
        return out_k, out_s

    def _merge_one(self, q: np.ndarray, keys: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One query (the kiosk's path), in as few numpy calls as it takes: only the delta vectors that
        beat the base's k-th live score are merged in, and most queries have none."""
        ds = self._small @ q
        hit = np.flatnonzero(ds > scores[k - 1]) if len(keys) >= k else np.arange(len(ds))
        if hit.size:
            keys = np.concatenate((keys, hit + self.delta.first_key))
            scores = np.concatenate((scores, ds[hit]))
            order = np.argsort(-scores, kind="stable")[:k]
            keys, scores = keys[order], scores[order]
        if len(keys) >= k:
            return keys[None, :k], scores[None, :k]
        pad = k - len(keys)
        return (np.concatenate((keys, np.full(pad, -1, np.int64)))[None],
                np.concatenate((scores, np.full(pad, -np.inf, np.float32)))[None].astype(np.float32))


AnyIndex = Union[VectorIndex, SegmentedIndex]


def _graph_rows(vectors: np.ndarray, projection: np.ndarray | None) -> np.ndarray:
    """What the graph holds (or is queried with) for these unit rows."""
    return vectors if projection is None else np.ascontiguousarray(vectors @ projection, dtype=np.float32)


def load_removed(path: Path, count: int, base_count: int) -> np.ndarray:
    """A delta's removed keys: `count` sorted, distinct base-segment keys (.npy, no pickles)."""
    try:
        keys = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: cannot read the removed keys ({e})") from None
    if keys.ndim != 1 or keys.dtype.kind not in "iu" or len(keys) != count:
        raise BundleError(f"{path}: removed keys must be {count} integers, got {keys.dtype} {keys.shape}")
    keys = keys.astype(np.int64)
    if count and (keys[0] < 0 or keys[-1] >= base_count or (np.diff(keys) <= 0).any()):
        raise BundleError(f"{path}: removed keys must be sorted, distinct and below the base's {base_count}")
    return keys


MAX_PROJECTION_DIM = 16384  # as a manifest's embed_dim


def load_projection(path: Path) -> np.ndarray:
    """A projected graph's dim x D matrix (.npy, float32, no pickles), checked before any search uses it."""
    try:  # mapped first: its shape is checked before a byte of it is read into memory
        m = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: cannot read the index projection ({e})") from None
    if m.ndim != 2 or m.dtype != np.float32 or not 1 <= m.shape[1] <= m.shape[0] <= MAX_PROJECTION_DIM:
        raise BundleError(f"{path}: the index projection must be a float32 dim x D matrix with D <= dim, "
                          f"got {m.dtype} {m.shape}")
    m = np.array(m)
    if not np.isfinite(m).all():
        raise BundleError(f"{path}: the index projection holds a value that is not a finite number")
    return m


def projection_of(vectors: np.ndarray, dims: int, *, sample: int = 50_000, seed: int = 0) -> np.ndarray:
    """dim x D: the top `dims` principal directions of these unit rows, uncentred (cosine scores are inner
    products about the origin), fitted on at most `sample` of them (seeded). float32."""
    v = np.asarray(vectors, np.float32)
    if not 1 <= dims <= v.shape[1]:
        raise ValueError(f"a projection to {dims} dimensions of {v.shape[1]}-d vectors")
    if len(v) > sample:
        v = v[np.sort(np.random.default_rng([seed, 53]).choice(len(v), sample, replace=False))]
    u = unit(v).astype(np.float64)
    _, vecs = np.linalg.eigh(u.T @ u)
    return np.ascontiguousarray(vecs[:, ::-1][:, :dims], dtype=np.float32)


def open_index(info: IndexInfo, path: Callable[[str], Path]) -> AnyIndex:
    """A bundle's image index as its manifest describes it (`path` maps a bundle file name to its path)."""
    projection = load_projection(path(info.projection_file)) if info.projection_file else None
    base = VectorIndex.open(path(info.file), info, path(info.rescore_file) if info.rescore_file else None,
                            projection=projection)
    d = info.delta
    if d is None:
        return base
    if d.file is None:  # removals only
        delta = VectorIndex.build(np.zeros((0, base.ndim), np.float32), dtype=info.dtype, exact=info.exact,
                                  first_key=info.count, projection=projection)
    else:  # built in the base's projection
        delta = VectorIndex.open_file(path(d.file), count=d.count, dtype=info.dtype, exact=info.exact,
                                      rescore_path=path(d.rescore_file) if d.rescore_file else None,
                                      first_key=info.count, expansion_search=info.expansion_search,
                                      projection=projection)
    removed = load_removed(path(d.removed_file), d.removed, info.count) if d.removed_file else np.zeros(0, np.int64)
    return SegmentedIndex(base=base, delta=delta, removed=removed)


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
