"""Messages that worker threads post to the kiosk app.

Workers never touch widgets: they post one of these (post_message is
thread-safe) and the app's handlers update the screen.
"""

from __future__ import annotations

import numpy as np
from textual.message import Message

from edge_search.kiosk.frames import SourceStatus
from edge_search.kiosk.quality import Verdict
from edge_search.kiosk.loop import BundleInfo, KioskSearcher, Lookup
from edge_search.core.search import SearchResult


class FrameReady(Message):
    """A downscaled frame for the preview, with the quality check's verdict on it;
    `still` marks a folder's photo (its rate is read in seconds per image)."""

    def __init__(self, image: np.ndarray, index: int, verdict: Verdict | None, fps: float, still: bool = False):
        super().__init__()
        self.image, self.index, self.verdict, self.fps, self.still = image, index, verdict, fps, still


class LookupReady(Message):
    """A finished search; `refresh` marks a re-search of the shown frame (k changed)."""

    def __init__(self, lookup: Lookup, thumbs: list[np.ndarray | None], refresh: bool = False):
        super().__init__()
        self.lookup, self.thumbs, self.refresh = lookup, thumbs, refresh


class SourceChanged(Message):
    def __init__(self, status: SourceStatus):
        super().__init__()
        self.status = status


class SearcherReady(Message):
    def __init__(self, searcher: KioskSearcher, info: BundleInfo):
        super().__init__()
        self.searcher, self.info = searcher, info


class SearcherFailed(Message):
    def __init__(self, message: str):
        super().__init__()
        self.message = message


class Fault(Message):
    """Something failed inside the frame loop; the loop goes on."""

    def __init__(self, message: str):
        super().__init__()
        self.message = message


class Finished(Message):
    """The frame loop stopped by itself (--max-frames reached)."""


class WordsReady(Message):
    """A finished search by typed words (with the frozen photo when `fused`)."""

    def __init__(self, query: str, fused: bool, result: SearchResult, thumbs: list[np.ndarray | None], epoch: int):
        super().__init__()
        self.query, self.fused, self.result, self.thumbs, self.epoch = query, fused, result, thumbs, epoch


class WordsFailed(Message):
    """Typed words could not be searched (no text model, a bad filter): said on screen."""

    def __init__(self, message: str):
        super().__init__()
        self.message = message


class BundleChanged(Message):
    """The frame loop switched to a new bundle (`ok`), or a new one failed to load and the old one stays."""

    def __init__(self, text: str, ok: bool, info: BundleInfo | None = None):
        super().__init__()
        self.text, self.ok, self.info = text, ok, info
