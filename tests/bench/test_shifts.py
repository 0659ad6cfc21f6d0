"""bench/shifts.py: its store-like shifts and its figures, on cases small enough to count by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.grocery import _searcher
from bench.shifts import SEED, SHIFTS, apply_shift, colour_cast, gamma, gray_world, low_resolution, shift_figures
from bench.stats import resamples
from edge_search.core.products import Product

GRAY = np.full((40, 60, 3), 128, np.uint8)


def test_a_colour_cast_scales_each_channel_by_its_own_gain_within_a_fifth():
    out = colour_cast(GRAY, np.random.default_rng(1))
    gains = out.reshape(-1, 3).astype(float).mean(0) / 128
    assert np.all((gains >= 0.8 - 1 / 128) & (gains <= 1.2 + 1 / 128))
    assert len(set(np.round(gains, 3))) == 3  # three gains: a cast, not a brightness change
    assert np.array_equal(out, colour_cast(GRAY, np.random.default_rng(1)))  # seeded


def test_gamma_keeps_black_and_white_and_bends_the_middle():
    ramp = np.repeat(np.asarray([0, 128, 255], np.uint8)[None, :, None], 3, axis=2)
    out = gamma(ramp, np.random.default_rng(2))
    assert out[0, 0, 0] == 0 and out[0, 2, 0] == 255
    assert 255 * 0.5 ** 1.4 - 1 <= out[0, 1, 0] <= 255 * 0.5 ** 0.7 + 1


def test_low_resolution_keeps_the_size_and_loses_detail():
    checker = ((np.indices((40, 60)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    out = low_resolution(checker, np.random.default_rng(3))
    assert out.shape == checker.shape
    assert out.astype(float).std() < checker.astype(float).std() / 2  # a 1-px checkerboard blurs to grey


def test_gray_world_gives_every_channel_the_grey_mean():
    cast = np.zeros((10, 10, 3), np.uint8) + np.asarray([100, 128, 160], np.uint8)
    out = gray_world(cast, np.random.default_rng(0))
    assert np.all(np.abs(out.astype(int) - 129) <= 1)  # (100 + 128 + 160) / 3 = 129.3 in every channel


def test_every_shift_but_none_changes_a_photo():
    photo = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for name, change in SHIFTS.items():
        if change is not None:
            assert not np.array_equal(change(photo, np.random.default_rng(5)), photo), name
    assert SHIFTS["none"] is None


def test_a_named_shift_draws_from_its_own_seeded_stream_whoever_asks():
    photos = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(3)]
    rng = np.random.default_rng([SEED, list(SHIFTS).index("colour cast")])
    by_hand = [colour_cast(p, rng) for p in photos]  # one stream through the photos, in order
    got = apply_shift(photos, "colour cast")
    assert all(np.array_equal(a, b) for a, b in zip(got, by_hand))
    assert apply_shift(photos, "none") is photos
    other_seed = apply_shift(photos, "colour cast", seed=SEED + 1)
    assert not np.array_equal(other_seed[0], got[0])


def test_figures_counted_by_hand():
    # A at 0 degrees, B at 90, C at 180; a flat floor of 0.9
    catalog = np.asarray([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    products = [Product(id=pid, name=pid, keys=(i,)) for i, pid in enumerate("ABC")]
    searcher = _searcher(None, catalog, products, None, min_score=0.9)
    c, s = math.cos(math.radians(60)), math.sin(math.radians(60))
    # on A (right, 1.0: answered); 30 degrees off B (right, 0.866: refused); on A but labelled C (wrong)
    queries = np.asarray([[1.0, 0.0], [c, s], [1.0, 0.0]], np.float32)
    f = shift_figures(searcher, queries, ["A", "B", "C"], resamples(3, stream=97))
    assert f["recall@1"]["value"] == pytest.approx(2 / 3, abs=1e-4) and f["recall@1"]["n"] == 3
    assert f["right_refused"]["value"] == pytest.approx(1 / 2) and f["right_refused"]["n"] == 2
    assert f["right_score_p50"] == pytest.approx((1.0 + s) / 2, abs=1e-3)
