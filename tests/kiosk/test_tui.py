"""The kiosk TUI driven with Pilot: a fake frame source and a fake searcher
behind their Protocols, no camera and no model. Screens are compared as text
at a fixed terminal size."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

import edge_search  # noqa: F401  (onnxruntime before usearch)
from edge_search.errors import BundleError
from edge_search.kiosk.frames import Frame
from edge_search.kiosk.loop import BundleInfo, KioskLoop
from edge_search.kiosk.session import Session
from edge_search_export.sample_catalog import draw_product
from edge_search.kiosk.tui import build_app
from edge_search.kiosk.tui.widgets import DetailsScreen, Preview, ResultRow
from kiosk_fakes import FakeSearcher, FakeSource

SIZE = (100, 30)
INFO = BundleInfo(name="fake-bundle", product_count=4, created="2026-01-01T00:00:00Z")
SNAPSHOTS = Path(__file__).parent / "snapshots"


def make(searcher=None, source=None, *, loader=None, k=3, min_score=None, filter=None, watcher=None, **app):
    """The app over a session of fakes: a ready searcher, or a `loader` that opens one in a worker."""
    source = source or FakeSource()
    searcher = searcher or FakeSearcher()
    loop = KioskLoop(None if loader else searcher, k=k, min_score=min_score, filter=filter)
    session = Session(source=source, loop=loop, loader=loader, watcher=watcher)
    return build_app(session, info=INFO, **app), source, searcher


def drive(app, scenario) -> None:
    async def main():
        async with app.run_test(size=SIZE) as pilot:
            await scenario(pilot)
    asyncio.run(main())


async def until(pilot, cond, what: str, timeout: float = 30.0) -> None:
    """Wait for a condition, not for a time: the deadline only bounds a failure (a loaded machine is slow)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{screen_text(pilot.app)}")
        await pilot.pause(0.02)


async def settled(pilot, source, what: str) -> None:
    """Wait until the kiosk loop has dealt with every frame pushed so far and the app has handled
    every message that posted: what did not happen by then is not going to."""
    await until(pilot, source.drained, what)
    await pilot.pause()  # Pilot waits for the messages already queued to be processed


