"""bench/students.py: the Pareto front and the best point on cases small enough to reason about, and a
miniature run on four products of the real dataset (every stage: distillation, three forms, timing)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import GROCERY, REPO


def _p(ms, agree, mb=2.0, cos=0.9):
    return {"ms_p50": ms, "top1_agreement": agree, "mb": mb, "mean_cosine": cos}


def test_pareto_front_keeps_what_nothing_beats_on_both():
    from bench.students import pareto_front

    points = {"a": _p(1.0, 0.60), "b": _p(2.0, 0.80), "c": _p(2.5, 0.70),  # c: slower and worse than b
              "d": _p(3.0, 0.90), "e": _p(1.0, 0.55),  # e: as fast as a, less faithful
              "timed-only": {"ms_p50": 0.5, "top1_agreement": None, "mb": 1.0}}
    assert pareto_front(points) == ["a", "b", "d"]


def test_best_point_is_the_most_faithful_within_size_and_speed():
    from bench.students import best_point

    points = {"fast": _p(1.0, 0.70), "faithful-but-slow": _p(4.0, 0.95),  # 100 / 4 = 25x < 30x
              "too-big": _p(1.5, 0.99, mb=6.0), "good": _p(3.0, 0.85), "good-tie": _p(2.0, 0.85, cos=0.8)}
    assert best_point(points, reference_ms=100.0) == "good"  # ties on agreement go to the higher cosine
    assert best_point(points, reference_ms=100.0, ratio=20.0) == "faithful-but-slow"
    assert best_point({"x": _p(4.0, 0.9)}, reference_ms=100.0) is None


def _q(arch, side, form, ms, agree=None, mb=2.0):
    return {"arch": arch, "side": side, "form": form, "ms_p50": ms, "top1_agreement": agree, "mb": mb,
            "mean_cosine": 0.9}


def test_best_point_must_reach_the_target_at_the_default_teachers_side():
    from bench.students import best_point

    # distilled at 128; timed at 224 as well: a faithful backbone too slow at 224 loses to one fast there
    points = {"v4@128 int8": _q("v4", 128, "int8", 0.9, agree=0.40), "v4@224 int8": _q("v4", 224, "int8", 3.5),
              "v3@128 fp16": _q("v3", 128, "fp16", 0.6, agree=0.37), "v3@224 fp16": _q("v3", 224, "fp16", 1.5),
              "v2@128 fp16": _q("v2", 128, "fp16", 0.5, agree=0.30)}  # never timed at 224: its own side counts
    assert best_point(points, reference_ms=100.0) == "v4@128 int8"  # 100 / 0.9 = 111x at 128
    assert best_point(points, reference_ms=100.0, at_side=224) == "v3@128 fp16"  # v4 at 224: 28.6x < 30x
    points["v3@224 fp16"]["mb"] = 6.0  # over the budget where the target is met: out as well
    assert best_point(points, reference_ms=100.0, at_side=224) == "v2@128 fp16"


def test_fidelity_counts_agreement_with_the_teacher_not_with_the_labels():
    from bench import stats
    from bench.students import fidelity

    cat = np.eye(3, dtype=np.float32)
    products = np.array([0, 1, 2, 2])
    q_t = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]  # the teacher misses photo 3 (names product 1)
    q_s = np.eye(3, dtype=np.float32)[[0, 1, 0, 1]]  # the student misses photo 2, agrees on photo 3's miss
    f = fidelity(q_s, q_t, cat, products, stats.resamples(4, stream=60))
    assert f["top1_agreement"]["value"] == 0.75 and f["recall@1"]["value"] == 0.5
    assert f["teacher_recall@1"]["value"] == 0.75 and f["mean_cosine"] == 0.75


@pytest.mark.export
@pytest.mark.dataset
def test_students_miniature(tmp_path):
    if not (GROCERY / "classes.csv").is_file():
        pytest.skip(f"grocery dataset not found at {GROCERY} (set EDGE_SEARCH_GROCERY)")
    out = tmp_path / "students"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "students.py"), "--data", str(GROCERY), "--out", str(out),
         "--teacher", str(REPO / "models" / "teachers" / "grocery-cnn.json"), "--teacher-checkpoint", "random",
         "--classes", "4", "--candidates", "mobilenetv3_small_050,mobilenetv2_050", "--sides", "64,96",
         "--fidelity-sides", "64", "--epochs", "1", "--views-per-image", "2", "--dev-negatives", "5",
         "--negatives-dir", str(tmp_path / "negatives"), "--rounds", "1", "--calls", "3",
         "--reference", str(REPO / "models" / "teachers" / "tiny-vit-test.json")],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "students.json").read_text())
    pts = r["points"]
    # 2 backbones x 2 sides x 3 forms, distilled and measured at 64 px only
    assert len(pts) == 12 and {p["form"] for p in pts.values()} == {"fp32", "int8", "fp16"}
    measured = {n for n, p in pts.items() if p.get("top1_agreement") is not None}
    assert measured == {n for n, p in pts.items() if p["side"] == 64}
    for n in measured:
        p = pts[n]
        assert p["top1_agreement_ci"]["n"] == r["dev_photos"]
    for arch in ("mobilenetv3_small_050", "mobilenetv2_050"):
        mb = {f: pts[f"{arch}@64 {f}"]["mb"] for f in ("fp32", "int8", "fp16")}
        assert mb["int8"] < mb["fp16"] < mb["fp32"]
        # fp16 storage only rounds the weights: its figures are the fp32 model's within a rounding
        assert abs(pts[f"{arch}@64 fp16"]["mean_cosine"] - pts[f"{arch}@64 fp32"]["mean_cosine"]) < 1e-3
    assert set(r["pareto_front"]) <= measured and r["pareto_front"]
    assert r["target_side"] == 224 and (r["best"] is None or r["best"] in measured)
    for p in pts.values():
        assert p["x_reference_p50"] == round(r["reference_ms_p50"]["2"] / p["ms_p50"], 2)
    md = (out / "students.md").read_text()
    assert "bench/students.py" in md and md.count("| mobilenetv") == 12
