"""The kiosk loop (quality -> search -> retry) with fakes, and `edge-search run
--no-tui` end to end on a video rendered from catalog images."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import edge_search  # noqa: F401  (onnxruntime before usearch)
from conftest import read_manifest, run_cli
from edge_search.errors import EdgeSearchError
from edge_search.kiosk.frames import Frame, SourceError, SourceStatus
from edge_search.kiosk.enhance import CROP_KEEP
from edge_search.kiosk.loop import (ANY, BundleInfo, FrameSaver, FrameSeen, KioskLoop, Lookup, RateMeter, open_or_fail,
                                   run_kiosk)
from edge_search.kiosk.session import RunTally, Session
from edge_search_export.sample_catalog import draw_product
from edge_search.core.search import SearchResult
from kiosk_fakes import FakeSearcher, FakeSource


def frame(i: int, image: np.ndarray, still: bool = False) -> Frame:
    return Frame(index=i, image=image, captured=i / 30, wall=1_700_000_000 + i / 30, still=still)


def test_a_held_product_is_looked_up_once_with_its_timings():
    searcher = FakeSearcher()
    pipe = KioskLoop(searcher, k=3)
    out = [pipe.offer(frame(i, draw_product(1))) for i in range(5)]
    lookups = [lk for _, lk in out if lk is not None]
    assert [v.reason for v, _ in out] == ["moving", "moving", "steady", "unchanged", "unchanged"]
    assert len(lookups) == 1 and searcher.calls == [3]
    lk = lookups[0]
    assert lk.frame.index == 2 and lk.variant == "original" and lk.tried == ("original",)
    assert [h.id for h in lk.result.hits][0] == "red-apple" and len(lk.result.hits) == 3
    assert lk.timings_ms["embed"] == 4.25 and lk.timings_ms["total"] >= lk.timings_ms["quality"] > 0


def test_lookup_json_has_the_search_json_results_shape():
    searcher = FakeSearcher()
    lk = KioskLoop(searcher, k=2).lookup(frame(7, draw_product(0)))
    d = json.loads(json.dumps(lk.to_json()))
    assert set(d) >= {"frame", "timestamp", "results", "no_match", "variant", "timings_ms"}
    assert d["frame"] == 7 and d["timestamp"] == "2023-11-14T22:13:20.233Z" and d["source"] is None
    named = KioskLoop(searcher, k=2).lookup(Frame(index=3, image=draw_product(0), source="shelf/oat.jpg"))
    assert named.to_json()["source"] == "shelf/oat.jpg"
    assert d["results"] == [h.to_json() for h in lk.result.hits]
    assert set(d["results"][0]) == {"id", "name", "score", "price", "category"}
    assert d["no_match"] is False and d["variant"] == "original"


class CentreOnly(FakeSearcher):
    """Matches only images smaller than the frame: the centre crop."""

    def search_image(self, image, k=5, min_score=None):
        r = super().search_image(image, k, min_score=0.0)
        if image.shape[0] >= 320:
            return SearchResult(hits=[], timings_ms=r.timings_ms, best_score=0.1, best_id=r.best_id)
        return r


class CropShowsAnother(FakeSearcher):
    """The whole frame ranks its own product first, below the rule's floor; its centre crop passes with
    product `crop_names` (the one drawn at the centre)."""

    def search_image(self, image, k=5, min_score=None):
        r = super().search_image(image, k, min_score=0.0)
        if image.shape[0] >= 320:
            return SearchResult(hits=[], timings_ms=r.timings_ms, best_score=0.4, best_id=r.best_id)
        return r


def test_low_confidence_retries_with_an_enhancement_and_says_which():
    lk = KioskLoop(CentreOnly(), k=2).lookup(frame(0, draw_product(2)))
    assert lk.variant == "centre-crop" and lk.tried == ("original", "centre-crop")
    assert not lk.result.no_match and lk.timings_ms["enhance"] >= 0
    # three searches' worth of embed time would mean it did not stop at the first match
    assert lk.timings_ms["embed"] == pytest.approx(2 * 4.25)


def framed(outer: int, inner: int) -> np.ndarray:
    """Product `outer` drawn over the whole frame, product `inner` over its centre (what the crop keeps)."""
    image = draw_product(outer).copy()
    h, w = image.shape[:2]
    small = cv2.resize(draw_product(inner), (round(w * CROP_KEEP), round(h * CROP_KEEP)), interpolation=cv2.INTER_AREA)
    top, left = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    image[top:top + small.shape[0], left:left + small.shape[1]] = small
    return image


def test_a_retry_names_only_the_product_the_whole_frame_ranked_first():
    searcher = CropShowsAnother()
    whole = searcher.search_image(framed(0, 0), k=1).best_id  # refused, but ranked first
    assert whole == searcher.products[0].id
    # the crop agrees with the whole frame: named, from the crop
    lk = KioskLoop(searcher, k=1).lookup(frame(0, framed(0, 0)))
    assert lk.variant == "centre-crop" and lk.result.hits[0].id == whole
    # the whole frame ranked product 0 first, the crop passes with product 3: refused under AGREE (the default),
    # named product 3 under ANY; the refusal keeps the whole frame's closest score, not the crop's answer
    mixed = framed(0, 3)
    assert searcher.search_image(mixed, k=1).best_id == whole
    refused = KioskLoop(searcher, k=1).lookup(frame(1, mixed))
    assert refused.result.no_match and refused.variant == "original"
    assert refused.tried == ("original", "centre-crop", "equalized") and refused.result.best_score == 0.4
    anyone = KioskLoop(searcher, k=1, retry_rule=ANY).lookup(frame(1, mixed))
    assert anyone.variant == "centre-crop" and anyone.result.hits[0].id == searcher.products[3].id
    with pytest.raises(ValueError, match="unknown retry rule"):
        KioskLoop(searcher, retry_rule="sometimes")


def test_confirm_names_a_product_only_when_the_frame_centre_agrees():
    searcher = FakeSearcher(min_score=0.0)  # every frame passes the rule
    first, centre = searcher.products[0].id, searcher.products[3].id
    mixed = framed(0, 3)  # product 0 fills the frame, product 3 its centre
    plain = KioskLoop(searcher, k=1).lookup(frame(0, mixed))
    assert plain.result.hits[0].id == first and plain.tried == ("original",)
    checked = KioskLoop(searcher, k=1, confirm=True).lookup(frame(0, mixed))
    assert checked.result.no_match and checked.tried == ("original", "confirm")
    assert checked.result.best_id == first and checked.result.best_score == plain.result.best_score
    assert checked.timings_ms["embed"] == pytest.approx(2 * plain.timings_ms["embed"])  # the centre searched too
    agreed = KioskLoop(searcher, k=1, confirm=True).lookup(frame(1, draw_product(3)))  # its centre: product 3
    assert agreed.result.hits[0].id == centre and agreed.tried == ("original", "confirm")


class PassesThirdSearch(FakeSearcher):
    """The rule refuses the first two searches of a frame (the whole frame, its centre crop), passes the third."""

    def search_image(self, image, k=5, min_score=None):
        r = super().search_image(image, k, min_score=0.0 if min_score is None else min_score)
        if min_score is None and len(self.calls) % 3 in (1, 2):
            return SearchResult(hits=[], timings_ms=r.timings_ms, best_score=0.4, best_id=r.best_id)
        return r


def test_confirm_reuses_the_centre_a_retry_already_searched():
    # product 0 fills the frame, product 3 its centre: the equalized copy answers product 0 (as the whole
    # frame ranked it); the centre crop, refused, ranked product 3, so the answer is not confirmed
    searcher = PassesThirdSearch()
    lk = KioskLoop(searcher, k=1, confirm=True).lookup(frame(0, framed(0, 3)))
    assert lk.tried == ("original", "centre-crop", "equalized", "confirm") and lk.result.no_match
    assert len(searcher.calls) == 3  # the centre was not searched a second time
    agreed = KioskLoop(searcher, k=1, confirm=True).lookup(frame(1, draw_product(2)))
    assert agreed.variant == "equalized" and agreed.result.hits[0].id == searcher.products[2].id
    assert agreed.tried[-1] == "confirm" and len(searcher.calls) == 6


def test_no_match_after_every_retry_keeps_the_closest_score():
    searcher = FakeSearcher(min_score=0.99)
    lk = KioskLoop(searcher).lookup(frame(0, draw_product(9)))  # not in the fake catalog
    assert lk.result.no_match and lk.variant == "original"
    assert lk.tried == ("original", "centre-crop", "equalized") and len(searcher.calls) == 3
    assert 0 < lk.result.best_score < 0.99 and lk.to_json()["no_match"] is True


def test_retries_can_be_turned_off_and_unknown_ones_are_refused():
    searcher = FakeSearcher(min_score=0.99)
    assert KioskLoop(searcher, retries=()).lookup(frame(0, draw_product(9))).tried == ("original",)
    with pytest.raises(ValueError, match="unknown enhancements"):
        KioskLoop(searcher, retries=("sharpen",))


def test_k_reset_and_pause_from_another_thread_take_effect_between_frames():
    pipe = KioskLoop(FakeSearcher(), k=2)
    for i in range(3):
        pipe.offer(frame(i, draw_product(0)))
    epoch = pipe.epoch
    pipe.k = 4
    assert pipe.epoch == epoch + 1
    pipe.request_reset()
    assert pipe.epoch == epoch + 2
    # after a reset the same view is a new view: searched again once steady, with the new k
    out = [pipe.offer(frame(3 + i, draw_product(0))) for i in range(3)]
    assert [v.reason for v, _ in out] == ["moving", "moving", "steady"] and out[-1][1].k == 4
    pipe.paused = True
    assert pipe.offer(frame(9, draw_product(3))) == (None, None)
    with pytest.raises(EdgeSearchError, match="^k must be a whole number of at least 1, got 0$"):
        pipe.k = 0
    with pytest.raises(EdgeSearchError, match=r"^k must be at most 20 \(the most shown at once\), got 21$"):
        pipe.k = 21
    assert pipe.k == 4


def test_run_kiosk_yields_status_frames_and_lookups_in_order_and_saves_searched_frames(tmp_path):
    src = FakeSource()
    src.push(draw_product(0), 4)
    src.push(draw_product(3), 4)
    saver = FrameSaver(tmp_path / "saved")
    events = list(run_kiosk(src, KioskLoop(FakeSearcher(), k=1), max_frames=8, saver=saver))
    assert isinstance(events[0], SourceStatus) and events[0].state == "live"
    seen = [e for e in events if isinstance(e, FrameSeen)]
    lookups = [e for e in events if isinstance(e, Lookup)]
    assert [e.frame.index for e in seen] == list(range(8))
    assert [(lk.frame.index, lk.result.hits[0].id) for lk in lookups] == [(2, "oat-milk"), (6, "orange-juice")]
    assert seen[-1].fps == pytest.approx(30.0)
    # each lookup comes right after its frame
    assert events.index(lookups[0]) == events.index(seen[2]) + 1
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["000001-frame000002.jpg", "000002-frame000006.jpg"]


def test_run_kiosk_reports_status_changes_and_ends_at_the_end_of_a_file():
    src = FakeSource()
    src.push(draw_product(0), 2)
    src.set("ended", "end of video x.mp4")
    events = list(run_kiosk(src, None))
    assert [e.state for e in events if isinstance(e, SourceStatus)] == ["ended"]
    # the frames that arrived before the end are still taken; no kiosk_loop: only seen
    assert [e.frame.index for e in events if isinstance(e, FrameSeen)] == [0, 1]
    assert all(e.verdict is None for e in events if isinstance(e, FrameSeen))


def test_open_or_fail_says_why_in_one_line():
    src = FakeSource()
    src.set("lost", "no camera found at index 0", retry_s=3)
    with pytest.raises(SourceError, match="^no camera found at index 0$"):
        open_or_fail(src, timeout=0.1)
    assert src.stopped == 1
    ok = FakeSource()
    assert open_or_fail(ok, timeout=0.1).state == "live" and ok.started == 1


def test_rate_meter_and_bundle_info():
    meter = RateMeter(window=1.0)
    rates = [meter.tick(i / 15) for i in range(40)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(15.0)
    assert BundleInfo.of(FakeSearcher()) == BundleInfo("(in memory)", 0, "")


def test_run_tally_counts_frames_searches_and_answers_for_the_closing_line():
    t = [100.0]
    tally = RunTally(clock=lambda: t[0])
    src = FakeSource()
    src.push(draw_product(0), 4)  # oat milk: searched once steady, answered
    src.push(draw_product(9), 4)  # not in the fake catalog: searched, no match after every retry
    for event in run_kiosk(src, KioskLoop(FakeSearcher(min_score=0.9), k=1), max_frames=8):
        tally.add(event)
    t[0] = 103.25
    assert tally.text == "8 frames, 2 searched, 1 answered, 1 no match, 3.2 s"
    assert RunTally(clock=lambda: 0.0).text == "0 frames, 0 searched, 0 answered, 0 no match, 0.0 s"


def test_both_run_paths_are_wired_by_open_session(monkeypatch, capsys):
    import edge_search.kiosk.session as session_module
    import edge_search.kiosk.tui as tui
    from edge_search.cli import main

    opened, shown = [], []

    def fake_open_session(bundle, **kw):
        opened.append((bundle, kw))
        src = FakeSource()
        src.push(draw_product(1), 3)
        src.set("ended", "end of video fake.mp4")
        return Session(source=src, loop=KioskLoop(None, k=kw["k"]), loader=FakeSearcher)

    class FakeApp:
        fatal = None

        def run(self):
            pass

    monkeypatch.setattr(session_module, "open_session", fake_open_session)
    monkeypatch.setattr(tui, "build_app", lambda session, **kw: shown.append((session, kw)) or FakeApp())
    args = ["run", "--bundle", "b", "--source", "fake.mp4", "-k", "2", "--filter", "category=Fruit"]
    assert main(args + ["--no-tui"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["results"][0]["id"] for line in out.splitlines()] == ["red-apple"]
    assert re.fullmatch(r"edge-search: 3 frames, 1 searched, 1 answered, 0 no match, \d+\.\d s\n", err), err
    assert main(args + ["--max-frames", "9"]) == 0
    common = {"source": "fake.mp4", "k": 2, "min_score": None, "filter": ["category=Fruit"], "save_frames": None,
              "trusted_key": None, "retries": "agree", "confirm": False}
    assert opened == [("b", {**common, "realtime": False}), ("b", {**common, "realtime": True})]
    assert len(shown) == 1 and shown[0][1] == {"max_frames": 9} and shown[0][0].loop.k == 2


def test_frame_saver_refuses_a_folder_it_cannot_make_or_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EdgeSearchError, match="--save-frames .*cannot create the folder"):
        FrameSaver(blocker / "sub")
    saver = FrameSaver(tmp_path / "gone")
    (tmp_path / "gone").rmdir()  # removed while the kiosk runs
    lk = KioskLoop(FakeSearcher()).lookup(frame(0, draw_product(0)))
    with pytest.raises(EdgeSearchError, match="cannot write"):
        saver.save(lk)


# --- end to end: `edge-search run --no-tui` in a subprocess ----------------------------------

HELD = 6  # frames each product is held in front of the "camera"
SHOWN = ["pasta", "red-apple", "coffee-beans", "honey"]


@pytest.fixture(scope="session")
def student_bundle(tiny_bundle) -> Path:
    """The catalog embedded by the shipped encoder, so a catalog image finds itself (the committed
    bundle ships the teacher's own tower, which the manifest calls the catalog encoder "student")."""
    assert read_manifest(tiny_bundle)["index"]["catalog_encoder"] == "student"
    return tiny_bundle


def write_video(path: Path, images: list[Path], held: int = HELD, fourcc: str = "mp4v") -> Path:
    from edge_search.core.images import load_image

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (320, 320))
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix} here"
    for p in images:
        bgr = cv2.cvtColor(load_image(p), cv2.COLOR_RGB2BGR)
        for _ in range(held):
            writer.write(bgr)
    writer.release()
    return path


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_headless_run_names_the_products_shown_in_a_video(tmp_path, student_bundle, sample_catalog):
    images = [sample_catalog.parent / "images" / f"{pid}.jpg" for pid in SHOWN]
    video = write_video(tmp_path / "shelf.mp4", images)
    before = set(tmp_path.iterdir())
    proc = run_cli("run", "--bundle", student_bundle, "--source", video, "--no-tui", "-k", "3",
                   "--max-frames", len(SHOWN) * HELD)
    lines = json_lines(proc.stdout)
    # one search per product, once it has been steady for two frames
    assert [d["frame"] for d in lines] == [i * HELD + 2 for i in range(len(SHOWN))]
    assert [d["results"][0]["id"] for d in lines] == SHOWN
    for d in lines:
        assert len(d["results"]) <= 3 and not d["no_match"] and d["variant"] == "original"
        assert d["timestamp"].endswith("Z") and {"embed", "search", "total"} <= set(d["timings_ms"])
        assert d["source"] == str(video)
    assert set(tmp_path.iterdir()) == before, "frames were written without --save-frames"
    # stderr: only the closing line
    assert re.fullmatch(rf"edge-search: {len(SHOWN) * HELD} frames, {len(SHOWN)} searched, {len(SHOWN)} answered, "
                        r"0 no match, \d+\.\d s\n", proc.stderr), proc.stderr


