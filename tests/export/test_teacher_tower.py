"""`--student teacher-tower`: the student is a trainable copy of the teacher's single-pass image tower,
distilled at the student's side towards the teacher's (multi-side) embeddings. Checked on a tiny timm
CNN with random weights saved to a checkpoint file, loaded as a user's file is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CNN as CNN, TINY_TEACHER, make_checkpoint, one_line_error, read_manifest, run_cli

pytestmark = pytest.mark.export
torch = pytest.importorskip("torch", reason="export tests need the [export] extra")

GATES = ["--gate", "int8_top1_agreement=0.5", "--gate", "catalog_views_top1=0"]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> tuple[Path, Path]:
    """(a config that runs the tower at 48 and 64 px, a checkpoint of its weights)."""
    folder = tmp_path_factory.mktemp("cnn")
    plain, sides = folder / "tiny-cnn-plain.json", folder / "tiny-cnn-tower.json"
    plain.write_text(json.dumps(CNN), encoding="utf-8")
    sides.write_text(json.dumps({**CNN, "test_sides": [48, 64]}), encoding="utf-8")
    return sides, make_checkpoint(plain, folder / "tiny-cnn-tower.pt")


def _pixels(n: int, side: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, side, side)).astype(np.float32))


def test_the_copy_starts_as_the_teacher_and_trains_apart_from_it(cnn):
    from edge_search_export.student import TEACHER_TOWER, make_student
    from edge_search_export.teacher import load_teacher

    teacher = load_teacher(str(cnn[0]), str(cnn[1]))
    student = make_student(TEACHER_TOWER, teacher, 32)
    x = _pixels(2, 32, 0)
    with torch.no_grad():
        np.testing.assert_allclose(student(x).numpy(), teacher.visual(x).numpy(), atol=1e-6)
    assert all(p.requires_grad for p in student.parameters())
    before = teacher.encode(_pixels(2, 64, 1).numpy())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    np.testing.assert_array_equal(teacher.encode(_pixels(2, 64, 1).numpy()), before)


def test_distillation_brings_one_small_pass_towards_the_ensemble(cnn, sample_catalog):
    from dataclasses import replace

    from edge_search.core.images import load_image
    from edge_search.core.preprocess import normalize
    from edge_search_export.distill import build_view_bank, distill
    from edge_search_export.student import TEACHER_TOWER, make_student
    from edge_search_export.teacher import load_teacher

    teacher = load_teacher(str(cnn[0]), str(cnn[1]))
    images = [load_image(p) for p in sorted((sample_catalog.parent / "images").glob("*.jpg"))]
    pp = replace(teacher.preprocess, size=(32, 32))
    bank = build_view_bank(teacher, images, [8] * len(images), pp, seed=0, progress=False)
    student = make_student(TEACHER_TOWER, teacher, 32)

    def cosine() -> float:
        with torch.no_grad():
            x = torch.from_numpy(np.stack([normalize(c, pp) for c in bank.crops]))
            s = torch.nn.functional.normalize(student.eval()(x), dim=-1).numpy()
        return float((s * bank.targets).sum(1).mean())

    start = cosine()
    distill(student, bank, pp, epochs=6, batch_size=16, learning_rate=1e-3,
            relational_weight=0.0, seed=0, progress=False, keep_norm_statistics=True)
    end = cosine()
    assert 1 - start > 1e-3  # one 32-px pass is not the 48 + 64 px ensemble
    assert 1 - end < (1 - start) * 2 / 3, (start, end)


def test_export_ships_the_distilled_copy_at_its_own_side(cnn, tmp_path, sample_catalog):
    out = tmp_path / "bundle"
    proc = run_cli("export", "--catalog", sample_catalog, "--out", out, "--teacher", cnn[0], "--pretrained", cnn[1],
                   "--student", "teacher-tower", "--image-size", "32", "--epochs", "1", "--views-per-image", "4",
                   "--quantize", "int8", *GATES, "--quiet")
    assert proc.returncode == 0
    m = read_manifest(out)
    assert m["student"]["arch"] == "teacher-tower" and m["student"]["pretrained"] == "the teacher's weights"
    assert m["student"]["learning_rate"] == 6e-4 and m["student"]["image_size"] == 32
    assert m["student"]["label_weight"] == 1.0 and "+ 1 x product cross-entropy" in m["student"]["distillation"]["loss"]
    assert m["student"]["kept_norm_statistics"] is True
    assert m["preprocess"]["size"] == [32, 32] and m["teacher"]["preprocess_size"] == [64, 64]
    from edge_search_export.teacher import load_teacher

    tower = load_teacher(str(cnn[0]), str(cnn[1])).visual
    assert m["student"]["params"] == sum(p.numel() for p in tower.parameters())
    hits = json.loads(run_cli("search", "--bundle", out, "--json", "-k", "1",
                              sample_catalog.parent / "images" / "pasta.jpg").stdout)
    assert hits["results"][0]["id"] == "pasta"


def test_a_tower_that_cannot_run_at_the_side_is_one_line(tmp_path, sample_catalog, tiny_checkpoint):
    out = tmp_path / "bundle"
    proc = run_cli("export", "--catalog", sample_catalog, "--out", out, "--teacher", TINY_TEACHER,
                   "--pretrained", tiny_checkpoint, "--student", "teacher-tower", "--image-size", "48",
                   "--epochs", "1", "--quiet", check=False)
    one_line_error(proc, "teacher-tower", "cannot run at 48 px", "--image-size")
    assert not out.exists()


def test_teacher_tower_is_not_an_imagenet_student(cnn, tmp_path, sample_catalog):
    out = tmp_path / "bundle"
    proc = run_cli("export", "--catalog", sample_catalog, "--out", out, "--teacher", cnn[0], "--pretrained", cnn[1],
                   "--student", "teacher-tower", "--student-pretrained", "--quiet", check=False)
    one_line_error(proc, "--student-pretrained", "teacher-tower")
    assert not out.exists()


def test_the_view_banks_colour_cast_is_the_same_here_and_in_a_ray_worker(cnn, sample_catalog):
    """`--colour-cast`: the distillation views' channels each take their own gain. With 0 the bank is the
    bank it always was; the Ray engine's unit of work (view_bank_item) makes the local bank's views."""
    from dataclasses import replace

    from edge_search.core.images import load_image
    from edge_search_export.distill import build_view_bank, view_bank_item
    from edge_search_export.teacher import load_teacher

    teacher = load_teacher(str(cnn[0]), str(cnn[1]))
    images = [load_image(p) for p in sorted((sample_catalog.parent / "images").glob("*.jpg"))[:3]]
    pp = replace(teacher.preprocess, size=(32, 32))
    plain = build_view_bank(teacher, images, [4] * 3, pp, seed=0, progress=False)
    zero = build_view_bank(teacher, images, [4] * 3, pp, seed=0, progress=False, colour_cast=0.0)
    cast = build_view_bank(teacher, images, [4] * 3, pp, seed=0, progress=False, colour_cast=0.2)
    assert np.array_equal(plain.crops, zero.crops) and np.array_equal(plain.source, cast.source)
    first = np.arange(12) % 4 == 0  # each image's first view is the image itself
    assert np.array_equal(plain.crops[first], cast.crops[first])
    assert all(not np.array_equal(a, b) for a, b in zip(plain.crops[~first], cast.crops[~first]))
    crops, targets = view_bank_item(teacher, images[2], 4, pp, 0, 2, colour_cast=0.2)
    assert np.array_equal(crops, cast.crops[8:])
    assert np.allclose(targets, cast.targets[8:], atol=1e-5)
