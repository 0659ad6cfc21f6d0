"""Searching a bundle: photo in, ranked products out.

`Searcher` is built from an encoder, an index and a product table (so tests
can hand it fakes); `Searcher.from_bundle` wires the real ones from a bundle.
Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle
from .encoder import DEFAULT_THREADS, Encoder, OnnxEncoder
from .images import load_image
from .index import VectorIndex
from .errors import BundleError
from .manifest import Manifest, NoMatchRule, PreprocessCfg
from .preprocess import preprocess
from .products import Product, ProductTable


@dataclass(frozen=True)
class SearchHit:
    id: str
    name: str
    score: float
    price: float | None
    category: str | None
    product: Product = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "score": round(self.score, 4),
                "price": self.price, "category": self.category}


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    timings_ms: dict[str, float]
    best_score: float  # the top product's score, even when it fell below min_score
    margin: float = float("inf")  # best_score minus the second product's score (inf with one product)

    @property
    def no_match(self) -> bool:
        return not self.hits


class Searcher:
    def __init__(self, *, encoder: Encoder, index: VectorIndex, products: ProductTable,
                 preprocess_cfg: PreprocessCfg, min_score: float = 0.0, calibration: NoMatchRule | None = None,
                 manifest: Manifest | None = None, root: Path | None = None):
        self.encoder, self.index, self.products = encoder, index, products
        self.preprocess_cfg, self.min_score, self.manifest = preprocess_cfg, min_score, manifest
        self.calibration = calibration
        self.root = root  # the bundle directory, for thumbnails; None for in-memory searchers
        # each product's score floor, by position: its calibrated one, else the flat min_score
        self._floors = np.full(len(products), min_score, dtype=np.float64)
        self._position = {p.id: i for i, p in enumerate(products.products)}
        if calibration is not None:
            unknown = sorted(set(calibration.product_min_score) - set(self._position))
            if unknown:
                raise BundleError(f"calibration names product(s) the bundle lacks: {', '.join(unknown[:5])}")
            for pid, floor in calibration.product_min_score.items():
                self._floors[self._position[pid]] = floor

    @classmethod
    def from_bundle(cls, path: str | Path, *, verify: bool = True, threads: int = DEFAULT_THREADS,
                    trusted_key: str | Path | None = None) -> "Searcher":
        bundle = Bundle.open(path, verify=verify, trusted_key=trusted_key)
        m = bundle.manifest
        encoder = OnnxEncoder(bundle.path(m.model.file), input_name=m.model.input,
                              output_name=m.model.output, threads=threads)
        rescore = bundle.path(m.index.rescore_file) if m.index.rescore_file else None
        index = VectorIndex.open(bundle.path(m.index.file), m.index, rescore)
        if index.ndim != m.model.embed_dim:
            raise BundleError(f"{bundle.path(m.index.file)}: index vectors have {index.ndim} dimensions, "
                              f"the model's embeddings {m.model.embed_dim}")
        products = ProductTable.load(bundle.path(m.products_file), key_count=m.index.count)
        try:
            return cls(encoder=encoder, index=index, products=products, preprocess_cfg=m.preprocess,
                       min_score=m.min_score, calibration=m.calibration, manifest=m, root=bundle.root)
        except BundleError as e:
            raise BundleError(f"{bundle.root / 'manifest.json'}: {e}") from None

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        batch = np.stack([preprocess(im, self.preprocess_cfg) for im in images])
        return self.encoder.embed(batch)

    def accepts(self, position: int, best: float, margin: float, min_score: float | None = None) -> bool:
        """Whether a query whose top product (by position) scored `best`, `margin`
        ahead of the second, is answered. An explicit `min_score` is a flat
        cut-off that replaces the bundle's calibrated rule."""
        if min_score is not None:
            return best >= min_score
        if self.calibration is None:
            return best >= self.min_score
        return best >= self._floors[position] and margin >= self.calibration.min_margin

    def answers(self, result: SearchResult) -> bool:
        """Whether the bundle's own rule would answer a result that was searched
        with an explicit cut-off (evaluation searches with -inf to rank everything)."""
        if not result.hits:
            return False
        return self.accepts(self._position[result.hits[0].id], result.best_score, result.margin)

    def _search(self, vector: np.ndarray, k: int, min_score: float | None) -> tuple[list[SearchHit], float, float]:
        # two products at least: the margin needs the runner-up
        want = max(k, 2)
        keys, scores = self.index.search(vector[None, :], want * self.products.max_images)
        ranked: list[tuple[int, float]] = []
        seen: set[int] = set()
        for key, score in zip(keys[0], scores[0]):
            if key < 0:
                break
            pos = int(self.products.key_to_product[key])
            if pos not in seen:
                seen.add(pos)
                ranked.append((pos, float(score)))
                if len(ranked) == want:
                    break
        if not ranked:
            return [], float("-inf"), float("inf")
        best = ranked[0][1]
        margin = best - ranked[1][1] if len(ranked) > 1 else float("inf")
        if not self.accepts(ranked[0][0], best, margin, min_score):
            return [], best, margin
        threshold = self.min_score if min_score is None else min_score
        hits = []
        for rank, (pos, score) in enumerate(ranked[:k]):
            if rank > 0 and score < threshold:
                break  # scores are sorted: nothing further can pass
            p = self.products.products[pos]
            hits.append(SearchHit(id=p.id, name=p.name, score=score, price=p.price, category=p.category, product=p))
        return hits, best, margin

    def search_vector(self, vector: np.ndarray, k: int = 5, min_score: float | None = None) -> tuple[list[SearchHit], float]:
        """Best products for one embedding; several images of a product count once.
        Empty when the query is answered "no match" (see `accepts`)."""
        hits, best, _ = self._search(vector, k, min_score)
        return hits, best

    def search_image(self, image: np.ndarray | str | Path, k: int = 5, min_score: float | None = None) -> SearchResult:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if not isinstance(image, np.ndarray):
            image = load_image(image)
            timings["decode"] = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        batch = preprocess(image, self.preprocess_cfg)[None]
        t2 = time.perf_counter()
        vector = self.encoder.embed(batch)[0]
        t3 = time.perf_counter()
        hits, best, margin = self._search(vector, k, min_score)
        t4 = time.perf_counter()
        timings.update(preprocess=(t2 - t1) * 1e3, embed=(t3 - t2) * 1e3, search=(t4 - t3) * 1e3)
        return SearchResult(hits=hits, timings_ms=timings, best_score=best, margin=margin)
