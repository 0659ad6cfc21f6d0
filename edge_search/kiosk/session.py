"""Wiring one kiosk run: the bundle, the frame source, the frame saver, the
bundle watcher and the kiosk loop, put together in one place.

`open_session` is how `edge-search run` builds the kiosk, on the screen and
with `--no-tui` alike. The bundle's manifest is read (and its signature
checked) once, up front, so a wrong path or an untrusted bundle fails in one
line before any screen; `Session.load` then verifies that same bundle's
checksums and loads the model (the screen does it in a worker, so a bundle
that fails is shown there). The filter is parsed once; its fields are
checked against the products when they are loaded. `RunTally` counts a
headless run for its closing line.
Must not import torch, open_clip, onnx or textual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from edge_search.core.bundle import Bundle
from edge_search.core.filters import Filter
from edge_search.core.search import DEFAULT_K, QueryParams, Searcher
from edge_search.kiosk.frames import FrameSource, open_source
from edge_search.kiosk.enhance import DEFAULT_RETRIES
from edge_search.kiosk.loop import (DEFAULT_RETRY_RULE, MAX_K, RETRIES_OFF, BundleWatcher, Event, FrameSaver, FrameSeen,
                                    KioskLoop, KioskSearcher, Lookup)
from edge_search.kiosk.quality import QualityConfig


@dataclass
class Session:
    """Everything one kiosk run uses. Give the loop a ready searcher (tests pass
    fakes) or give a `loader` that opens the bundle later (`load`)."""

    source: FrameSource
    loop: KioskLoop
    loader: Callable[[], KioskSearcher] | None = None
    saver: FrameSaver | None = None
    watcher: BundleWatcher | None = None

    def __post_init__(self) -> None:
        if (self.loop.searcher is None) == (self.loader is None):
            raise ValueError("give exactly one of a loop with a searcher (ready) or a loader (opened later)")

    def load(self) -> KioskSearcher:
        """The loop's searcher, opening the bundle first if it is not open yet (slow: a worker's job)."""
        if self.loop.searcher is None:
            self.loop.attach(self.loader())
        return self.loop.searcher


def open_session(bundle: str | Path, *, source: str | int = "0", k: int = DEFAULT_K,
                 min_score: float | None = None, filter: Sequence[str] = (), save_frames: str | Path | None = None,
                 trusted_key: str | Path | None = None, realtime: bool = True,
                 quality: QualityConfig | None = None, retries: str = DEFAULT_RETRY_RULE,
                 confirm: bool = False) -> Session:
    """The kiosk for `bundle` and `source`, not started and not yet searching (`Session.load`).

    Fails here, in one line, for a bad setting, a missing or untrusted bundle,
    a malformed filter, a missing source file or an unusable --save-frames
    folder. `realtime=False` (headless runs) hands over every frame of a file
    or folder, so the output does not depend on this machine's speed.
    `retries`: the loop's retry rule (RETRY_RULES), or RETRIES_OFF; `confirm`: KioskLoop's."""
    QueryParams(k=k, min_score=min_score, max_k=MAX_K)  # before anything is opened
    opened = Bundle.open(Path(bundle), verify=False, trusted_key=trusted_key)
    flt = Filter.parse(filter) if filter else None  # its fields are checked once the products are loaded
    capture = open_source(source, realtime=realtime)
    saver = FrameSaver(save_frames) if save_frames else None
    # a new active bundle (DIR/current switched by install) is loaded aside and swapped in between frames
    watcher = BundleWatcher(bundle, lambda path: Searcher.from_bundle(path, trusted_key=trusted_key))
    off = retries == RETRIES_OFF
    loop = KioskLoop(None, k=k, min_score=min_score, quality=quality, filter=flt,
                     retries=() if off else DEFAULT_RETRIES, retry_rule=DEFAULT_RETRY_RULE if off else retries,
                     confirm=confirm)
    return Session(source=capture, loop=loop, loader=lambda: Searcher.from_bundle(opened), saver=saver,
                   watcher=watcher)


@dataclass
class RunTally:
    """What a run did, for the line a headless run ends with."""

    clock: Callable[[], float] = time.monotonic
    frames: int = 0
    searched: int = 0
    answered: int = 0
    no_match: int = 0
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def add(self, event: Event) -> None:
        if isinstance(event, FrameSeen):
            self.frames += 1
        elif isinstance(event, Lookup):
            self.searched += 1
            if event.result.no_match:
                self.no_match += 1
            else:
                self.answered += 1

    @property
    def text(self) -> str:
        elapsed = self.clock() - self.started
        return (f"{self.frames} frame{'s' * (self.frames != 1)}, {self.searched} searched, "
                f"{self.answered} answered, {self.no_match} no match, {elapsed:.1f} s")
