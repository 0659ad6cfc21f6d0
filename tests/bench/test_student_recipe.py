"""bench/student_recipe.py's dev figures on a case small enough to count by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edge_search.errors import EdgeSearchError


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
    # how closely the student follows the teacher, right or wrong: three photos of four end on the same
    # product; the fourth's vectors are at cos (0.09 + 0.09) / 0.82; the scenes are embedded alike
    follows = f["student|teacher catalog"]["follows_teacher"]
    assert follows["top1_agreement_dev"]["value"] == 0.75 and follows["top1_agreement_negatives"]["value"] == 1.0
    assert follows["cosine_dev"] == round((3 + 0.18 / 0.82) / 4, 4) and follows["cosine_negatives"] == 1.0


def test_mixed_images_blend_two_different_photos(tmp_path):
    import cv2

    from bench.student_recipe import MIX, write_mixed

    # three flat photos, one colour channel each: a blend shows exactly two of them, in MIX's proportions
    photos = []
    for c in range(3):
        rgb = np.zeros((40, 30, 3), np.uint8)
        rgb[..., c] = 200
        photos.append(tmp_path / f"p{c}.png")
        cv2.imwrite(str(photos[-1]), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    folder = write_mixed(photos, 6, tmp_path / "mixed", seed=0)
    made = sorted(folder.glob("*.jpg"))
    assert len(made) == 6
    for path in made:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).reshape(-1, 3).mean(0)
        shown = rgb > 20
        assert shown.sum() == 2  # two different photos, never one twice
        share = rgb[shown] / 200
        assert abs(share.sum() - 1) < 0.05 and MIX[0] - 0.05 < share.min() <= 0.5
    again = write_mixed(photos, 6, tmp_path / "again", seed=0)
    assert [p.read_bytes() for p in made] == [p.read_bytes() for p in sorted(again.glob("*.jpg"))]  # seeded
    # a second run keeps the folder it made; a folder holding anything else is refused, nothing written
    stamp = [p.stat().st_mtime_ns for p in made]
    assert write_mixed(photos, 6, folder, seed=0) == folder and [p.stat().st_mtime_ns for p in made] == stamp
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(EdgeSearchError, match=r"other: exists and is not a folder of 6 mixed images"):
        write_mixed(photos, 6, other, seed=0)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left


def test_epoch_and_weight_lists_parse_or_say_what_is_wrong():
    import argparse

    from bench.student_recipe import _epoch_list, _weight_list

    assert _epoch_list("0,4,8") == [0, 4, 8]
    assert _weight_list("0,0.3,1") == [0.0, 0.3, 1.0]
    for parse, bad, said in [(_epoch_list, "4,-1", "epochs must be finite and >= 0"),
                             (_epoch_list, "4,x", "whole numbers"),
                             (_weight_list, "0.3,-0.1", "weights must be finite and >= 0"),
                             (_weight_list, "nan", "weights must"), (_weight_list, "0.3,inf", "weights must"),
                             (_weight_list, "0.3,,1", "comma-separated numbers")]:
        with pytest.raises(argparse.ArgumentTypeError, match=said):
            parse(bad)


@pytest.mark.export
@pytest.mark.parametrize("shift", ["sepia", "none"])
def test_a_shift_names_one_of_bench_shifts_before_anything_is_built(tmp_path, capsys, shift):
    pytest.importorskip("torch", reason="the recipe's main needs the [export] extra")
    from bench.student_recipe import main

    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "out"), "--teacher-checkpoint", "random", "--shift", shift])
    assert stop.value.code == 2 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("--shift is one of colour cast, gamma, blur, low resolution, all four, "
                        "gray-world balance, query only")