def test_headless_folder_max_frames_and_save_frames(tmp_path, student_bundle, sample_catalog):
    folder = sample_catalog.parent / "images"
    saved = tmp_path / "saved"
    proc = run_cli("run", "--bundle", student_bundle, "--source", folder, "--no-tui", "-k", "1",
                   "--max-frames", "5", "--save-frames", saved)
    lines = json_lines(proc.stdout)
    names = sorted(p.name for p in folder.iterdir())[:5]
    assert [d["frame"] for d in lines] == [0, 1, 2, 3, 4]
    assert [d["results"][0]["id"] for d in lines] == [n.removesuffix(".jpg") for n in names]
    assert [d["source"] for d in lines] == [str(folder / n) for n in names]  # which image each line is about
    assert len(list(saved.glob("*.jpg"))) == 5 and not list(saved.glob("*.part"))


def test_headless_retries_follow_the_flag(tmp_path, student_bundle, sample_catalog):
    folder = tmp_path / "noise"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    # a floor no noise reaches: every frame is refused, so each is retried, unless --retries off
    tried = {}
    for flag in ("agree", "any", "off"):
        proc = run_cli("run", "--bundle", student_bundle, "--source", folder, "--no-tui", "-k", "1",
                       "--max-frames", "2", "--min-score", "0.9999", "--retries", flag)
        lines = json_lines(proc.stdout)
        assert len(lines) == 2 and all(d["no_match"] for d in lines)
        tried[flag] = {tuple(d["tried"]) for d in lines}
    assert tried["agree"] == tried["any"] == {("original", "centre-crop", "equalized")}
    assert tried["off"] == {("original",)}
    bad = run_cli("run", "--bundle", student_bundle, "--source", folder, "--no-tui", "--retries", "sometimes",
                  check=False)
    assert bad.returncode == 2 and "--retries" in bad.stderr
    # --confirm: each answer is checked against the frame's centre (a catalog image's centre is its product)
    images = sample_catalog.parent / "images"
    proc = run_cli("run", "--bundle", student_bundle, "--source", images, "--no-tui", "-k", "1", "--max-frames", "3",
                   "--confirm")
    lines = json_lines(proc.stdout)
    assert len(lines) == 3 and all(d["tried"][-1] == "confirm" for d in lines if not d["no_match"])
    assert any(not d["no_match"] for d in lines)


