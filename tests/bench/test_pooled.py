"""bench/pooled.py: left-out sets that partition the catalog, and outcomes pooled over them."""

from __future__ import annotations

import numpy as np
import pytest

from edge_search.evaluation.no_match import NoMatchOutcomes


def test_the_left_out_sets_partition_the_catalog_and_depend_only_on_the_seed():
    from bench.pooled import partition

    ids = [f"p{i}" for i in range(11)]
    sets = partition(ids, 3, seed=0)
    assert sorted(sum(sets, [])) == sorted(ids) and sorted(map(len, sets)) == [3, 4, 4]
    assert partition(ids, 3, seed=0) == sets and partition(ids, 3, seed=1) != sets


def test_pooled_figures_count_every_set_and_name_the_products():
    from bench.pooled import pooled_figures

    # set 1: product a's two photos known (one right, refused), b unknown and refused; set 2: the reverse
    one = {"photos": NoMatchOutcomes(right=[True, True], refused=[True, False], unknown_refused=[True]),
           "scenes": np.array([True, False])}
    two = {"photos": NoMatchOutcomes(right=[False], refused=[False], unknown_refused=[False, False]),
           "scenes": np.array([True, True])}
    f = pooled_figures([one, two], "scenes", ["a", "a", "b"], ["b", "a", "a"])
    assert f["answered_right"]["value"] == pytest.approx(1 / 3, abs=1e-4)  # a's second photo only
    assert f["false_reject_of_correct"]["value"] == pytest.approx(1 / 2, abs=1e-4)
    assert f["unknown_rejected"]["value"] == pytest.approx(1 / 3, abs=1e-4) and f["unknown_rejected_by_set"] == [1.0, 0.0]
    assert f["scenes_rejected"]["value"] == pytest.approx(3 / 4, abs=1e-4)
    # named: a's right photo, b's wrong known photo and a's two unknown photos: 1 right of 4 names
    assert f["right_when_named"]["value"] == pytest.approx(1 / 4, abs=1e-4)
    assert f["named_wrong"]["value"] == pytest.approx(3 / 6, abs=1e-4)


def test_pooled_separability_cuts_once_over_every_set_at_the_budget():
    from bench.pooled import pooled_separability

    # 20 right answers over two sets score 0.50 .. 0.69 (one wrong answer at 0.10 does not count); at a
    # 10 % budget the cut is the third lowest right score, 0.52: 0.50 and 0.51 refused
    known = np.round(np.arange(0.50, 0.70, 0.01), 2)
    one = {"known": {"top": np.array(["a"] * 11, object), "top-1 score": np.append(known[:10], 0.10)},
           "right": [True] * 10 + [False],
           "unknown": {"top": np.array(["a"] * 2, object), "top-1 score": np.array([0.40, 0.60])},
           "scenes": {"top": np.array(["a"] * 2, object), "top-1 score": np.array([0.20, 0.55])}}
    two = {"known": {"top": np.array(["b"] * 10, object), "top-1 score": known[10:]},
           "right": [True] * 10,
           "unknown": {"top": np.array(["b"] * 2, object), "top-1 score": np.array([0.30, 0.515])},
           "scenes": {"top": np.array(["b"] * 2, object), "top-1 score": np.array([0.30, 0.90])}}
    f = pooled_separability([one, two], ["a"] * 11 + ["b"] * 10, ["b", "b", "a", "a"], 0.1)
    row = f["top-1 score"]
    assert row["cut"] == pytest.approx(0.52)
    assert row["false_reject_of_correct"]["value"] == pytest.approx(2 / 20, abs=1e-4)
    assert row["unknown_rejected"]["value"] == pytest.approx(3 / 4, abs=1e-4)  # 0.40, 0.30, 0.515
    assert row["scenes_rejected"]["value"] == pytest.approx(2 / 4, abs=1e-4)  # 0.20, 0.30
    # a separator one set lacks is not judged; no right answer: nothing to cut at
    two["known"]["margin"] = known[10:]
    assert set(pooled_separability([one, two], ["a"] * 11 + ["b"] * 10, ["b", "b", "a", "a"], 0.1)) == {"top-1 score"}
    one["right"], two["right"] = [False] * 11, [False] * 10
    assert pooled_separability([one, two], ["a"] * 11 + ["b"] * 10, ["b", "b", "a", "a"], 0.1) == {}
