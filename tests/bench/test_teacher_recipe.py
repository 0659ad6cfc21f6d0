"""bench/teacher_recipe.py's dev figures on cases small enough to count by hand."""

from __future__ import annotations

import numpy as np
import pytest


def test_score_floor_lets_at_most_the_budget_of_correct_photos_fall_below():
    from bench.teacher_recipe import rejection_at_budget, score_floor

    correct = np.array([0.9, 0.5, 0.8, 0.7] * 5)  # 20 photos: 5 % is one photo
    assert score_floor(correct, 0.05) == 0.5  # floor(0.05 * 20) = 1 photo may fall below: none does
    assert score_floor(correct, 0.25) == 0.7  # 5 photos may: the five at 0.5 do
    assert np.isnan(score_floor(np.zeros(0)))
    floor, refused = rejection_at_budget(correct, np.array([0.4, 0.5, 0.95]), 0.25)
    assert (floor, refused) == (0.7, pytest.approx(2 / 3))  # a scene at exactly the floor is kept


def _sims(look_alike: float) -> tuple[np.ndarray, np.ndarray]:
    """Four products, two photos each, 0.9 against their own product, 0.2 against the others; product 3's
    photos score `look_alike` against product 2."""
    products = np.repeat(np.arange(4), 2)
    sims = np.full((8, 4), 0.2)
    sims[np.arange(8), products] = 0.9
    sims[products == 3, 2] = look_alike
    return sims, products


def test_unknown_products_are_refused_unless_they_look_like_a_kept_one():
    from bench.teacher_recipe import unknown_rejection

    sims, products = _sims(0.3)
    # whichever product is left out, its photos score 0.2 or 0.3 against the rest: under the 0.9 floor
    assert unknown_rejection(sims, products, left_out=1, draws=50) == 1.0
    # product 3's photos score 0.95 against product 2: they are named product 2 even with product 3 in the
    # catalog (not correct, so not part of the floor), and pass the floor when product 3 is left out;
    # the other three products' photos are refused: 3 in 4 draws on average
    sims, products = _sims(0.95)
    got = unknown_rejection(sims, products, left_out=1, draws=400)
    assert got == pytest.approx(0.75, abs=0.06)
    assert got == unknown_rejection(sims, products, left_out=1, draws=400)  # seeded


@pytest.mark.export
def test_speed_times_each_model_and_divides_by_the_students_faster_form(tmp_path):
    pytest.importorskip("torch", reason="timing a teacher needs the [export] extra")
    import json

    from bench.teacher_recipe import speed

    from conftest import TINY_CNN

    config = tmp_path / "tiny-cnn.json"
    config.write_text(json.dumps({**TINY_CNN, "test_sides": [32, 64]}))
    got = speed(str(config), "teacher-tower", rounds=1, threads=1, student_side=32)
    ms = got["ms_p50"]
    assert set(ms) == {"teacher_int8", "student_int8", "student_fp32"} and min(ms.values()) > 0
    assert got["student_fastest"] == min(("student_int8", "student_fp32"), key=ms.get)
    assert got["teacher_slower_x"] == pytest.approx(ms["teacher_int8"] / ms[got["student_fastest"]], rel=1e-2)
    assert (got["teacher_side"], got["student_side"]) == (64, 32)


def test_the_report_names_every_command_a_continued_teacher_took():
    """A teacher trained on from a saved one (`--init T.pt`) records what T was made by; grocery.md's
    protocol line then gives both commands, in order."""
    from bench.grocery_report import _teacher_line

    made = {"command": "train-more --init a/teacher.pt", "init_made_by": "train-from-scratch"}
    r = {"export": {"teacher": {"model": "grocery-resnet", "config": "models/teachers/grocery-resnet.json"}},
         "protocol": {"teacher_checkpoint": "b/teacher.pt", "teacher_checkpoint_made_by": made}}
    assert "made by `train-from-scratch`, then `train-more --init a/teacher.pt` on the fit photos" in _teacher_line(r)
    made.pop("init_made_by")
    line = _teacher_line(r)
    assert "made by `train-more --init a/teacher.pt` on the fit photos" in line and "then" not in line


def test_unseen_products_are_measured_against_the_other_products_floor():
    from bench.teacher_recipe import unseen_figures

    products = np.array([0, 0, 1, 1, 2, 2])  # product 2 never trained on
    sims = np.array([[0.9, 0.2, 0.3], [0.7, 0.2, 0.1],
                     [0.2, 0.8, 0.3], [0.6, 0.5, 0.2],  # the second photo of product 1 is named 0: not correct
                     [0.65, 0.2, 0.9], [0.3, 0.75, 0.95]])
    # three correct photos of products 0 and 1 (0.9, 0.7, 0.8): 5 % of them is none, so the floor is 0.7;
    # product 2 left out of the index, its photos' best scores are 0.65 (refused) and 0.75 (named)
    assert unseen_figures(sims, products, np.array([2])) == {
        "unseen_refused_at_5pct": 0.5, "unseen_r1_in_index": 1.0, "seen_r1": 0.75, "unseen_photos": 2}
    # a budget of one photo in three: the floor is 0.8 and both are refused
    assert unseen_figures(sims, products, np.array([2]), budget=0.34)["unseen_refused_at_5pct"] == 1.0


def test_set_values_parse_as_the_setting_needs():
    import argparse

    from bench.teacher_recipe import _setting_value

    ap = argparse.ArgumentParser()
    assert _setting_value("train_sides", "112,128,160", ap) == (112, 128, 160)
    assert _setting_value("epochs", "28", ap) == 28 and _setting_value("learning_rate", "3e-3", ap) == 0.003
    assert _setting_value("class_weight", "None", ap) is None and _setting_value("train_text", "False", ap) is False
    with pytest.raises(SystemExit):
        _setting_value("train_sides", "112,big", ap)
    with pytest.raises(SystemExit):
        _setting_value("epochs", "many", ap)


@pytest.mark.export
def test_a_setting_the_recipe_refuses_is_one_line_and_writes_nothing(tmp_path, capsys):
    pytest.importorskip("torch", reason="the recipe's main needs the [export] extra")
    from bench.teacher_recipe import main

    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "out"), "--set", "train_sides=16,64"])
    assert stop.value.code == 2 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("--set: fine-tuning training sides must be whole numbers between 32 and 1024, got [16, 64]")


@pytest.mark.export
@pytest.mark.parametrize("args", [["--shift", "colour cast"], ["--sides", "112", "--shift", "sepia"],
                                  ["--sides", "112", "--shift", "none"]])
def test_a_shift_goes_with_sides_and_names_one_of_bench_shifts(tmp_path, capsys, args):
    pytest.importorskip("torch", reason="the recipe's main needs the [export] extra")
    from bench.teacher_recipe import main

    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "out"), *args])
    assert stop.value.code == 2 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("--shift goes with --sides and is one of colour cast, gamma, blur, low resolution, "
                        "all four, gray-world balance, query only")
