"""bench/main_image.py: a product scored by its best image, or by the mean of its best and main image's."""

from __future__ import annotations

import numpy as np
import pytest


def test_a_product_scores_its_best_image_or_the_mean_with_its_main_image():
    from bench.main_image import SCORINGS, product_scores

    # product 0: main image along x, a shelf photo along y; product 1: main image along z, no other image;
    # product 2 is left out of the store
    main = [np.array([[1.0, 0, 0]]), np.array([[0, 0, 1.0]]), np.array([[0, 1.0, 0]])]
    others = [np.array([[0, 1.0, 0]]), None, None]
    kept = np.array([True, True, False])
    got = product_scores(np.array([[0, 2.0, 0], [0.6, 0, 0.8]]), main, others, kept)
    best, mean = got[SCORINGS[0]], got[SCORINGS[1]]
    # a query along y: product 0's shelf photo matches (1.0), its main image does not (0)
    assert best[0, :2] == pytest.approx([1.0, 0.0]) and mean[0, :2] == pytest.approx([0.5, 0.0])
    # a product with one image scores the same either way; a left-out one is never named
    assert best[1, 1] == mean[1, 1] == pytest.approx(0.8) and np.isneginf(best[:, 2]).all()
    assert best[1, 0] == pytest.approx(0.6) and mean[1, 0] == pytest.approx(0.6)


def test_the_flat_floor_refuses_at_most_the_budget_of_right_answers():
    from bench.main_image import flat_floor

    # 20 queries, all named right (product 0 ranks first), scores 0.50 .. 0.69: 5 % of 20 is one refusal
    scores = np.stack([np.linspace(0.5, 0.69, 20), np.zeros(20)], 1)
    floor = flat_floor(scores, np.zeros(20, int))
    assert floor == pytest.approx(0.51) and (scores[:, 0] < floor).sum() == 1
    # wrongly named queries do not count towards the budget: nothing named right, no floor
    assert np.isneginf(flat_floor(scores, np.ones(20, int)))
