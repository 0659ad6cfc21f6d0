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
