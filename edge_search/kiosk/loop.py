"""The kiosk loop: frame -> quality check -> search (-> retry) -> lookup.

Owns the per-frame loop shared by `edge-search run --no-tui` and the TUI's
worker thread: which frames are searched, the low-confidence retry with an
enhancement, the frame rate, the JSON shape of a lookup and `--save-frames`.
It returns values (an iterator of events); printing belongs to the CLI,
widgets to the TUI. Must not import torch, open_clip, onnx or textual.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from edge_search.kiosk.enhance import CENTRE_CROP, DEFAULT_RETRIES, ENHANCEMENTS, ORIGINAL
from edge_search.errors import EdgeSearchError
from edge_search.files import atomic_write_bytes, ensure_folder
from edge_search.core.filters import Filter
from edge_search.kiosk.frames import Frame, FrameSource, SourceError, SourceStatus, wait_until_open
from edge_search.kiosk.quality import QualityCheck, QualityConfig, Verdict
from edge_search.core.images import encode_jpeg
from edge_search.core.query import RANK_ALL
from edge_search.core.search import DEFAULT_K, QueryParams, SearchResult, Short

MAX_K = 20  # the most products the kiosk shows (on screen, or per JSON line)

# When the whole frame is refused, what a retry (an enhanced copy of it) may answer:
AGREE = "agree"  # only the product the whole frame ranked first: the retry confirms what the frame showed
ANY = "any"  # whatever passes the rule: each retry is one more chance to name some product, a wrong one too
RETRY_RULES = (AGREE, ANY)
RETRIES_OFF = "off"  # `edge-search run --retries off`: the whole frame only
DEFAULT_RETRY_RULE = AGREE  # bench/retries.py on the dev photos: as many right answers as ANY, fewer wrong
CONFIRM = "confirm"  # `tried`'s name for the centre crop searched to confirm an answer (KioskLoop confirm=True)


class KioskSearcher(Protocol):
    """What the kiosk needs from a searcher; `search.Searcher` is one, tests pass fakes."""

    min_score: float

    def search_image(self, image: np.ndarray, k: int = DEFAULT_K, min_score: float | None = None) -> SearchResult: ...

    # the TUI's words box (`/`) also calls search_text(words, k=, filter=) and
    # search_image(image, k=, text=, filter=); a searcher without them says so on screen


@dataclass(frozen=True)
class BundleInfo:
    """The bundle facts the status line shows."""

    name: str
    product_count: int
    created: str

    @classmethod
    def of(cls, searcher: Any) -> "BundleInfo":
        m = getattr(searcher, "manifest", None)
        if m is None:
            return cls(name="(in memory)", product_count=0, created="")
        return cls(name=m.name, product_count=m.product_count, created=m.created)


@dataclass(frozen=True)
class Lookup:
    """One search of one frame, as shown: the result of the variant that was kept."""

    frame: Frame
    result: SearchResult
    variant: str  # "original" or an ENHANCEMENTS name
    tried: tuple[str, ...]  # every variant searched, in order
    k: int
    min_score: float
    epoch: int  # the kiosk loop's epoch when the search began; older epochs are stale
    timings_ms: dict[str, float]  # quality, preprocess, embed, search (summed over tries), total

    def to_json(self) -> dict[str, Any]:
        """One line of `edge-search run --no-tui`; `results` as in `edge-search search --json`."""
        stamp = dt.datetime.fromtimestamp(self.frame.wall, dt.timezone.utc)
        return {
            "frame": self.frame.index,
            "source": self.frame.source or None,  # the image of a folder, the video file, the camera
            "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "results": [h.to_json() for h in self.result.hits],
            "no_match": self.result.no_match,
            "best_score": round(self.result.best_score, 4) if np.isfinite(self.result.best_score) else None,
            "variant": self.variant,
            "tried": list(self.tried),
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }


@dataclass(frozen=True)
class FrameSeen:
    """A frame taken from the source, with the quality check's verdict (None while paused)."""

    frame: Frame
    verdict: Verdict | None
    fps: float


