"""A running kiosk switches to a newly installed bundle between frames, without
a gap, and keeps the old one when the new one fails to load."""

from __future__ import annotations

import json
import os
import shutil
import time

import edge_search  # noqa: F401  (onnxruntime before usearch)
from edge_search.errors import BundleError
from edge_search.kiosk.loop import BundleSwapFailed, BundleSwapped, BundleWatcher, FrameSeen, Lookup, KioskLoop, run_kiosk
from edge_search_export.sample_catalog import draw_product
from kiosk_fakes import FakeSearcher, FakeSource


def _bundle_dir(path, name):
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"name": name}))
    return path


def _point(link, target):
    tmp = link.parent / ".tmp-link"
    os.symlink(target.name if target.parent == link.parent else os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


class Named(FakeSearcher):
    def __init__(self, name, min_score=0.5):
        super().__init__(min_score=min_score)
        self.name = name


def _loader(path):
    name = json.loads((path / "manifest.json").read_text())["name"]
    if name.startswith("broken"):
        raise BundleError(f"{path}/model.onnx: checksum mismatch")
    return Named(name)


def test_watcher_swaps_between_frames_without_a_gap_and_keeps_the_old_on_failure(tmp_path):
    a, b, c = (_bundle_dir(tmp_path / n, n) for n in ("a", "b", "broken-c"))
    current = tmp_path / "current"
    _point(current, a)
    watcher = BundleWatcher(current, _loader, interval_s=0.0)
    first = _loader(current.resolve())
    pipe = KioskLoop(first, k=2)
    source = FakeSource()
    events = run_kiosk(source, pipe, watcher=watcher, stop_at_end=False)
    seen, swaps = [], []

    def take(n):
        while len([e for e in seen if isinstance(e, FrameSeen)]) < n:
            e = next(events)
            seen.append(e)
            if isinstance(e, (BundleSwapped, BundleSwapFailed)):
                swaps.append(e)

    source.push(draw_product(1), 10)
    take(10)
    assert pipe.searcher is first and not swaps
    _point(current, b)
    watcher.poll()  # notices the switch and starts loading aside
    watcher.wait()
    source.push(draw_product(1), 10)
    take(20)
    assert [type(s) for s in swaps] == [BundleSwapped] and swaps[0].info.name == "(in memory)"
    assert pipe.searcher.name == "b" and swaps[0].path == b.resolve()
    _point(current, c)
    watcher.poll()
    watcher.wait()
    source.push(draw_product(2), 10)
    take(30)
    assert type(swaps[-1]) is BundleSwapFailed and "checksum mismatch" in swaps[-1].text
    assert pipe.searcher.name == "b"  # the old one stays
    frames = [e.frame.index for e in seen if isinstance(e, FrameSeen)]
    assert frames == list(range(30))  # no frame was lost to a switch
    looked = [e for e in seen if isinstance(e, Lookup)]
    assert looked and all(lk.result.hits for lk in looked)


def test_watcher_is_cheap_between_checks(tmp_path):
    a = _bundle_dir(tmp_path / "a", "a")
    t = [0.0]
    calls = []

    def loader(path):
        calls.append(path)
        return Named("x")

    w = BundleWatcher(a, loader, interval_s=1.0, clock=lambda: t[0])
    (a / "manifest.json").write_text(json.dumps({"name": "a2"}))  # replaced in place (export --force)
    assert w.poll() is None and not calls  # under a second: not even looked at
    t[0] = 1.5
    assert w.poll() is None
    w.wait()
    assert w.poll().info.name == "(in memory)" and calls == [a.resolve()]
    t[0] = 3.0
    assert w.poll() is None and len(calls) == 1  # unchanged: not loaded again


def test_real_bundles_switch_on_install(tiny_bundle, tmp_path, sample_catalog):
    from edge_search.core.images import load_image
    from edge_search.core.search import Searcher
    from edge_search.shipping.install import install

    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    m = json.loads((other / "manifest.json").read_text())
    m["name"] = "other"
    (other / "manifest.json").write_text(json.dumps(m))
    into = tmp_path / "kiosk"
    install(tiny_bundle, into)
    watcher = BundleWatcher(into / "current", lambda p: Searcher.from_bundle(p), interval_s=0.0)
    pipe = KioskLoop(Searcher.from_bundle(into / "current"), k=2)
    source = FakeSource()
    image = load_image(sample_catalog.parent / "images" / "honey.jpg")
    events = run_kiosk(source, pipe, watcher=watcher, stop_at_end=False)
    source.push(image, 3)
    for _ in range(4):
        next(events)
    install(other, into)
    watcher.poll()
    watcher.wait()
    source.push(image, 5)
    got = [next(events) for _ in range(6)]
    swapped = [e for e in got if isinstance(e, BundleSwapped)]
    assert swapped and swapped[0].info.name == "other" and pipe.searcher.manifest.name == "other"


def test_the_screen_switches_bundles_and_says_when_a_new_one_fails(tmp_path):
    from types import SimpleNamespace

    from test_tui import drive, make, until, widget_text

    a, b, c = (_bundle_dir(tmp_path / n, n) for n in ("a", "new-bundle", "broken-c"))
    current = tmp_path / "current"
    _point(current, a)

    def loader(path):
        searcher = _loader(path)
        searcher.manifest = SimpleNamespace(name=searcher.name, product_count=4, created="2026-02-02T00:00:00Z")
        return searcher

    watcher = BundleWatcher(current, loader, interval_s=0.0)
    app, source, _ = make(watcher=watcher)

    async def scenario(pilot):
        source.push(draw_product(1), 4)
        await until(pilot, lambda: "fake-bundle" in widget_text(app, "#status"), "the first bundle")
        _point(current, b)
        deadline = time.monotonic() + 30  # a loaded CI machine: wait for the event, not a count of pauses
        i = 0
        while "new-bundle" not in widget_text(app, "#status") and time.monotonic() < deadline:
            source.push(draw_product(1 + i % 2), 1)
            i += 1
            await pilot.pause(0.02)
        assert "new-bundle · 4 products · built 2026-02-02" in widget_text(app, "#status")
        _point(current, c)
        deadline = time.monotonic() + 30
        while "not used" not in widget_text(app, "#banner") and time.monotonic() < deadline:
            source.push(draw_product(1), 1)
            await pilot.pause(0.02)
        assert "keeping the current one" in widget_text(app, "#banner")
        assert "new-bundle" in widget_text(app, "#status") and app.kiosk_loop.searcher.name == "new-bundle"

    drive(app, scenario)


def test_a_delta_install_is_swapped_in_and_names_the_added_product(tiny_bundle, tmp_path):
    """A nightly delta (the base's index file kept on the device, a delta segment beside it) reaches a
    running kiosk through the same hot swap: the next frames search the new catalog."""
    from bench.update import RELAXED, write_catalog
    from conftest import run_cli
    from edge_search.core.images import load_image
    from edge_search.core.search import Searcher

    env = {"EDGE_SEARCH_CACHE_DIR": str(tmp_path / "cache")}
    prices = {i: 1.0 for i in range(21)}
    b, b2 = tmp_path / "B", tmp_path / "B2"
    run_cli("export", "--catalog", write_catalog(tmp_path / "c1", list(range(20)), prices, tmp_path / "images"),
            "--out", b, "--base", tiny_bundle, "--quiet", *RELAXED, env=env)
    run_cli("export", "--catalog", write_catalog(tmp_path / "c2", list(range(21)), prices, tmp_path / "images"),
            "--out", b2, "--base", b, "--quiet", *RELAXED, env=env)
    assert json.loads((b2 / "manifest.json").read_text())["index"]["delta"]["count"] == 1
    run_cli("pack", b2, "--base", b, "--out", tmp_path / "delta.tar")
    into = tmp_path / "kiosk"
    run_cli("install", b, "--into", into)
    watcher = BundleWatcher(into / "current", lambda p: Searcher.from_bundle(p), interval_s=0.0)
    pipe = KioskLoop(Searcher.from_bundle(into / "current"), k=1)
    new = load_image(tmp_path / "images" / "000020.jpg")
    assert pipe.searcher.search_image(new, k=1, min_score=-1).hits[0].id != "p000020"
    source = FakeSource()
    events = run_kiosk(source, pipe, watcher=watcher, stop_at_end=False)
    source.push(new, 2)
    next(events)
    run_cli("install", tmp_path / "delta.tar", "--into", into)
    watcher.poll()
    watcher.wait()
    source.push(new, 4)
    got = [next(events) for _ in range(4)]
    assert any(isinstance(e, BundleSwapped) and e.info.name == "B2" for e in got)
    assert pipe.searcher.search_image(new, k=1, min_score=-1).hits[0].id == "p000020"
