"""bench/student_recipe.py's dev figures on a case small enough to count by hand."""

from __future__ import annotations

import numpy as np


def test_dev_figures_count_hits_rejections_and_the_paired_ratio():
    from bench.student_recipe import dev_figures

    eye = np.eye(4, dtype=np.float32)
    cat = eye[:3]  # three products along the first three axes
    products = np.array([0, 1, 2, 0])
    # the teacher names all four photos; the student misses the last (it points at product 1)
    q_t = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0.9, 0.1, 0, 0]], np.float32)
    q_s = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0.1, 0.9, 0, 0]], np.float32)
    # two scenes with no product: one far from every product, one as close as a correct photo
    neg = np.array([[0, 0, 0, 1], [1, 0, 0, 0]], np.float32)
    f = dev_figures(q_t, q_s, cat, cat, products, neg, neg)
    assert f["teacher"]["dev_r1"]["value"] == 1.0
    assert f["student|teacher catalog"]["dev_r1"]["value"] == 0.75
    assert f["student|teacher catalog"]["of_teacher"]["value"] == 0.75
    # the floor refusing at most 5 % of 4 correct photos refuses none: the lowest correct score, 0.9
    assert f["teacher"]["floor"] == 0.9
    assert f["teacher"]["neg_rejected_at_5pct"]["value"] == 0.5  # the far scene, not the close one
    low, high = f["student|teacher catalog"]["dev_r1"]["ci95"]
    assert low < 0.75 < high  # four photos: the interval is wide