class RateMeter:
    """Frames per second over the last `window` seconds of capture times."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self._times: deque[float] = deque()

    def tick(self, t: float) -> float:
        self._times.append(t)
        while len(self._times) > 2 and t - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def reset(self) -> None:
        self._times.clear()


class KioskLoop:
    """QualityCheck and search for one stream of frames, called from one thread.

    The one owner of the kiosk's settings: k, the filter, pause and the
    epoch live here; the screen reads and sets them, never keeps a copy.
    Other threads (the UI) change k, pause, or ask for a reset; those take
    effect between frames. Every change that makes a search in flight
    out of date bumps `epoch`, so its result can be recognised and dropped.
    `searcher` may be None while the bundle opens (`attach` gives it later);
    until then frames are only seen.
    """

    def __init__(self, searcher: KioskSearcher | None, *, k: int = DEFAULT_K, min_score: float | None = None,
                 quality: QualityConfig | None = None, retries: tuple[str, ...] = DEFAULT_RETRIES,
                 filter: Filter | None = None, retry_rule: str = DEFAULT_RETRY_RULE, confirm: bool = False):
        unknown = [r for r in retries if r not in ENHANCEMENTS]
        if unknown:
            raise ValueError(f"unknown enhancements {unknown}; known: {sorted(ENHANCEMENTS)}")
        if retry_rule not in RETRY_RULES:
            raise ValueError(f"unknown retry rule {retry_rule!r}; known: {', '.join(RETRY_RULES)}")
        params = QueryParams(k=k, min_score=min_score, filter=filter or None, max_k=MAX_K)
        self._explicit_min_score = params.min_score
        self._k = params.k
        self._filter = params.filter
        self.searcher: KioskSearcher | None = None
        self.min_score = 0.0 if min_score is None else float(min_score)
        self.quality = QualityCheck(quality)
        self.retries = retries
        self.retry_rule = retry_rule
        # an answer stands only when the centre of the frame ranks the same product first: one more embed per
        # answer, far fewer wrong names and fewer right ones (bench/retries.py); off by default
        self.confirm = confirm
        self.epoch = 0
        self.paused = False
        self._reset_wanted = False
        if searcher is not None:
            self.attach(searcher)

    def attach(self, searcher: KioskSearcher) -> None:
        """Search with `searcher` from now on (the first one, once the bundle has opened);
        a filter naming a field its products lack is refused (FilterError)."""
        products = getattr(searcher, "products", None)
        if self._filter and products is not None:
            self._filter.check_fields(products)
        self.searcher = searcher
        if self._explicit_min_score is None:
            self.min_score = searcher.min_score

    @property
    def filter(self) -> Filter | None:
        return self._filter

    @filter.setter
    def filter(self, value: Filter | None) -> None:
        """Catalog filter for every search (TUI `/` or `run --filter`); searches in flight are dropped."""
        self._filter = QueryParams(filter=value or None).filter
        self.epoch += 1

    @property
    def k(self) -> int:
        return self._k

    @k.setter
    def k(self, value: int) -> None:
        self._k = QueryParams(k=value, max_k=MAX_K).k
        self.epoch += 1

    def swap(self, searcher: KioskSearcher) -> None:
        """Use another (fully loaded) searcher from the next frame on; called between frames."""
        self.searcher = searcher
        if self._explicit_min_score is None:
            self.min_score = searcher.min_score
        self.request_reset()  # the old bundle's answers are out of date

    def request_reset(self) -> None:
        """From any thread: forget the quality check's memory before the next frame; drop searches in flight."""
        self.epoch += 1
        self._reset_wanted = True

    def offer(self, frame: Frame) -> tuple[Verdict | None, Lookup | None]:
        """The quality's verdict on a frame and, if it passed, the lookup."""
        if self._reset_wanted:
            self._reset_wanted = False
            self.quality.reset()
        if self.paused or self.searcher is None:
            return None, None
        t0 = time.perf_counter()
        verdict = self.quality.check(frame.image, still=frame.still)
        quality_ms = (time.perf_counter() - t0) * 1e3
        if not verdict.search:
            return verdict, None
        return verdict, self.lookup(frame, quality_ms=quality_ms)

    def lookup(self, frame: Frame, *, quality_ms: float = 0.0) -> Lookup:
        """Search a frame now (no quality), retrying enhancements while nothing passes min_score."""
        epoch, k = self.epoch, self.k
        t0 = time.perf_counter()
        totals = {"quality": quality_ms, "enhance": 0.0, "preprocess": 0.0, "embed": 0.0, "search": 0.0}
        variant, tried = ORIGINAL, [ORIGINAL]
        result = self._search(frame.image, k, totals)
        first = result.best_id
        centre: str | None = None  # the product the frame's centre ranks first, once it has been searched
        for name in self.retries if result.no_match else ():
            image = self._enhanced(name, frame.image, totals)
            tried.append(name)
            retry = self._search(image, k, totals)
            if name == CENTRE_CROP:
                centre = retry.best_id
            if not retry.no_match and (self.retry_rule == ANY or retry.hits[0].id == first):
                result, variant = retry, name
                break
            if retry.no_match and retry.best_score > result.best_score:  # the no-match shown: how close we came
                result = retry
        # an answer from the centre crop is the centre's own; any other is checked against it, searched
        # here unless a retry already did
        if self.confirm and not result.no_match and variant != CENTRE_CROP:
            tried.append(CONFIRM)
            if centre is None:
                centre = self._search(self._enhanced(CENTRE_CROP, frame.image, totals), 1, totals,
                                      min_score=RANK_ALL).best_id
            if centre != result.hits[0].id:
                result = replace(result, hits=[], short=Short.NO_MATCH)
        totals["total"] = quality_ms + (time.perf_counter() - t0) * 1e3
        return Lookup(frame=frame, result=result, variant=variant, tried=tuple(tried), k=k,
                      min_score=self.min_score, epoch=epoch, timings_ms=totals)

    @staticmethod
    def _enhanced(name: str, image: np.ndarray, totals: dict[str, float]) -> np.ndarray:
        t0 = time.perf_counter()
        out = ENHANCEMENTS[name][0](image)
        totals["enhance"] += (time.perf_counter() - t0) * 1e3
        return out

    def _search(self, image: np.ndarray, k: int, totals: dict[str, float], *,
                min_score: float | None = None) -> SearchResult:
        # only a set filter is passed: searchers without filters (fakes) keep working
        extra = {"filter": self._filter} if self._filter else {}
        # None unless --min-score was given (or `min_score`): the bundle's own calibrated rule (floors, margin,
        # no-product scenes) decides, as in `search`; self.min_score is only the score bars' scale
        result = self.searcher.search_image(image, k=k, min_score=self._explicit_min_score if min_score is None
                                            else min_score, **extra)
        for stage in ("preprocess", "embed", "search"):
            totals[stage] += result.timings_ms.get(stage, 0.0)
        return result