@pytest.mark.export
def test_open_session_reads_the_bundle_once_and_checks_the_filter_against_its_products(
        tmp_path, student_bundle, sample_catalog, monkeypatch):
    from edge_search.core.bundle import Bundle
    from edge_search.errors import FilterError
    from edge_search.kiosk.session import open_session

    opens = []
    real_open = Bundle.open.__func__
    monkeypatch.setattr(Bundle, "open", classmethod(lambda cls, *a, **kw: opens.append(a) or real_open(cls, *a, **kw)))
    folder = sample_catalog.parent / "images"
    session = open_session(student_bundle, source=folder, k=2, filter=["category=Fruit"], realtime=False)
    assert session.loop.searcher is None and session.loop.k == 2 and str(session.loop.filter) == "category=Fruit"
    assert session.source.description == f"folder {folder}" and session.saver is None
    searcher = session.load()
    assert session.loop.searcher is searcher and session.load() is searcher and len(opens) == 1
    bad = open_session(student_bundle, source=folder, filter=["colour=red"])  # well formed: refused once loaded
    with pytest.raises(FilterError, match="unknown field 'colour'"):
        bad.load()


def one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-search: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_input_ends_in_one_line(tmp_path, student_bundle):
    one_line_error(run_cli("run", "--bundle", student_bundle, "--source", tmp_path / "missing.mp4", "--no-tui",
                           check=False), "missing.mp4", "no such file or folder")
    # the same before the screen would start
    one_line_error(run_cli("run", "--bundle", student_bundle, "--source", tmp_path / "missing.mp4", check=False),
                   "no such file or folder")
    one_line_error(run_cli("run", "--bundle", student_bundle, "--source", "97", "--no-tui", check=False),
                   "no camera found at index 97")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 64)
    one_line_error(run_cli("run", "--bundle", student_bundle, "--source", junk, "--no-tui", check=False),
                   "not a video OpenCV can decode")
    one_line_error(run_cli("run", "--bundle", tmp_path / "nowhere", "--no-tui", check=False), "not a bundle")
    one_line_error(run_cli("run", "--bundle", student_bundle, "-k", "0", "--no-tui", check=False), "-k must be")
    broken = tmp_path / "broken"
    shutil.copytree(student_bundle, broken)
    model = broken / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    one_line_error(run_cli("run", "--bundle", broken, "--source", tmp_path, "--no-tui", check=False),
                   "checksum mismatch")


