"""The no-match separators of bench/grocery.py on cases counted by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.grocery import SEPARATORS, SOFTMAX_T, _scores, _searcher
from edge_search.core.products import Product

# three products on a circle: A at 0°, B at 90°, C at 180°
CATALOG = np.asarray([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
PRODUCTS = [Product(id=pid, name=pid, keys=(i,)) for i, pid in enumerate("ABC")]
QUERIES = np.asarray([[1.0, 0.0], [math.sqrt(0.5), math.sqrt(0.5)]], np.float32)  # on A; halfway A-B
SCENE = np.asarray([[0.0, 1.0]], np.float32)  # a no-product scene where B is


def test_every_separator_on_two_queries():
    s = _scores(_searcher(None, CATALOG, PRODUCTS, None), QUERIES, SCENE)
    h = math.sqrt(0.5)
    assert s["top"][0] == "A" and s["top"][1] in ("A", "B")
    np.testing.assert_allclose(s[SEPARATORS[0]], [1.0, h], atol=1e-3)  # top-1
    np.testing.assert_allclose(s[SEPARATORS[1]], [1.0, 0.0], atol=1e-3)  # A over B; A and B tied
    np.testing.assert_allclose(s[SEPARATORS[2]], [1.0 - 0.0, h - h], atol=1e-3)  # minus the scene
    # the next products' mean: (0 + -1) / 2 and (h + -h) / 2
    np.testing.assert_allclose(s[SEPARATORS[3]], [1.0 + 0.5, h - 0.0], atol=1e-3)
    # the softmax share: alone on top, then split evenly with B (C far below both)
    np.testing.assert_allclose(s[SEPARATORS[4]][1], 1 / (2 + math.exp(-2 * h / SOFTMAX_T)), atol=1e-3)
    assert s[SEPARATORS[4]][0] == pytest.approx(1.0, abs=1e-6)


def test_one_product_has_no_runner_up():
    s = _scores(_searcher(None, CATALOG, PRODUCTS, None, keep=[0]), QUERIES[:1], None)
    assert s[SEPARATORS[1]][0] == pytest.approx(2.0, abs=1e-3)  # against -1: no runner-up
    assert SEPARATORS[2] not in s and SEPARATORS[3] not in s and SEPARATORS[4] not in s


def test_the_cut_refuses_at_most_the_budget_of_the_right_answers():
    from bench.separators import cut_figures

    # 20 right answers scoring 0.50 .. 0.69; at a 5 % budget the cut is the second lowest, 0.51: one refused
    known = {SEPARATORS[0]: np.round(np.arange(20) * 0.01 + 0.5, 2)}
    right = np.ones(20, bool)
    others = {"unknown": {SEPARATORS[0]: np.asarray([0.3, 0.505, 0.52, 0.9])}}
    row = cut_figures(known, right, others, 0.05)[SEPARATORS[0]]
    assert row["cut"] == pytest.approx(0.51)
    assert row["false_reject_of_correct"] == pytest.approx(1 / 20)
    assert row["unknown_rejected"] == pytest.approx(2 / 4)  # 0.3 and 0.505 fall below the cut


def test_wrong_names_counted_by_hand():
    from bench.grocery import _wrong_names
    from bench.stats import resamples

    from edge_search.evaluation.no_match import NoMatchOutcomes

    # five photos: right and named, right but refused, wrong and named, wrong and refused, a left-out
    # product's photo named (never right)
    outcomes = NoMatchOutcomes(right=[True, True, False, False], refused=[False, True, False, True],
                               unknown_refused=[False])
    w = _wrong_names(outcomes, resamples(5, stream=99))
    assert w["named_wrong"]["value"] == pytest.approx(2 / 5, abs=1e-4) and w["named_wrong"]["n"] == 5
    assert w["right_when_named"]["value"] == pytest.approx(1 / 3, abs=1e-4) and w["right_when_named"]["n"] == 3
    assert w["named_wrong"]["ci95"][0] <= 0.4 <= w["named_wrong"]["ci95"][1]


def test_auc_counted_by_hand():
    from bench.stats import auc, resamples

    # right answers at 0.9, 0.7, 0.5; wrong ones at 0.6, 0.5: of the 6 pairs the right one is higher in
    # 0.9>0.6, 0.9>0.5, 0.7>0.6, 0.7>0.5, and ties once (0.5 = 0.5) -> (4 + 0.5) / 6
    values = np.asarray([0.9, 0.7, 0.5, 0.6, 0.5])
    right = np.asarray([True, True, True, False, False])
    e = auc(values, right, resamples(5, stream=98))
    assert e.value == pytest.approx(4.5 / 6) and e.n == 5 and e.low <= e.value <= e.high
    assert auc(values, ~right).value == pytest.approx(1.5 / 6)  # the other way round
    assert np.isnan(auc(values, np.ones(5, bool)).value)  # no wrong answers: undefined


def test_a_reused_teachers_chain_of_commands_goes_back_to_random_weights(tmp_path):
    """grocery.md names every command that made a --teacher-checkpoint: each teacher.json's `--init` is
    followed to the one beside it, first command first; a chain that loops stops where it repeats."""
    import json

    from bench.grocery import _made_by

    def saved(name: str, init: str | None) -> str:
        cmd = f".venv/bin/python bench/teacher_recipe.py --out {tmp_path / name} --save" + \
            (f" --init {tmp_path / init / 'teacher.pt'}" if init else "")
        (tmp_path / name).mkdir()
        (tmp_path / name / "teacher.json").write_text(json.dumps({"command": cmd, "seed": 0}))
        return cmd

    first, second, third = saved("a", None), saved("b", "a"), saved("c", "b")
    assert _made_by(str(tmp_path / "c" / "teacher.pt"))["chain"] == [first, second, third]
    assert _made_by(str(tmp_path / "a" / "teacher.pt"))["chain"] == [first]
    assert _made_by(str(tmp_path / "missing" / "teacher.pt")) is None
    # a teacher.json whose --init points back at itself: listed once
    loop = saved("d", "d")
    assert _made_by(str(tmp_path / "d" / "teacher.pt"))["chain"] == [loop]
