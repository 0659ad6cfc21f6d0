"""A short soak of the headless kiosk (bench/soak.py, 2 000 frames): memory and
descriptors hold steady and an unplugged camera is picked up again. The
100 000-frame run is `python bench/soak.py --bundle BUNDLE`."""

from __future__ import annotations

import sys

from conftest import REPO


def test_short_soak(tiny_bundle):
    sys.path.insert(0, str(REPO))
    from bench.soak import soak

    r = soak(tiny_bundle, 2000, hold=100, drop_every=500, warmup=500, windows=3, outage_s=0.1)
    assert r["frames"] == 2000 and r["lookups"] >= 5
    assert r["camera"]["drops"] >= 3 and r["camera"]["reconnects"] == r["camera"]["drops"]
    assert r["fds"]["end"] <= r["fds"]["after_warmup"]
    assert r["rss_mb"]["growth"] < 0.05, r["rss_mb"]