def screen_text(app) -> str:
    """The screen's characters: what App.export_screenshot() renders, without the SVG."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True,
                      color_system=None, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens,
                                                        simplify=True))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def widget_text(app, selector: str) -> str:
    content = app.query_one(selector).content
    return getattr(content, "plain", str(content))


def rows(app) -> list[ResultRow]:
    return list(app.query(ResultRow))


def shown_ids(app) -> list[str]:
    return [r.hit.id for r in rows(app)]


def test_results_appear_with_the_status_line():
    app, source, _ = make()
    source.push(draw_product(1), 4)

    async def scenario(pilot):
        # what is on screen, once painted
        await until(pilot, lambda: "1. Red Apple" in screen_text(app), "results on screen")
        assert shown_ids(app)[0] == "red-apple" and len(rows(app)) == 3
        text = screen_text(app)
        assert "1. Red Apple" in text and "0.45 · Fruit" in text
        assert "Top 3 · from the whole frame" in text
        # the rate counts frames the UI received: under load the newest-frame
        # hand-over drops some, so only its format is fixed here
        assert re.search(r"\d+\.\d fps · embed 4\.2 ms · search 0\.12 ms · fake-bundle · 4 products · "
                         r"built 2026-01-01 · k 3", text), text.splitlines()[-2:]
        assert "frame 3 · same view as the last search" in text or "frame 2 · steady — searching" in text
        for key in ("space", "Freeze", "Reset", "More", "Fewer", "/ Words", "Quit"):
            assert key in text, key

    drive(app, scenario)


def test_the_same_products_again_keep_their_rows_and_show_the_new_scores():
    """A product held in front of the camera answers the same list frame after frame: the rows stay
    and only a changed score is redrawn; another list replaces them."""
    from dataclasses import replace

    from edge_search.kiosk.tui.widgets import Results

    app, source, _ = make()
    source.push(draw_product(1), 4)

    async def scenario(pilot):
        await until(pilot, lambda: "1. Red Apple" in screen_text(app), "results on screen")
        before = rows(app)
        hits = [replace(r.hit, score=0.25 + 0.1 * i) for i, r in enumerate(before)]
        results = app.query_one(Results)
        await results.show_hits(hits, [r.thumb for r in before], 0.5, before[0].variant)
        await pilot.pause()
        assert [id(r) for r in rows(app)] == [id(r) for r in before] and [r.hit for r in rows(app)] == hits
        assert " 0.250" in screen_text(app) and " 0.450" in screen_text(app)
        await results.show_hits(hits[::-1], [r.thumb for r in before][::-1], 0.5, before[0].variant)
        await pilot.pause()
        assert shown_ids(app) == [h.id for h in hits[::-1]] and not {id(r) for r in rows(app)} & {id(r) for r in before}

    drive(app, scenario)


def test_freeze_holds_the_view_and_space_resumes():
    app, source, searcher = make()
    source.push(draw_product(0), 4)

    async def scenario(pilot):
        await until(pilot, lambda: shown_ids(app)[:1] == ["oat-milk"], "first results")
        await pilot.press("space")
        assert "FROZEN" in widget_text(app, "#status")
        preview = app.query_one(Preview).image
        calls = len(searcher.calls)
        source.push(draw_product(3), 6)
        await settled(pilot, source, "frames taken while frozen")
        assert shown_ids(app)[0] == "oat-milk" and app.query_one(Preview).image is preview
        assert len(searcher.calls) == calls, "searched while frozen"
        await pilot.press("space")
        assert "FROZEN" not in widget_text(app, "#status")
        source.push(draw_product(3), 4)
        await until(pilot, lambda: shown_ids(app)[:1] == ["orange-juice"], "results after unfreezing")

    drive(app, scenario)


def test_plus_and_minus_change_k_and_search_the_shown_frame_again():
    app, source, searcher = make()
    source.push(draw_product(2), 4)

    async def scenario(pilot):
        await until(pilot, lambda: len(rows(app)) == 3, "three results")
        await pilot.press("plus")
        await until(pilot, lambda: len(rows(app)) == 4, "four results")
        assert widget_text(app, "#status").endswith("k 4") and searcher.calls[-1] == 4
        for _ in range(5):  # below 1 it stays at 1
            await pilot.press("minus")
        await until(pilot, lambda: len(rows(app)) == 1, "one result")
        assert widget_text(app, "#status").endswith("k 1") and shown_ids(app) == ["green-apple"]

    drive(app, scenario)


def test_k_changes_while_frozen_refresh_the_frozen_frame():
    app, source, _ = make()
    source.push(draw_product(2), 4)

    async def scenario(pilot):
        await until(pilot, lambda: len(rows(app)) == 3, "results")
        await pilot.press("space", "plus")
        await until(pilot, lambda: len(rows(app)) == 4, "four results while frozen")
        assert shown_ids(app)[0] == "green-apple" and "FROZEN" in widget_text(app, "#status")

    drive(app, scenario)


def test_a_lost_source_is_reported_and_recovered():
    app, source, _ = make()
    source.push(draw_product(0), 4)

    async def scenario(pilot):
        await until(pilot, lambda: shown_ids(app), "results")
        source.set("lost", "camera 0 stopped sending frames", retry_s=3)
        await until(pilot, lambda: "Camera 0 stopped sending frames — retrying every 3 s." in screen_text(app),
                    "the lost-camera banner")
        source.set("live", "fake camera")
        source.push(draw_product(1), 4)
        await until(pilot, lambda: shown_ids(app)[:1] == ["red-apple"], "results after the camera came back")
        assert not app.query_one("#banner").has_class("shown")

    drive(app, scenario)


def test_end_of_video_says_so_and_r_plays_it_again():
    app, source, _ = make()

    async def scenario(pilot):
        source.set("ended", "end of video shelf.mp4")
        await until(pilot, lambda: "End of video shelf.mp4 — press r to play it again." in screen_text(app),
                    "the end-of-video banner")
        await pilot.press("r")
        assert source.restarts == 1

    drive(app, scenario)


def test_no_match_is_a_clear_state_that_says_what_was_tried():
    app, source, searcher = make(FakeSearcher(min_score=0.99))
    source.push(draw_product(9), 4)  # not in the fake catalog

    async def scenario(pilot):
        await until(pilot, lambda: "No match" in screen_text(app), "the no-match panel")
        text = widget_text(app, "#no-match")
        assert text.startswith("No match — hold the product closer / steadier")
        assert "Best score 0.7" in text and "is below 0.99." in text
        assert "Tried the whole frame, the centre of the frame, the frame with contrast equalized." in text
        assert not rows(app) and len(searcher.calls) == 3

    drive(app, scenario)


def test_clicking_a_result_opens_its_details():
    app, source, _ = make()
    source.push(draw_product(3), 4)

    async def scenario(pilot):
        # a row can be clicked once it has been laid out on screen
        await until(pilot, lambda: shown_ids(app) and app.query_one("#result-0").region.height > 0, "results")
        await pilot.click("#result-0")
        await until(pilot, lambda: isinstance(app.screen, DetailsScreen) and "Sample Foods" in screen_text(app),
                    "the details dialog")
        text = screen_text(app)
        for needle in ("Orange Juice 1L", "orange-juice", "Orange Juice 1L, from the fake shelf", "brand",
                       "Sample Foods", "shelf", "A3", "the whole frame"):
            assert needle in text, needle
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DetailsScreen), "the dialog to close")

    drive(app, scenario)


def test_stale_results_are_dropped():
    app, source, searcher = make()
    searcher.block = threading.Event()
    source.push(draw_product(0), 3)

    async def scenario(pilot):
        await until(pilot, searcher.entered.is_set, "a search to start")
        await pilot.press("plus")  # k changes while that search runs: its answer is stale
        searcher.block.set()
        await settled(pilot, source, "the stale answer")
        assert not rows(app) and widget_text(app, "#waiting") == "Hold a product up to the camera."
        source.push(draw_product(1), 4)
        await until(pilot, lambda: shown_ids(app)[:1] == ["red-apple"], "fresh results")
        assert len(rows(app)) == 4

    drive(app, scenario)


def test_reset_clears_results_and_searches_the_same_view_again():
    app, source, searcher = make()
    source.push(draw_product(0), 4)

    async def scenario(pilot):
        await until(pilot, lambda: shown_ids(app), "results")
        calls = len(searcher.calls)
        await pilot.press("r")
        assert not rows(app)
        source.push(draw_product(0), 4)  # the same product: searched again after a reset
        await until(pilot, lambda: shown_ids(app), "results after reset")
        assert len(searcher.calls) == calls + 1

    drive(app, scenario)


def test_a_bundle_that_fails_verification_is_shown_in_plain_words():
    def loader():
        raise BundleError("/b/model.onnx: checksum mismatch (sha256 0123…, manifest 4567…)")

    app, source, _ = make(loader=loader)
    source.push(draw_product(0), 3)

    async def scenario(pilot):
        await until(pilot, lambda: app.fatal is not None, "the bundle failure")
        text = widget_text(app, "#fatal")
        assert text.startswith("This kiosk cannot search.") and "checksum mismatch" in text
        assert widget_text(app, "#banner") == "The product bundle failed to open — the kiosk cannot search."
        # the camera still shows: a person can see the kiosk is alive
        await until(pilot, lambda: app.query_one(Preview).image is not None, "the preview")

    drive(app, scenario)
    assert app.fatal.startswith("cannot search: /b/model.onnx: checksum mismatch")


def test_a_bundle_opened_in_the_background_then_searches():
    searcher = FakeSearcher()
    app, source, _ = make(loader=lambda: searcher)

    async def scenario(pilot):
        await until(pilot, lambda: app.kiosk_loop.searcher is searcher, "the bundle to open")
        source.push(draw_product(1), 8)  # the preview-only worker may take a frame or two as it stops
        await until(pilot, lambda: shown_ids(app)[:1] == ["red-apple"], "results")
        assert "fake-bundle · 4 products" in widget_text(app, "#status")

    drive(app, scenario)
    assert app.fatal is None


class FlakySearcher(FakeSearcher):
    """Fails its first search, as a model might on a bad day."""

    def __init__(self):
        super().__init__()
        self.failed = False

    def search_image(self, image, k=5, min_score=None):
        if not self.failed:
            self.failed = True
            raise RuntimeError("onnxruntime: out of memory")
        return super().search_image(image, k, min_score)


def test_an_error_while_searching_is_shown_and_the_kiosk_carries_on():
    app, source, _ = make(FlakySearcher())
    source.push(draw_product(0), 4)

    async def scenario(pilot):
        await until(pilot, lambda: "out of memory" in widget_text(app, "#banner"), "the fault banner")
        assert widget_text(app, "#banner") == \
            "Something went wrong while searching (RuntimeError: onnxruntime: out of memory); still running."
        source.push(draw_product(1), 4)
        await until(pilot, lambda: shown_ids(app)[:1] == ["red-apple"], "results after the fault")
        assert not app.query_one("#banner").has_class("shown")

    drive(app, scenario)


def test_q_quits_and_stops_the_source():
    app, source, _ = make()

    async def scenario(pilot):
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, "the app to quit")

    drive(app, scenario)
    assert source.started == 1 and source.stopped >= 1


def test_max_frames_ends_the_app_by_itself():
    app, source, _ = make(max_frames=5)
    source.push(draw_product(0), 5)

    async def scenario(pilot):
        await until(pilot, lambda: not app.is_running, "the app to exit", timeout=5)

    drive(app, scenario)


def test_a_session_has_a_ready_searcher_or_a_loader_never_both_or_neither():
    with pytest.raises(ValueError):
        Session(source=FakeSource(), loop=KioskLoop(None))
    with pytest.raises(ValueError):
        Session(source=FakeSource(), loop=KioskLoop(FakeSearcher()), loader=FakeSearcher)


def test_k_filter_and_pause_live_in_the_kiosk_loop_and_the_screen_reads_them():
    app, source, searcher = make()
    loop = app.kiosk_loop
    source.push(draw_product(2), 4)

    async def scenario(pilot):
        await until(pilot, lambda: len(rows(app)) == 3, "three results")
        # nothing on the app holds a copy of the loop's settings
        assert not {"k", "filter", "frozen", "paused", "min_score", "searcher"} & set(vars(app))
        await pilot.press("plus")  # the key sets the loop's k ...
        assert loop.k == 4 and app.k == 4
        await until(pilot, lambda: len(rows(app)) == 4, "four results")
        assert widget_text(app, "#status").endswith("k 4") and searcher.calls[-1] == 4
        loop.k = 6  # ... and a k set on the loop is what the screen shows and searches with next
        await pilot.press("minus")
        assert loop.k == 5
        await until(pilot, lambda: widget_text(app, "#status").endswith("k 5"), "k 5 on the status line")
        await pilot.press("slash", *"category=Fruit", "enter")
        assert str(loop.filter) == "category=Fruit" and app.filter is loop.filter
        await until(pilot, lambda: "filter category=Fruit (c clears)" in widget_text(app, "#status"), "the filter")
        await pilot.press("c")
        assert loop.filter is None
        await pilot.press("space")
        assert loop.paused and app.frozen and "FROZEN" in widget_text(app, "#status")
        await pilot.press("r")
        assert not loop.paused and not app.frozen

    drive(app, scenario)


def test_a_folder_says_seconds_per_image_and_a_camera_fps():
    from edge_search.kiosk.tui.render import rate_text

    assert rate_text(0.5, still=True) == "2.0 s per image" and rate_text(0.0, still=True) == "– s per image"
    assert rate_text(30.0) == "30.0 fps" and rate_text(12.5, still=False) == "12.5 fps"
    app, source, _ = make()
    for i in range(4):  # a folder's photos, one every 2 s
        source.frames.append(Frame(index=i, image=draw_product(i), captured=2.0 * i, wall=1.7e9 + 2 * i, still=True))

    async def scenario(pilot):
        await until(pilot, lambda: not source.frames and "frame 3" in screen_text(app), "the fourth photo")
        status = widget_text(app, "#status")
        assert status.startswith("2.0 s per image · ") and "fps" not in status

    drive(app, scenario)


# --- words: `/` opens a box; typing searches by text; with a frozen frame, photo + words ----------

def title(app) -> str:
    return widget_text(app, "#results-title")


def test_slash_searches_by_words_and_freezes_the_answer():
    app, source, searcher = make()

    async def scenario(pilot):
        await until(pilot, lambda: "Hold a product" in screen_text(app), "the waiting panel")
        await pilot.press("slash")
        assert app.query_one("#words").has_focus and "Enter searches" in screen_text(app)
        await pilot.press(*"apple", "enter")
        await until(pilot, lambda: shown_ids(app)[:1] == ["red-apple"], "results for the words")
        assert searcher.text_calls == [("apple", False, None)]
        assert "“apple”" in title(app) and "FROZEN" in widget_text(app, "#status")
        assert "Enter searches" not in screen_text(app)  # the box closed
        # the camera does not replace the typed answer while frozen
        source.push(draw_product(3), 6)
        await settled(pilot, source, "frames taken")
        assert shown_ids(app)[:1] == ["red-apple"] and "“apple”" in title(app)
        # + searches the same words again with the new k
        await pilot.press("plus")
        await until(pilot, lambda: len(searcher.text_calls) == 2 and len(rows(app)) == 4, "k 4 words search")
        # space goes back to the camera
        await pilot.press("space")
        source.push(draw_product(3), 4)
        await until(pilot, lambda: shown_ids(app)[:1] == ["orange-juice"], "camera results again")

    drive(app, scenario)


def test_words_with_a_frozen_frame_fuse_photo_and_words():
    app, source, searcher = make()
    source.push(draw_product(0), 4)

    async def scenario(pilot):
        await until(pilot, lambda: shown_ids(app)[:1] == ["oat-milk"], "photo results")
        await pilot.press("space", "slash", *"juice", "enter")
        await until(pilot, lambda: searcher.text_calls and "frozen photo" in title(app), "fused results")
        assert searcher.text_calls[-1][:2] == ("juice", True)
        assert "“juice” + the frozen photo" in title(app)

    drive(app, scenario)


def test_filters_typed_in_the_box_are_shown_and_c_clears_them():
    app, source, searcher = make(k=4)

    async def scenario(pilot):
        await until(pilot, lambda: "Hold a product" in screen_text(app), "the waiting panel")
        await pilot.press("slash", *"milk category=Fruit", "enter")
        await until(pilot, lambda: rows(app) and searcher.text_calls, "filtered words results")
        words, fused, flt = searcher.text_calls[-1]
        assert words == "milk" and str(flt) == "category=Fruit"
        assert {r.hit.category for r in rows(app)} == {"Fruit"}
        assert "filter category=Fruit (c clears)" in widget_text(app, "#status")
        await pilot.press("c")
        await until(pilot, lambda: "filter" not in widget_text(app, "#status"), "filter cleared")
        await until(pilot, lambda: shown_ids(app)[:1] == ["oat-milk"] and len(rows(app)) == 4, "unfiltered words")
        assert searcher.text_calls[-1][2] is None
        # an unknown field is said on screen, the kiosk goes on
        await pilot.press("slash", *"colour=red", "enter")
        await until(pilot, lambda: bool(app.query("#words-failed"))
                    and "unknown field 'colour'" in widget_text(app, "#words-failed"), "the filter error")
        # Esc closes the box without searching
        calls = len(searcher.text_calls)
        await pilot.press("slash", *"tea", "escape")
        assert "Enter searches" not in screen_text(app)
        # the next words searched are the first since: "tea" never was
        await pilot.press("slash", *"juice", "enter")
        await until(pilot, lambda: len(searcher.text_calls) > calls, "the next words search")
        assert [c[0] for c in searcher.text_calls[calls:]] == ["juice"]

    drive(app, scenario)


def test_a_bundle_without_text_says_so_on_screen():
    from edge_search.errors import TextQueryError

    class PhotoOnly(FakeSearcher):
        def search_text(self, text, k=5, min_score=None, filter=None):
            raise TextQueryError("bundle/ has no text model; export it with --with-text")

    app, _, _ = make(searcher=PhotoOnly())

    async def scenario(pilot):
        await until(pilot, lambda: "Hold a product" in screen_text(app), "the waiting panel")
        await pilot.press("slash", *"apple", "enter")
        await until(pilot, lambda: "has no text model" in screen_text(app), "the message")
        assert "Cannot search by words" in screen_text(app)

    drive(app, scenario)


# --- snapshot at a fixed terminal size ---------------------------------------------------------

def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("EDGE_SEARCH_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    assert path.is_file(), f"no snapshot {path}: run with EDGE_SEARCH_UPDATE_SNAPSHOTS=1 and review it"
    assert text + "\n" == path.read_text(encoding="utf-8"), f"screen differs from {path}:\n{text}"


def test_snapshot_results_screen():
    app, source, _ = make()
    source.push(draw_product(1), 6)

    async def scenario(pilot):
        await until(pilot, lambda: shown_ids(app) and "frame 5" in screen_text(app), "the settled screen")
        check_snapshot(f"kiosk_results_{SIZE[0]}x{SIZE[1]}", screen_text(app))

    drive(app, scenario)


def test_snapshot_no_match_screen():
    app, source, _ = make(FakeSearcher(min_score=0.99))
    source.push(draw_product(9), 6)

    async def scenario(pilot):
        await until(pilot, lambda: "No match" in screen_text(app) and "frame 5" in screen_text(app),
                    "the settled screen")
        check_snapshot(f"kiosk_no_match_{SIZE[0]}x{SIZE[1]}", screen_text(app))

    drive(app, scenario)


# --- import rules ---------------------------------------------------------------------------------

def test_only_the_tui_package_imports_textual():
    code = ("import json, sys, edge_search.cli as c, edge_search.kiosk.loop, edge_search.kiosk.frames, edge_search.kiosk.quality, "
            "edge_search.kiosk.enhance\n"
            "c.build_parser()\n"
            "before = 'textual' in sys.modules\n"
            "import edge_search.kiosk.tui\n"
            "print(json.dumps([before, 'textual' in sys.modules]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [False, True]


# --- `edge-search run` on a real terminal ---------------------------------------------------------

def run_in_terminal(args: list, timeout: float = 60, size: tuple[int, int] = (120, 36)) -> tuple[int, str]:
    """Run a command on a pseudo-terminal, as a person at the kiosk would; returns (exit code, screen bytes)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    proc = subprocess.Popen([str(a) for a in args], stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env={**os.environ, "TERM": "xterm-256color"})
    os.close(slave)
    out, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.wait(), out.decode("utf-8", "replace")