class PixelEncoder:
    """A frame as its centred 8 x 8 colour thumbnail: a real embedding, no model."""

    embed_dim = 192

    def embed(self, batch):
        out = []
        for x in batch:  # preprocessed CHW in [0, 1] (mean 0, std 1 below)
            hwc = np.ascontiguousarray(x.transpose(1, 2, 0))
            out.append(cv2.resize(hwc, (8, 8), interpolation=cv2.INTER_AREA).ravel() - 0.5)
        v = np.asarray(out, np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def counter_scene(seed: int, size: int = 320) -> np.ndarray:
    """The empty counter a kiosk camera sees: wood-brown tiles with grain, sharp and well lit."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    tile = 40
    for y in range(0, size, tile):
        for x in range(0, size, tile):
            shade = rng.integers(-25, 25)
            img[y:y + tile, x:x + tile] = np.clip(np.array([150, 105, 70]) + shade, 0, 255)
    grain = rng.integers(-30, 30, size=(size, size, 1))
    return np.clip(img.astype(int) + grain, 0, 255).astype(np.uint8)


def test_the_kiosk_names_no_product_on_an_empty_counter_with_the_bundles_rule():
    from edge_search.core.index import VectorIndex
    from edge_search.core.manifest import NoMatchRule, PreprocessCfg
    from edge_search.core.preprocess import preprocess
    from edge_search.core.products import Product, ProductTable
    from edge_search.core.search import Searcher

    pp = PreprocessCfg(size=(32, 32), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    enc = PixelEncoder()
    embed = lambda imgs: enc.embed(np.stack([preprocess(i, pp) for i in imgs]))  # noqa: E731
    catalog = embed([draw_product(i) for i in range(4)])
    table = ProductTable.from_products([Product(id=f"p{i}", name=f"p{i}", keys=(i,)) for i in range(4)], 4)
    negatives = embed([counter_scene(s) for s in range(10)])  # the export's --negatives
    # the bundle's rule: no score floor to speak of (-1), only the no-product class decides
    rule = NoMatchRule(min_margin=0.0, negatives="negatives.npy", negative_margin=0.0, rule="negatives")
    searcher = Searcher(encoder=enc, index=VectorIndex.build(catalog, dtype="f32"), products=table,
                        preprocess_cfg=pp, min_score=-1.0, calibration=rule, negatives=negatives)
    pipe = KioskLoop(searcher, k=1)
    # a hand-held-style sequence: the empty counter (new scenes, each held still), then a product
    lookups = []
    for scene in range(100, 104):
        for i in range(4):
            lookups += [lk for _, lk in [pipe.offer(frame(scene * 10 + i, counter_scene(scene)))] if lk is not None]
    assert len(lookups) == 4  # each new counter view was searched (and retried with every enhancement) ...
    assert all(lk.result.no_match for lk in lookups)  # ... and none named a product
    assert all(lk.tried == ("original", "centre-crop", "equalized") for lk in lookups)
    product = [lk for i in range(4) for _, lk in [pipe.offer(frame(2000 + i, draw_product(2)))] if lk is not None]
    assert [h.id for h in product[0].result.hits] == ["p2"]
    # what the kiosk did before: the pooled floor as a flat cut-off names a product for the counter
    flat = KioskLoop(searcher, k=1, min_score=searcher.min_score).lookup(frame(0, counter_scene(100)))
    assert not flat.result.no_match
