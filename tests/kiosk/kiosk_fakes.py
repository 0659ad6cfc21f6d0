"""Fakes for kiosk and TUI tests: a frame source the test feeds by hand and a
searcher that recognises the sample catalog's drawings by their pixels.
No model, no camera, no threads of their own."""

from __future__ import annotations

import threading
import time
from collections import deque

import cv2
import numpy as np

import edge_search  # noqa: F401  (onnxruntime before usearch)
from edge_search.kiosk.frames import Frame, SourceStatus
from edge_search.core.products import Product
from edge_search_export.sample_catalog import PRODUCTS, draw_product
from edge_search.core.search import SearchHit, SearchResult

TIMINGS = {"preprocess": 0.5, "embed": 4.25, "search": 0.125}


def _small(rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(rgb, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


class FakeSearcher:
    """Scores a frame against the first `count` sample products by pixel distance."""

    def __init__(self, count: int = 4, min_score: float = 0.5):
        self.min_score = min_score
        self.products = []
        for i in range(count):
            pid, name, price, category, _, _ = PRODUCTS[i]
            self.products.append(Product(id=pid, name=name, keys=(i,), price=price, category=category,
                                         description=f"{name}, from the fake shelf",
                                         meta={"brand": "Sample Foods", "shelf": f"A{i}"}))
        self.refs = [_small(draw_product(i)) for i in range(count)]
        self.calls: list[int] = []  # k of each call
        self.block: threading.Event | None = None  # when set, every search waits for it
        self.entered = threading.Event()  # set when a search has begun
        self.text_calls: list[tuple] = []  # (words, fused, filter) of each search by words

    def scores(self, image: np.ndarray) -> np.ndarray:
        s = _small(image)
        return np.array([1.0 - np.abs(s - r).mean() / 128.0 for r in self.refs])

    def word_scores(self, text: str) -> np.ndarray:
        """0.9 for products whose name holds one of the words, else 0.1 (less down the list)."""
        words = text.lower().split()
        return np.array([0.9 if any(w in p.name.lower() for w in words) else 0.1 - 0.01 * i
                         for i, p in enumerate(self.products)])

    def _ranked(self, scores, k, threshold, filter) -> list[SearchHit]:
        return [SearchHit(id=p.id, name=p.name, score=float(scores[i]), price=p.price, category=p.category, product=p)
                for i in np.argsort(-scores, kind="stable") for p in [self.products[i]]
                if scores[i] >= threshold and (filter is None or filter.allows(p))][:k]

    def search_image(self, image, k=5, min_score=None, text=None, filter=None) -> SearchResult:
        self.calls.append(k)
        self.entered.set()
        if self.block is not None:
            self.block.wait(10)
        threshold = self.min_score if min_score is None else min_score
        scores = self.scores(image)
        if text is not None:  # photo + words: the kiosk's fused query
            self.text_calls.append((text, True, filter))
            scores, threshold = 0.8 * scores + 0.2 * self.word_scores(text), float("-inf")
        return SearchResult(hits=self._ranked(scores, k, threshold, filter), timings_ms=dict(TIMINGS),
                            best_score=float(scores.max()), best_id=self.products[int(np.argmax(scores))].id)

    def search_text(self, text, k=5, min_score=None, filter=None) -> SearchResult:
        self.text_calls.append((text, False, filter))
        scores = self.word_scores(text)
        return SearchResult(hits=self._ranked(scores, k, float("-inf"), filter), timings_ms=dict(TIMINGS),
                            best_score=float(scores.max()))


class FakeSource:
    """A FrameSource fed by the test: push() frames, set() the status."""

    description = "fake camera"

    def __init__(self):
        self.frames: deque[Frame] = deque()
        self._status = SourceStatus("live", "fake camera")
        self.n = 0
        self.started = self.stopped = self.restarts = 0
        self._asked_when_empty = False  # the last call found nothing: every frame taken was dealt with

    def push(self, image: np.ndarray, times: int = 1) -> None:
        for _ in range(times):
            # a steady 30 fps clock, so frame rates on screen are exact
            self.frames.append(Frame(index=self.n, image=image, captured=self.n / 30.0,
                                     wall=1_700_000_000.0 + self.n / 30.0))
            self.n += 1

    def set(self, state: str, message: str = "", retry_s: float | None = None) -> None:
        self._status = SourceStatus(state, message, retry_s)

    def start(self) -> None:
        self.started += 1

    def stop(self) -> None:
        self.stopped += 1

    def restart(self) -> None:
        self.restarts += 1

    def status(self) -> SourceStatus:
        return self._status

    def next_frame(self, timeout: float) -> Frame | None:
        try:
            frame = self.frames.popleft()
        except IndexError:
            self._asked_when_empty = True
            time.sleep(min(timeout, 0.005))
            return None
        self._asked_when_empty = False
        return frame

    def drained(self) -> bool:
        """True once the loop has asked for another frame after taking every one pushed: it has
        checked, searched and reported them all (run_kiosk asks only when done with the last)."""
        return not self.frames and self._asked_when_empty