class FrameSaver:
    """`--save-frames DIR`: the searched frames as JPEG files, written whole or not at all."""

    def __init__(self, folder: str | Path):
        self.folder = ensure_folder(folder, "--save-frames")
        self.count = 0

    def save(self, lookup: Lookup) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:06d}-frame{lookup.frame.index:06d}.jpg"
        # a FIFO, device or link already at that name is refused, never replaced (files.check_output)
        atomic_write_bytes(path, encode_jpeg(lookup.frame.image, quality=90))
        return path


@dataclass(frozen=True)
class BundleSwapped:
    """The kiosk now searches a new bundle (it was loaded whole before the switch)."""

    path: Path  # the resolved bundle folder
    info: BundleInfo
    searcher: Any = None

    @property
    def text(self) -> str:
        return f"switched to bundle {self.info.name} ({self.info.product_count} products) at {self.path}"


@dataclass(frozen=True)
class BundleSwapFailed:
    """A new bundle appeared but could not be loaded; the old one stays in use."""

    path: Path
    message: str

    @property
    def text(self) -> str:
        return f"new bundle at {self.path} not used, keeping the current one: {self.message}"


class BundleWatcher:
    """Notices a new active bundle behind a path (a `DIR/current` symlink switched by
    `edge-search install`, or a bundle folder replaced by `export --force`) and
    loads it on a thread of its own, so the frame loop never waits.

    `poll()` is cheap and called between frames: at most every `interval_s` it
    compares the resolved folder and its manifest's inode and mtime with what
    is in use; once a load has finished it returns a BundleSwapped (with the new
    searcher) or a BundleSwapFailed. A bundle that failed is not tried again
    until it changes.
    """

    def __init__(self, path: str | Path, loader: Callable[[Path], Any], *, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.path, self.loader, self.interval_s, self.clock = Path(path), loader, interval_s, clock
        self._seen = self._stamp()
        self._next = clock() + interval_s
        self._thread: threading.Thread | None = None
        self._outcome: BundleSwapped | BundleSwapFailed | None = None

    def _stamp(self) -> tuple | None:
        try:
            real = os.path.realpath(self.path)
            st = os.stat(os.path.join(real, "manifest.json"))
        except OSError:
            return None  # mid-switch or gone: keep what runs
        return real, st.st_ino, st.st_mtime_ns, st.st_size

    def _load(self, real: Path) -> None:
        try:
            searcher = self.loader(real)
            self._outcome = BundleSwapped(path=real, info=BundleInfo.of(searcher), searcher=searcher)
        except EdgeSearchError as e:
            self._outcome = BundleSwapFailed(path=real, message=str(e))
        except Exception as e:  # a broken bundle must never stop the kiosk
            self._outcome = BundleSwapFailed(path=real, message=f"{type(e).__name__}: {e}")

    def poll(self) -> BundleSwapped | BundleSwapFailed | None:
        if self._thread is not None:
            if self._thread.is_alive():
                return None
            self._thread, outcome, self._outcome = None, self._outcome, None
            return outcome
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + self.interval_s
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return None
        self._seen = stamp
        self._thread = threading.Thread(target=self._load, args=(Path(stamp[0]),), name="edge-search-bundle-load",
                                        daemon=True)
        self._thread.start()
        return None

    def wait(self, timeout: float = 30.0) -> None:
        """Tests: block until a load in progress has finished."""
        if self._thread is not None:
            self._thread.join(timeout)


Event = FrameSeen | Lookup | SourceStatus | BundleSwapped | BundleSwapFailed


def run_kiosk(source: FrameSource, kiosk_loop: KioskLoop | None, *, max_frames: int | None = None,
              stop: Callable[[], bool] = lambda: False, stop_at_end: bool = True,
              saver: FrameSaver | None = None, poll_s: float = 0.1,
              watcher: BundleWatcher | None = None) -> Iterator[Event]:
    """Take frames from a started source and yield what happened, in order.

    Yields a SourceStatus whenever the source's status changes, a FrameSeen
    for every frame taken, and a Lookup after it when the frame was searched.
    With no kiosk loop, or one without a searcher yet (the bundle is still
    loading, or failed), frames are only seen. Ends after `max_frames` frames, when `stop()` is true, or at
    the end of a file when `stop_at_end`. With a `watcher`, a new bundle that
    has finished loading replaces the kiosk loop's searcher between two frames
    (BundleSwapped); one that failed to load is reported and the old one kept.
    """
    meter = RateMeter()
    seen = 0
    last: SourceStatus | None = None
    while not stop() and (max_frames is None or seen < max_frames):
        if watcher is not None and kiosk_loop is not None and kiosk_loop.searcher is not None:
            change = watcher.poll()
            if isinstance(change, BundleSwapped):
                kiosk_loop.swap(change.searcher)
            if change is not None:
                yield change
        status = source.status()
        if status != last:
            last = status
            if status.state == "live":
                meter.reset()  # the gap while it was away is not a frame rate
            yield status
        frame = source.next_frame(poll_s)
        if frame is None:
            if stop_at_end and status.state in ("ended", "failed"):
                # the last frame may have landed just before the end was noticed
                frame = source.next_frame(0.0)
                if frame is None:
                    return
            else:
                continue
        seen += 1
        fps = meter.tick(frame.captured)
        verdict, lookup = kiosk_loop.offer(frame) if kiosk_loop is not None else (None, None)
        yield FrameSeen(frame, verdict, fps)
        if lookup is not None:
            if saver is not None:
                saver.save(lookup)
            yield lookup


def open_or_fail(source: FrameSource, timeout: float = 20.0) -> SourceStatus:
    """Start a source and wait for it to open; raises SourceError (for headless runs) if it cannot."""
    source.start()
    status = wait_until_open(source, timeout)
    if status.state in ("lost", "failed"):
        source.stop()
        raise SourceError(status.message)
    if status.state == "starting":
        source.stop()
        raise SourceError(f"{source.description}: did not open within {timeout:g} s")
    return status
