"""bench/kiosk_video.py's bookkeeping on cases counted by hand: which shown item each kiosk answer
belongs to, and what a shopper met for each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.kiosk_video import SIDE, figures, held_frames, outcomes


def line(frame: int, named: str | None) -> dict:
    return {"frame": frame, "no_match": named is None, "results": [{"id": named}] if named else []}


def test_answers_are_counted_per_item_shown():
    items = [(Path("a.jpg"), "A"), (Path("s.jpg"), None), (Path("b.jpg"), "B"), (Path("c.jpg"), "C"),
             (Path("t.jpg"), None)]
    held = 10
    # A: named right once; the scene: one no-match search; B: right, then another product (a wrong name
    # was shown); C: never searched; the second scene: named
    lines = [line(2, "A"), line(13, None), line(22, "B"), line(27, "A"), line(42, "C")]
    shown = outcomes(lines, items, held)
    assert [s["searches"] for s in shown] == [1, 1, 2, 0, 1]
    assert [s["named"] for s in shown] == [["A"], [], ["B", "A"], [], ["C"]]
    f = figures(shown)
    assert (f["products_shown"], f["scenes_shown"]) == (3, 2)
    assert f["products_searched"]["value"] == round(2 / 3, 4)
    assert f["answered_right"]["value"] == round(1 / 3, 4)  # A only: B also showed a wrong name
    assert f["named_wrong"]["value"] == round(1 / 3, 4)
    assert f["right_when_named"]["value"] == 0.5 and f["right_when_named"]["n"] == 2
    assert f["scenes_searched"]["value"] == 1.0 and f["scenes_named"]["value"] == 0.5
    assert f["searches_per_product"] == 1.0


def test_a_held_photo_drifts_a_little_and_is_seeded():
    rgb = np.zeros((348, 464, 3), np.uint8)
    rgb[100:250, 150:300] = 255
    one = held_frames(rgb, 5, np.random.default_rng(3))
    two = held_frames(rgb, 5, np.random.default_rng(3))
    assert len(one) == 5 and all(f.shape == (SIDE, SIDE, 3) for f in one)
    assert all(np.array_equal(x, y) for x, y in zip(one, two))
    # consecutive frames differ (a hand is never still), by a few pixels' shift, not a new view
    step = [np.abs(a.astype(int) - b.astype(int)).mean() / 255 for a, b in zip(one, one[1:])]
    assert all(0 < s < 0.05 for s in step)