def catalog_video(path: Path, images: Path, held: int = 40) -> Path:
    import cv2

    from edge_search.core.images import load_image

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20, (320, 320))
    for p in sorted(images.glob("*.jpg"))[:3]:
        for _ in range(held):
            writer.write(cv2.cvtColor(load_image(p), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_run_shows_the_kiosk_on_a_terminal_and_quits_after_max_frames(tmp_path, tiny_bundle, sample_catalog):
    from conftest import read_manifest

    video = catalog_video(tmp_path / "shelf.mp4", sample_catalog.parent / "images")
    rc, screen = run_in_terminal([sys.executable, "-m", "edge_search", "run", "--bundle", tiny_bundle,
                                  "--source", video, "--max-frames", "30"])
    assert rc == 0, screen[-2000:]
    m = read_manifest(tiny_bundle)
    assert f"{m['products']['count']} products" in screen and "fps" in screen and "Freeze" in screen
    names = [line.split(",")[2] for line in (sample_catalog).read_text().splitlines()[1:]]
    assert any(n in screen for n in names), "no product name reached the screen"
    assert "Traceback" not in screen


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_run_shows_a_bundle_that_fails_verification_then_exits_with_one_line(tmp_path, tiny_bundle, sample_catalog):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    products = broken / "products.jsonl"
    products.write_text(products.read_text().replace("Honey", "Money"))
    video = catalog_video(tmp_path / "shelf.mp4", sample_catalog.parent / "images")
    rc, screen = run_in_terminal([sys.executable, "-m", "edge_search", "run", "--bundle", broken,
                                  "--source", video, "--max-frames", "20"])
    assert rc == 2, screen[-2000:]
    assert "This kiosk cannot search." in screen and "The product bundle failed to open" in screen
    assert "edge-search: error: cannot search: " in screen and "checksum mismatch" in screen
    assert "Traceback" not in screen


# --- the real thumbnail path and packaging ----------------------------------------------------------

def searcher_with_thumbnails(root: Path) -> FakeSearcher:
    from dataclasses import replace

    from edge_search.core.images import encode_jpeg

    searcher = FakeSearcher()
    (root / "thumbs").mkdir()
    for i, p in enumerate(searcher.products):
        (root / "thumbs" / f"{p.id}.jpg").write_bytes(encode_jpeg(draw_product(i)))
        searcher.products[i] = replace(p, thumbnail=f"thumbs/{p.id}.jpg")
    searcher.root = root
    return searcher


def test_thumbnail_cache_reads_bundle_thumbnails_and_refuses_paths_outside(tmp_path):
    from edge_search.kiosk.tui.thumbs import THUMB_SIDE, ThumbCache

    searcher_with_thumbnails(tmp_path)
    cache = ThumbCache(tmp_path)
    thumb = cache.get("thumbs/oat-milk.jpg")
    assert thumb is not None and max(thumb.shape[:2]) == THUMB_SIDE
    assert cache.get("../outside.jpg") is None and cache.get("thumbs/missing.jpg") is None
    assert ThumbCache(None).get("thumbs/oat-milk.jpg") is None


def test_result_rows_show_the_bundle_thumbnails(tmp_path):
    # Decoding runs on a worker thread while Textual owns the terminal, where
    # sys.stderr.fileno() is -1: images.decode_image must still work there.
    app, source, _ = make(searcher_with_thumbnails(tmp_path))
    source.push(draw_product(2), 4)

    async def scenario(pilot):
        await until(pilot, lambda: shown_ids(app), "results")
        assert all(r.thumb is not None for r in rows(app)), \
            "no thumbnails under Textual: images._quiet_stderr fails when sys.stderr.fileno() is -1"

    drive(app, scenario)


def test_the_tui_package_ships_in_a_normal_install():
    import tomllib

    from conftest import REPO

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = config["tool"]["setuptools"].get("packages")
    if not isinstance(packages, list):
        pytest.skip("packages are found automatically")
    root = Path(edge_search.__file__).parent
    subpackages = sorted("edge_search." + ".".join(p.parent.relative_to(root).parts)
                         for p in root.rglob("__init__.py") if p.parent != root)
    assert "edge_search.kiosk.tui" in subpackages
    missing = [s for s in subpackages if s not in packages]
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {missing}: a wheel would not ship them"
