"""Searching a bundle: a photo, words, or both in; ranked products out.

`Searcher` is built from an encoder, an index and a product table (so tests
can hand it fakes), plus a text encoder and a product-text index when the
bundle has them; `Searcher.from_bundle` wires the real ones from a bundle.
Filters (`filters.Filter`) are applied inside the search by over-fetching:
k*4 products, then k*16, ... up to the whole catalog, until k pass.
The query settings (k, min_score, alpha, filter) have their defaults and
their one check in `query`; a result says why it holds fewer than k
products (`SearchResult.short`).
Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import time
from functools import cached_property
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from edge_search.core.bundle import Bundle
from edge_search.core.encoder import Encoder, OnnxEncoder
from edge_search.core.images import load_image
from edge_search.core.index import AnyIndex, VectorIndex, open_index, unit
from edge_search.errors import BundleError, TextQueryError
from edge_search.core.filters import Filter
from edge_search.core.manifest import DEFAULT_FUSION_ALPHA, IndexInfo, Manifest, NoMatchRule, PreprocessCfg, TextInfo
from edge_search.core.preprocess import preprocess
from edge_search.core.products import Product, ProductTable
from edge_search.core.query import DEFAULT_K, RANK_ALL, QueryParams
from edge_search.core.threads import recorded_threads
from edge_search.core.text import TextEncoder

FETCH_GROWTH = 4  # over-fetching under a filter: k*4 products, then k*16, ... up to the catalog


class Short(str, Enum):
    """Why a result holds fewer than k products (or none)."""

    FILTER = "filter"  # no more products pass the filter (none at all: the result is empty)
    NO_MATCH = "no_match"  # the best product fell below the bundle's rule (or min_score): empty
    BELOW = "below"  # the first products passed; the rest scored below the rule's floor (or min_score)
    CATALOG = "catalog"  # the catalog has fewer products than k


@dataclass(frozen=True)
class SearchHit:
    id: str
    name: str
    score: float
    price: float | None
    category: str | None
    product: Product = field(repr=False, compare=False)
    exact: bool = False  # the query was this product's id or name

    @property
    def aisle(self) -> str | None:
        """Where the product is in this store (a per-store bundle's `aisle`, or a catalog column of that name)."""
        value = self.product.meta.get("aisle")
        return None if value is None else str(value)

    @property
    def in_stock(self) -> bool | None:
        value = self.product.meta.get("in_stock")
        return value if isinstance(value, bool) else None

    @property
    def where(self) -> str:
        """Where it is, in words: the aisle and, when the store says so, that it is out of stock."""
        parts = ([f"aisle {self.aisle}"] if self.aisle else []) + (["out of stock"] if self.in_stock is False else [])
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        d = {"id": self.id, "name": self.name, "score": round(self.score, 4),
             "price": self.price, "category": self.category}
        if self.aisle is not None:
            d["aisle"] = self.aisle
        if self.in_stock is not None:
            d["in_stock"] = self.in_stock
        if self.exact:
            d["exact"] = True
        return d


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    timings_ms: dict[str, float]
    best_score: float  # the top product's score, even when it fell below min_score
    margin: float = float("inf")  # best_score minus the second product's score (inf with one product)
    negative_score: float = float("-inf")  # the nearest no-product scene's score (bundles with negatives)
    short: Short | None = None  # why fewer than k products came back; None when k did
    best_id: str | None = None  # the top product's id, even when it was refused (None: nothing ranked)

    @property
    def no_match(self) -> bool:
        return not self.hits


class Searcher:
    def __init__(self, *, encoder: Encoder, index: AnyIndex, products: ProductTable,
                 preprocess_cfg: PreprocessCfg, min_score: float = 0.0, calibration: NoMatchRule | None = None,
                 manifest: Manifest | None = None, root: Path | None = None,
                 text_encoder: TextEncoder | None = None, text_index: VectorIndex | None = None,
                 text_info: TextInfo | None = None, negatives: np.ndarray | None = None):
        self.encoder, self.index, self.products = encoder, index, products
        # scenes with no product (the calibrated rule's reserved class): a few hundred vectors, held in memory
        self.negatives = None if negatives is None else unit(negatives)
        if calibration is not None and calibration.negatives and self.negatives is None:
            raise BundleError(f"calibration uses negatives ({calibration.negatives}) but none were given")
        self.text_encoder, self.text_index = text_encoder, text_index
        # one vector per product: small, held in memory so every product's text score is exact
        self._text_vectors = None if text_index is None else unit(np.asarray(
            text_index.index.get(np.arange(len(text_index), dtype=np.uint64)), dtype=np.float32))
        self.text_info = text_info or (manifest.text if manifest is not None else None)
        self.preprocess_cfg, self.min_score, self.manifest = preprocess_cfg, min_score, manifest
        self.calibration = calibration
        self.root = root  # the bundle directory, for thumbnails; None for in-memory searchers
        # each product's score floor, by position: its calibrated one, else the flat min_score
        self._floors = np.full(len(products), min_score, dtype=np.float64)
        if calibration is not None and calibration.product_min_score:
            unknown = sorted(set(calibration.product_min_score) - set(self._position))
            if unknown:
                raise BundleError(f"calibration names product(s) the bundle lacks: {', '.join(unknown[:5])}")
            for pid, floor in calibration.product_min_score.items():
                self._floors[self._position[pid]] = floor

    # The lookups below read every product: built when first needed, not when a kiosk starts (a table read
    # with its key file parses a product's line only when asked for; 100 000 lines take ~1 s).
    @cached_property
    def _position(self) -> dict[str, int]:
        return {p.id: i for i, p in enumerate(self.products.products)}

    @cached_property
    def _exact(self) -> dict[str, int]:
        """A query that is a product's id or name puts that product first."""
        exact: dict[str, int] = {}
        for pos, p in enumerate(self.products.products):
            exact.setdefault(p.name.strip().casefold(), pos)
        for pos, p in enumerate(self.products.products):
            exact[p.id.strip().casefold()] = pos  # an id wins over another product's name
        return exact

    @classmethod
    def from_bundle(cls, path: str | Path | Bundle, *, verify: bool = True, threads: int | None = None,
                    trusted_key: str | Path | None = None) -> "Searcher":
        """A searcher for a bundle folder, or for a `Bundle` already opened (its manifest read
        and its signature checked by `Bundle.open`: `trusted_key` is then not read again);
        `verify` checks every file's checksum first, but for files a full check passed on before and
        that have not changed since (core/checked.py). `threads`: None runs the models at the count
        install timed fastest on this device (core/threads.py), else DEFAULT_THREADS."""
        bundle = path if isinstance(path, Bundle) else Bundle.open(path, verify=False, trusted_key=trusted_key)
        if verify:  # files unchanged since a full check passed on them are not hashed again (core/checked.py)
            bundle.verify(reuse_check=True)
        m = bundle.manifest
        if threads is None:
            threads = recorded_threads(bundle.model_sha256())
        encoder = OnnxEncoder(bundle.path(m.model.file), input_name=m.model.input,
                              output_name=m.model.output, threads=threads)
        encoder.check_fits(3, *m.preprocess.size, m.model.embed_dim, str(bundle.root / "manifest.json"))
        index = open_index(m.index, bundle.path)
        segments = [index] if isinstance(index, VectorIndex) else [index.base, index.delta]
        for name, segment in zip((m.index.file, m.index.delta and m.index.delta.file), segments):
            if segment.ndim != m.model.embed_dim and len(segment):
                raise BundleError(f"{bundle.path(name)}: index vectors have {segment.ndim} dimensions, "
                                  f"the model's embeddings {m.model.embed_dim}")
        products = bundle.product_table()
        text_encoder = text_index = None
        if m.text is not None:
            text_encoder = TextEncoder(bundle.path(m.text.file), bundle.path(m.text.tokenizer), input_name=m.text.input,
                                       output_name=m.text.output, context_length=m.text.context_length,
                                       threads=threads, trim=m.text.trim_padding)
            if text_encoder.embed_dim not in (-1, m.model.embed_dim):
                raise BundleError(f"{bundle.path(m.text.file)}: text embedding has {text_encoder.embed_dim} "
                                  f"dimensions, the image index {m.model.embed_dim}")
            if m.text.index:
                info = IndexInfo(file=m.text.index, dtype="f32", metric="cos", count=len(products))
                text_index = VectorIndex.open(bundle.path(m.text.index), info)
        negatives = None
        if m.calibration is not None and m.calibration.negatives:
            negatives = _load_negatives(bundle.path(m.calibration.negatives), m.model.embed_dim)
        try:
            return cls(encoder=encoder, index=index, products=products, preprocess_cfg=m.preprocess,
                       min_score=m.min_score, calibration=m.calibration, manifest=m, root=bundle.root,
                       text_encoder=text_encoder, text_index=text_index, negatives=negatives)
        except BundleError as e:
            raise BundleError(f"{bundle.root / 'manifest.json'}: {e}") from None

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        batch = np.stack([preprocess(im, self.preprocess_cfg) for im in images])
        return self.encoder.embed(batch)

    def accepts(self, position: int, best: float, margin: float, min_score: float | None = None,
                negative: float = float("-inf")) -> bool:
        """Whether a query whose top product (by position) scored `best`, `margin`
        ahead of the second, and whose nearest no-product scene scored `negative`,
        is answered. An explicit `min_score` is a flat cut-off that replaces the
        bundle's calibrated rule."""
        if min_score is not None:
            return best >= min_score
        if self.calibration is None:
            return best >= self.min_score
        cal = self.calibration
        if cal.negative_margin is not None and best - negative < cal.negative_margin:
            return False
        return best >= self._floors[position] and margin >= cal.min_margin

    def negative_score(self, vector: np.ndarray) -> float:
        """The query's score against its nearest no-product scene (-inf without negatives)."""
        if self.negatives is None or not len(self.negatives):
            return float("-inf")
        return float((self.negatives @ unit(vector[None])[0]).max())

    def answers(self, result: SearchResult) -> bool:
        """Whether the bundle's own rule would answer a result that was searched
        with an explicit cut-off (evaluation searches with RANK_ALL to rank everything)."""
        if not result.hits:
            return False
        return self.accepts(self._position[result.hits[0].id], result.best_score, result.margin,
                            negative=result.negative_score)

    @property
    def has_text(self) -> bool:
        return self.text_encoder is not None

    def _rank(self, vector: np.ndarray, want: int, allow: Filter | None) -> list[tuple[int, float]]:
        """The best `want` products (position, score) by the image index that pass `allow`."""
        total = len(self.products)
        n = want * FETCH_GROWTH if allow else want
        while True:
            n = min(n, total)
            keys, scores = self.index.search(vector[None, :], n * self.products.max_images)
            ranked: list[tuple[int, float]] = []
            seen: set[int] = set()
            for key, score in zip(keys[0], scores[0]):
                if key < 0:
                    break
                pos = int(self.products.key_to_product[key])
                if pos in seen:
                    continue
                seen.add(pos)
                if not allow or allow.allows(self.products.products[pos]):
                    ranked.append((pos, float(score)))
                    if len(ranked) == want:
                        return ranked
            if n >= total:
                return ranked
            n *= FETCH_GROWTH

    def _rank_words(self, vector: np.ndarray, want: int, allow: Filter | None) -> list[tuple[int, float]]:
        """A text query: (1 - w) * image-index score + w * product-text score, w from the manifest.

        Exact: the product-text scores are computed for every product (one
        vector each); image candidates are fetched until no product outside
        them can beat the k-th (its image score is at most the lowest fetched)."""
        w = self.text_info.product_text_weight if self.text_info else 0.0
        if w == 0 or self._text_vectors is None:
            return self._rank(vector, want, allow)
        words = self._text_vectors @ unit(vector[None])[0]
        total = len(self.products)
        n = want * FETCH_GROWTH if allow else want
        allowed = None
        while True:
            n = min(n, total)
            image = self._rank(vector, n, None)
            ranked = sorted(((pos, (1 - w) * score + w * float(words[pos])) for pos, score in image
                             if not allow or allow.allows(self.products.products[pos])), key=lambda x: (-x[1], x[0]))
            if n >= total:
                return ranked[:want]
            if allowed is None:
                allowed = np.fromiter((not allow or allow.allows(p) for p in self.products.products), bool, total)
            rest = allowed.copy()
            rest[[pos for pos, _ in image]] = False
            bound = (1 - w) * image[-1][1] + w * float(words[rest].max()) if rest.any() else float("-inf")
            if len(ranked) >= want and ranked[want - 1][1] >= bound:
                return ranked[:want]
            n *= FETCH_GROWTH

    def _search(self, vector: np.ndarray, q: QueryParams, *, words: bool = False, calibrated: bool = True,
                exact: int | None = None) -> tuple[list[SearchHit], float, float, float, Short | None, str | None]:
        k, min_score, allow = q.k, q.min_score, q.filter
        # two products at least: the margin needs the runner-up
        want = max(k, 2)
        rank = self._rank_words if words else self._rank
        ranked = rank(vector, want, allow)
        if exact is not None and (not allow or allow.allows(self.products.products[exact])):
            found = dict(ranked)
            if exact not in found:  # rare: its own score, from a ranking of the whole catalog
                found = dict(rank(vector, len(self.products), None))
            ranked = [(exact, found[exact])] + [r for r in ranked if r[0] != exact][:want - 1]
        else:
            exact = None
        negative = self.negative_score(vector) if calibrated else float("-inf")
        # fewer than `want` ranked: every product that passes the filter (or the whole catalog) is in
        exhausted = Short.FILTER if allow else Short.CATALOG
        if not ranked:
            return [], float("-inf"), float("inf"), negative, exhausted, None
        best, top = ranked[0][1], self.products.products[ranked[0][0]].id
        margin = best - ranked[1][1] if len(ranked) > 1 else float("inf")
        if not calibrated and min_score is None:
            min_score = RANK_ALL  # the rule was fitted on photos: words are answered, ranked
        if exact is None and not self.accepts(ranked[0][0], best, margin, min_score, negative):
            return [], best, margin, negative, Short.NO_MATCH, top
        threshold = self.min_score if min_score is None else min_score
        hits, short = [], None
        for rank_no, (pos, score) in enumerate(ranked[:k]):
            if rank_no > 0 and score < threshold and pos != exact:
                short = Short.BELOW  # scores are sorted: nothing further can pass
                break
            p = self.products.products[pos]
            hits.append(SearchHit(id=p.id, name=p.name, score=score, price=p.price, category=p.category, product=p,
                                  exact=pos == exact))
        if short is None and len(hits) < k:
            short = exhausted
        return hits, best, margin, negative, short, top

    def search_vector(self, vector: np.ndarray, k: int = DEFAULT_K, min_score: float | None = None,
                      filter: Filter | None = None) -> tuple[list[SearchHit], float]:
        """Best products for one embedding; several images of a product count once.
        Empty when the query is answered "no match" (see `accepts`)."""
        hits, best, _, _, _, _ = self._search(vector, QueryParams(k, min_score, filter=filter))
        return hits, best

    def _need_text(self) -> TextEncoder:
        if self.text_encoder is None:
            name = self.root if self.root is not None else "this bundle"
            raise TextQueryError(f"{name} has no text model; export it with --with-text")
        return self.text_encoder

    def search_text(self, text: str, k: int = DEFAULT_K, min_score: float | None = None,
                    filter: Filter | None = None, exact_lookup: bool = True) -> SearchResult:
        """Products for words. The calibrated "no match" rule was fitted on photos, so words are
        always answered (ranked) unless `min_score` is given; an exact id or name comes first
        (`exact_lookup=False` ranks by the embeddings alone, as benchmarks measure them)."""
        q = QueryParams(k, min_score, filter=filter)
        encoder = self._need_text()
        t0 = time.perf_counter()
        if not text or not text.strip():
            raise TextQueryError("the text query is empty")
        vector = encoder.embed([text])[0]
        t1 = time.perf_counter()
        hits, best, margin, _, short, top = self._search(
            vector, q, words=True, calibrated=False,
            exact=self._exact.get(text.strip().casefold()) if exact_lookup else None)
        t2 = time.perf_counter()
        return SearchResult(hits=hits, timings_ms={"embed": (t1 - t0) * 1e3, "search": (t2 - t1) * 1e3},
                            best_score=best, margin=margin, short=short, best_id=top)

    def fuse(self, image_vector: np.ndarray, text_vector: np.ndarray, alpha: float | None = None) -> np.ndarray:
        """normalize(alpha * image + (1 - alpha) * text); alpha defaults to the bundle's."""
        return self._fuse(image_vector, text_vector, QueryParams(alpha=alpha).alpha)

    def _fuse(self, image_vector: np.ndarray, text_vector: np.ndarray, alpha: float | None) -> np.ndarray:
        if alpha is None:
            alpha = self.text_info.fusion_alpha if self.text_info else DEFAULT_FUSION_ALPHA
        z = alpha * image_vector + (1 - alpha) * text_vector
        return z / max(float(np.linalg.norm(z)), 1e-12)

    def search_image(self, image: np.ndarray | str | Path, k: int = DEFAULT_K, min_score: float | None = None,
                     filter: Filter | None = None, text: str | None = None, alpha: float | None = None) -> SearchResult:
        """Products for a photo; with `text`, for the photo steered by words (see `fuse`)."""
        q = QueryParams(k, min_score, alpha, filter)
        timings: dict[str, float] = {}
        if text is not None:
            self._need_text()
            if not text.strip():
                raise TextQueryError("the text query is empty")
        t0 = time.perf_counter()
        if not isinstance(image, np.ndarray):
            image = load_image(image)
            timings["decode"] = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        batch = preprocess(image, self.preprocess_cfg)[None]
        t2 = time.perf_counter()
        vector = self.encoder.embed(batch)[0]
        if text is not None:
            vector = self._fuse(vector, self.text_encoder.embed([text])[0], q.alpha)
        t3 = time.perf_counter()
        hits, best, margin, negative, short, top = self._search(vector, q, calibrated=text is None)
        t4 = time.perf_counter()
        timings.update(preprocess=(t2 - t1) * 1e3, embed=(t3 - t2) * 1e3, search=(t4 - t3) * 1e3)
        return SearchResult(hits=hits, timings_ms=timings, best_score=best, margin=margin, negative_score=negative,
                            short=short, best_id=top)


def _load_negatives(path: Path, dim: int) -> np.ndarray:
    """The calibration's no-product scenes: an N x dim float .npy file, read without pickles."""
    try:
        v = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: cannot read the negatives ({e})") from None
    if v.ndim != 2 or v.shape[1] != dim or not np.issubdtype(v.dtype, np.floating) or not np.isfinite(v).all():
        raise BundleError(f"{path}: negatives must be finite N x {dim} floats, got {v.dtype} {v.shape}")
    return v.astype(np.float32)
