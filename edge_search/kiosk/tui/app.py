"""The kiosk app: preview, results, status line, keys.

Threads: the capture thread (frames.Capture) reads the camera; one Textual
thread worker runs the kiosk loop (quality, search, thumbnails) and posts
messages; only the message handlers below touch widgets. Results whose
epoch is older than the kiosk loop's (k changed, reset) or that arrive while
the view is frozen are dropped. All state comes in through `build_app`, as a
`session.Session`; k, the filter and the pause are the kiosk loop's: the
screen reads and sets them there, and keeps no copy.

`/` opens a box for words (and filters such as `category=Fruit price<2.5`):
Enter searches by the words, or, when a photo is frozen on screen, by the
photo steered by the words; the results stay until space or r. The active
filter is on the status line; `c` clears it.
Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Footer, Input, Static
from textual.worker import get_current_worker

from edge_search.display import printable
from edge_search.kiosk.enhance import ORIGINAL, PHOTO_AND_WORDS, WORDS, describe
from edge_search.errors import EdgeSearchError
from edge_search.core.filters import Filter, split_query
from edge_search.kiosk.frames import SourceStatus
from edge_search.kiosk.loop import MAX_K, BundleInfo, BundleSwapFailed, BundleSwapped, FrameSeen, KioskSearcher, Lookup, run_kiosk
from edge_search.kiosk.session import Session
from edge_search.kiosk.tui.messages import (BundleChanged, Fault, Finished, FrameReady, LookupReady, SearcherFailed, SearcherReady,
                       SourceChanged, WordsFailed, WordsReady)
from edge_search.kiosk.tui.render import rate_text, status_text
from edge_search.kiosk.tui.thumbs import ThumbCache
from edge_search.kiosk.tui.widgets import DetailsScreen, Preview, ResultRow, Results

PREVIEW_MAX = (160, 120)  # pixels sent to the UI thread; the widget scales them to fit


def _small(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = min(PREVIEW_MAX[0] / w, PREVIEW_MAX[1] / h, 1.0)
    if scale == 1.0:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _sentence(s: str) -> str:
    return s[:1].upper() + s[1:]


class KioskApp(App[None]):
    TITLE = "edge-search kiosk"
    CSS = """
    #banner { display: none; height: auto; padding: 0 1; background: $error-muted; color: $text; }
    #banner.shown { display: block; }
    #main { height: 1fr; }
    #left { width: 1fr; }
    #preview { height: 1fr; border: round $primary; border-title-align: left; }
    #quality { height: 1; padding: 0 1; color: $text-muted; }
    #right { width: 1fr; border: round $secondary; }
    #results-title { height: auto; padding: 0 1; text-style: bold; }
    #results { height: 1fr; }
    ResultRow { height: 5; padding: 0 1 1 1; }
    ResultRow:hover { background: $boost; }
    .panel { padding: 1 2; }
    #status { height: 1; padding: 0 1; background: $panel; }
    #words { display: none; }
    #words.shown { display: block; }
    DetailsScreen { align: center middle; }
    #details { width: 72; height: auto; max-height: 90%; border: thick $primary; padding: 1 2; background: $surface; }
    """
    BINDINGS = [
        Binding("space", "freeze", "Freeze"),
        Binding("r", "reset", "Reset"),
        Binding("plus,equals_sign", "more", "More", key_display="+"),
        Binding("minus", "fewer", "Fewer", key_display="-"),
        Binding("slash", "words", "Words", key_display="/"),
        Binding("c", "clear_filter", "Clear filter", show=False),  # the status line says "c clears"
        Binding("escape", "close_words", "Close", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, session: Session, *, info: BundleInfo | None = None, max_frames: int | None = None,
                 preview_fps: float = 12.0):
        super().__init__()
        if preview_fps <= 0:
            raise ValueError("preview_fps must be positive")
        self.session = session
        self.kiosk_loop = session.loop  # owns k, the filter, the pause and the epoch
        self.source, self.saver, self.watcher = session.source, session.saver, session.watcher
        self.max_frames, self.preview_fps = max_frames, preview_fps
        searcher = self.kiosk_loop.searcher
        self.info = info if info is not None or searcher is None else BundleInfo.of(searcher)
        self.thumbs = ThumbCache(getattr(searcher, "root", None))
        self.shown: Lookup | None = None
        self.fps = 0.0
        self.still = False  # the frames are a folder's photos: the rate is told in seconds per image
        self.source_status: SourceStatus | None = None
        self.fatal: str | None = None  # the bundle could not be opened: the kiosk cannot search
        self.fault: str | None = None  # the last error inside the frame loop, until a search succeeds
        self.frames_taken = 0
        self.words: str | None = None  # the typed query whose results are on screen
        self.words_image: np.ndarray | None = None  # the frozen photo fused with them, if any
        self.words_epoch = 0  # bumped by every words search, reset and unfreeze: older answers are dropped
        self.bundle_warning: str | None = None  # a new bundle failed to load; the old one is in use

    # the kiosk loop's settings, read where they live
    @property
    def searcher(self) -> KioskSearcher | None:
        return self.kiosk_loop.searcher

    @property
    def k(self) -> int:
        return self.kiosk_loop.k

    @property
    def filter(self) -> Filter | None:
        """Applies to photo and word searches; shown on the status line."""
        return self.kiosk_loop.filter

    @property
    def frozen(self) -> bool:
        """The view is held: the kiosk loop searches nothing while nobody can see it."""
        return self.kiosk_loop.paused

    # -- layout ----------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="banner")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Preview(id="preview")
                yield Static(id="quality")
            with Vertical(id="right"):
                yield Static(id="results-title")
                yield Results(id="results")
        # disabled while hidden: a hidden Input would still take the focus (and the keys) at start
        yield Input(id="words", placeholder="words, and filters like category=Fruit price<2.5 — Enter searches, "
                                            "Esc closes", disabled=True)
        yield Static(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one("#preview").border_title = f"Camera · {printable(self.source.description)}"
        self.query_one("#right").border_title = "Products"
        self.source.start()
        if self.searcher is not None:
            await self._use_searcher()
        else:
            await self._panel(Text("Opening the bundle…", style="italic"), "loading")
            self._run_frames(search=False)  # preview while the bundle opens
            self._load()
        self._update_status()

    def on_unmount(self) -> None:
        self.source.stop()

    # -- workers: slow work, messages only ---------------------------------------
    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load(self) -> None:
        try:
            searcher = self.session.load()  # verifies, loads, and checks the filter's fields against the products
        except EdgeSearchError as e:
            self.post_message(SearcherFailed(str(e)))
            return
        except Exception as e:  # the kiosk shows it; it must not crash
            self.post_message(SearcherFailed(f"{type(e).__name__}: {e}"))
            return
        self.post_message(SearcherReady(searcher, BundleInfo.of(searcher)))

    @work(thread=True, exclusive=True, group="frames", exit_on_error=False)
    def _run_frames(self, search: bool = True) -> None:
        worker = get_current_worker()
        # the preview-only worker never searches, even once the bundle has opened (in another
        # thread): the worker started after it does, so only one thread ever calls the loop
        kiosk_loop = self.kiosk_loop if search else None
        thumbs = self.thumbs
        interval = 1.0 / self.preview_fps
        next_preview = float("-inf")
        while not worker.is_cancelled:
            # --max-frames counts every frame taken, by this worker and the ones before it
            left = None if self.max_frames is None else max(0, self.max_frames - self.frames_taken)
            try:
                for event in run_kiosk(self.source, kiosk_loop, max_frames=left, stop=lambda: worker.is_cancelled,
                                       stop_at_end=False, saver=self.saver, watcher=self.watcher):
                    if isinstance(event, FrameSeen):
                        self.frames_taken += 1  # written by the one running frame worker only
                        searched = event.verdict is not None and event.verdict.search
                        # throttle on the source's clock; the frame searched is always shown
                        if searched or event.frame.captured >= next_preview:
                            next_preview = event.frame.captured + interval
                            self.post_message(FrameReady(_small(event.frame.image), event.frame.index,
                                                         event.verdict, event.fps, event.frame.still))
                    elif isinstance(event, Lookup):
                        self.post_message(LookupReady(event, [thumbs.get(h.product.thumbnail)
                                                              for h in event.result.hits]))
                    elif isinstance(event, BundleSwapped):
                        thumbs = ThumbCache(event.path)  # the new bundle's thumbnails from the next lookup on
                        self.post_message(BundleChanged(event.text, ok=True, info=event.info))
                    elif isinstance(event, BundleSwapFailed):
                        self.post_message(BundleChanged(event.text, ok=False))
                    else:
                        self.post_message(SourceChanged(event))
            except Exception as e:  # a bad frame or a failing model must not stop the kiosk
                self.post_message(Fault(f"{type(e).__name__}: {e}"))
                time.sleep(1.0)
                continue
            if not worker.is_cancelled:
                self.post_message(Finished())
            return

    @work(thread=True, exclusive=True, group="research", exit_on_error=False)
    def _research(self, lookup: Lookup) -> None:
        """Search the shown frame again (k changed): the answer comes with the new epoch."""
        kiosk_loop = self.kiosk_loop
        if kiosk_loop.searcher is None:
            return
        try:
            fresh = kiosk_loop.lookup(lookup.frame)
        except Exception as e:
            self.post_message(Fault(f"{type(e).__name__}: {e}"))
            return
        self.post_message(LookupReady(fresh, [self.thumbs.get(h.product.thumbnail) for h in fresh.result.hits],
                                      refresh=True))

    @work(thread=True, exclusive=True, group="words", exit_on_error=False)
    def _search_words(self, words: str, image: np.ndarray | None, k: int, flt: Filter | None, epoch: int) -> None:
        """Words alone, or the frozen photo steered by them."""
        searcher = self.searcher
        extra = {"filter": flt} if flt else {}
        try:
            if image is None:
                result = searcher.search_text(words, k=k, **extra)
            else:
                result = searcher.search_image(image, k=k, text=words, **extra)
        except EdgeSearchError as e:
            self.post_message(WordsFailed(str(e)))
            return
        except Exception as e:
            self.post_message(Fault(f"{type(e).__name__}: {e}"))
            return
        self.post_message(WordsReady(words, image is not None, result,
                                     [self.thumbs.get(h.product.thumbnail) for h in result.hits], epoch))

    # -- message handlers: the only code that touches widgets ---------------------
    async def _use_searcher(self) -> None:
        """The kiosk loop has its searcher: search from now on."""
        if self.info is None:
            self.info = BundleInfo.of(self.searcher)
        self.thumbs = ThumbCache(getattr(self.searcher, "root", None))
        await self._show_waiting()
        self._run_frames(search=True)  # exclusive: replaces the preview-only worker

    async def on_searcher_ready(self, message: SearcherReady) -> None:
        self.info = self.info or message.info  # facts given to build_app win over the manifest's
        await self._use_searcher()
        self._update_status()

    async def on_searcher_failed(self, message: SearcherFailed) -> None:
        self.fatal = f"cannot search: {message.message}"
        text = Text("This kiosk cannot search.\n\n", style="bold")
        text.append("The product bundle failed to open:\n")
        text.append(printable(message.message), style="italic")
        text.append("\n\nReplace or re-export the bundle, then restart the kiosk. Press q to quit.")
        await self._panel(text, "fatal")
        self._update_banner()

    def _torn_down(self) -> bool:
        """True once the screen's widgets are gone: the capture and search threads
        post messages that can still arrive while the app quits."""
        try:
            self.query_one(Preview)
        except NoMatches:
            return True
        return False

    def on_frame_ready(self, message: FrameReady) -> None:
        if self.frozen:
            return
        try:
            preview = self.query_one(Preview)
        except NoMatches:  # the screen is gone: the capture thread's last frames arrive while the app quits
            return
        self.fps, self.still = message.fps, message.still
        preview.show(message.image)
        quality = Text(f"frame {message.index}")
        if message.verdict is not None:
            quality.append(" · " + message.verdict.words, style="green" if message.verdict.search else "")
        self.query_one("#quality", Static).update(quality)
        self._update_status()

    async def on_lookup_ready(self, message: LookupReady) -> None:
        lookup = message.lookup
        if lookup.epoch != self.kiosk_loop.epoch:
            return  # stale: k changed or the view was reset while it ran
        if (self.frozen and not message.refresh) or self._torn_down():
            return
        self.shown = lookup
        if self.fault is not None:  # searching works again: the last fault is history
            self.fault = None
            self._update_banner()
        r = lookup.result
        title = self.query_one("#results-title", Static)
        if r.no_match:
            title.update(Text(""))
            text = Text("No match — hold the product closer / steadier\n\n", style="bold yellow")
            best = f"{r.best_score:.2f}" if np.isfinite(r.best_score) else "none"
            text.append(f"Best score {best} is below {lookup.min_score:.2f}.\n", style="italic")
            text.append("Tried " + ", ".join(describe(v) for v in lookup.tried) + ".", style="italic")
            await self._panel(text, "no-match")
        else:
            head = Text(f"Top {len(r.hits)} · from {describe(lookup.variant)}")
            if lookup.variant != ORIGINAL:
                head.append(" (the whole frame gave no confident match)", style="italic")
            title.update(head)
            await self.query_one(Results).show_hits(r.hits, message.thumbs, lookup.min_score, lookup.variant)
        self._update_status()

    async def on_words_ready(self, message: WordsReady) -> None:
        if message.epoch != self.words_epoch:
            return  # k changed, reset or unfrozen while it ran
        r = message.result
        head = Text(f"“{printable(message.query)}”" + (" + the frozen photo" if message.fused else ""), style="bold")
        if self.filter:
            head.append(f" · {printable(self.filter)}", style="italic")
        self.query_one("#results-title", Static).update(head)
        if not r.hits:
            await self._panel(Text("No product matches" + (f" the filter {self.filter}." if self.filter else "."),
                                   style="bold yellow"), "no-words-match")
            self.query_one("#results-title", Static).update(head)
        else:
            await self.query_one(Results).show_hits(r.hits, message.thumbs, 0.0,
                                                    PHOTO_AND_WORDS if message.fused else WORDS)
        self._update_status()

    async def on_words_failed(self, message: WordsFailed) -> None:
        text = Text("Cannot search by words.\n\n", style="bold")
        text.append(printable(message.message), style="italic")
        await self._panel(text, "words-failed")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        line = event.value.strip()
        self._hide_words_box()
        words, exprs = split_query(line)
        if exprs:
            try:
                self._set_filter(Filter.parse(exprs, getattr(self.searcher, "products", None)))
            except EdgeSearchError as e:
                self.post_message(WordsFailed(str(e)))
                return
        if words:
            self._start_words(words)

    def on_source_changed(self, message: SourceChanged) -> None:
        self.source_status = message.status
        self._update_banner()

    def on_bundle_changed(self, message: BundleChanged) -> None:
        if message.ok:
            self.info, self.bundle_warning = message.info, None
            self.thumbs = ThumbCache(getattr(self.searcher, "root", None))
        else:
            self.bundle_warning = message.text
        self._update_banner()
        self._update_status()

    def on_fault(self, message: Fault) -> None:
        self.fault = message.message
        self._update_banner()

    def on_finished(self, message: Finished) -> None:
        self.exit()

    def on_result_row_chosen(self, message: ResultRow.Chosen) -> None:
        self.push_screen(DetailsScreen(message.hit, message.thumb, message.min_score, message.variant))

    # -- keys --------------------------------------------------------------------
    def action_words(self) -> None:
        if self.searcher is None or self.fatal is not None:
            return
        box = self.query_one("#words", Input)
        box.disabled = False
        box.add_class("shown")
        box.focus()

    def action_close_words(self) -> None:
        self._hide_words_box()

    def _hide_words_box(self) -> None:
        box = self.query_one("#words", Input)
        box.remove_class("shown")
        box.value = ""
        box.disabled = True
        self.query_one(Results).focus()

    def action_clear_filter(self) -> None:
        if self.filter is not None:
            self._set_filter(None)

    def _set_filter(self, flt: Filter | None) -> None:
        self.kiosk_loop.filter = flt  # bumps the epoch: photo searches in flight are dropped
        if self.words is not None:
            self._search_again()  # the words on screen, searched again under the new filter
        elif self.shown is not None:
            self._research(self.shown)
        self._update_status()

    def _start_words(self, words: str) -> None:
        """Search by words: fused with the photo frozen on screen, else alone (and the view freezes
        so the camera does not replace the answer; space or r goes back to the camera)."""
        if not self.frozen:
            self.action_freeze()
            self.shown = None  # no photo behind these words: the next words are searched alone too
        self.words = words
        self.words_image = self.shown.frame.image if self.shown is not None else None
        self._search_again()

    def _search_again(self) -> None:
        self.words_epoch += 1
        self._search_words(self.words, self.words_image, self.k, self.filter, self.words_epoch)

    def action_freeze(self) -> None:
        if self.frozen:  # back to the camera: typed results are dropped
            self.words = None
            self.words_epoch += 1
        self.kiosk_loop.paused = not self.kiosk_loop.paused  # no searches while nobody can see them
        self.query_one("#preview").border_title = (
            f"Camera · {printable(self.source.description)}" + (" · FROZEN" if self.frozen else ""))
        self._update_status()

    async def action_reset(self) -> None:
        self.shown = None
        self.words = None
        self.words_epoch += 1
        self.kiosk_loop.paused = False
        self.kiosk_loop.request_reset()
        if self.source_status is not None and self.source_status.state != "live":
            self.source.restart()
        self.query_one("#preview").border_title = f"Camera · {printable(self.source.description)}"
        if self.fatal is None:
            await self._show_waiting()
        self._update_status()

    def action_more(self) -> None:
        self._set_k(self.k + 1)

    def action_fewer(self) -> None:
        self._set_k(self.k - 1)

    def _set_k(self, k: int) -> None:
        k = min(MAX_K, max(1, k))
        if k == self.k:
            return
        self.kiosk_loop.k = k  # bumps the epoch: searches in flight with the old k are dropped
        if self.words is not None:
            self._search_again()
        elif self.searcher is not None and self.shown is not None:
            self._research(self.shown)
        self._update_status()

    # -- helpers ---------------------------------------------------------------------
    async def _panel(self, text: Text, panel_id: str) -> None:
        self.query_one("#results-title", Static).update(Text(""))
        await self.query_one(Results).show_panel(text, panel_id)

    async def _show_waiting(self) -> None:
        await self._panel(Text("Hold a product up to the camera.", style="italic"), "waiting")

    def _update_banner(self) -> None:
        """One line above everything for what is wrong, most serious first; hidden when all is well."""
        status, text = self.source_status, None
        if self.fatal is not None:
            text = "The product bundle failed to open — the kiosk cannot search."
        elif status is not None and status.state in ("starting", "lost"):
            text = _sentence(status.text) + "."
        elif status is not None and status.state == "ended":
            text = _sentence(status.message) + " — press r to play it again."
        elif status is not None and status.state == "failed":
            text = _sentence(status.message) + " — press r to try again."
        elif self.fault is not None:
            text = f"Something went wrong while searching ({self.fault}); still running."
        elif self.bundle_warning is not None:
            text = _sentence(self.bundle_warning) + "."
        banner = self.query_one("#banner", Static)
        banner.update(Text(printable(text or "")))
        banner.set_class(text is not None, "shown")

    def _update_status(self) -> None:
        t = self.shown.timings_ms if self.shown else {}
        parts = [rate_text(self.fps, self.still),
                 f"embed {t['embed']:.1f} ms" if "embed" in t else "embed – ms",
                 f"search {t['search']:.2f} ms" if "search" in t else "search – ms"]
        if self.info is not None:
            parts += [self.info.name, f"{self.info.product_count} products",
                      f"built {self.info.created[:10]}" if self.info.created else ""]
        parts.append(f"k {self.k}")
        if self.filter:
            parts.append(f"filter {self.filter} (c clears)")
        self.query_one("#status", Static).update(status_text(parts, frozen=self.frozen))


def build_app(session: Session, *, info: BundleInfo | None = None, max_frames: int | None = None,
              preview_fps: float = 12.0) -> KioskApp:
    """The one way to make the kiosk app, for the CLI (`session.open_session`) and for
    tests (a `Session` of fakes).

    A session whose loop has no searcher yet opens the bundle in a worker
    (`Session.load`), so a bundle that fails verification is shown on
    screen instead of ending the program.
    """
    return KioskApp(session, info=info, max_frames=max_frames, preview_fps=preview_fps)
