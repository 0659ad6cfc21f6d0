"""Fine-tuning the teacher on labeled photos (`export --finetune-labeled`):
reading the labels, the held-back split, the contrastive training itself
(deterministic, learning, towers frozen or not), and the export end to end.
Tiny open_clip teacher, synthetic "store photos" (augmented views of the
sample catalog), fixed seeds, never the network."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_TEACHER, make_checkpoint, read_manifest, run_cli

pytestmark = pytest.mark.export

PHOTOS_PER_PRODUCT = 20


@pytest.fixture(scope="session")
def labeled(sample_catalog, tmp_path_factory):
    """labels.csv with PHOTOS_PER_PRODUCT hand-held-looking photos of each sample product."""
    from edge_search.core.images import encode_jpeg, load_image
    from edge_search_export.sample_catalog import PRODUCTS
    from edge_search_export.views import views

    root = tmp_path_factory.mktemp("labeled")
    (root / "photos").mkdir()
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "id"])
        for i, (pid, *_rest) in enumerate(PRODUCTS):
            img = load_image(sample_catalog.parent / "images" / f"{pid}.jpg")
            for j, v in enumerate(views(img, PHOTOS_PER_PRODUCT + 1, seed=700 + i)[1:]):
                (root / "photos" / f"{pid}-{j}.jpg").write_bytes(encode_jpeg(v))
                w.writerow([f"photos/{pid}-{j}.jpg", pid])
    return root / "labels.csv"


def product_ids():
    from edge_search_export.sample_catalog import PRODUCTS

    return [p[0] for p in PRODUCTS]


def test_labels_file_problems_are_reported_at_once(tmp_path, labeled):
    from edge_search.errors import ExportError
    from edge_search_export.finetune import read_labeled

    bad = tmp_path / "bad.csv"
    bad.write_text(f"image,id\n{labeled.parent / 'photos/pasta-0.jpg'},pasta\n{labeled.parent / 'photos/pasta-1.jpg'},"
                   f"caviar\nnowhere.jpg,honey\n")
    with pytest.raises(ExportError) as err:
        read_labeled(bad, product_ids())
    msg = str(err.value)
    assert "bad.csv: 2 bad row(s)" in msg and "line 3: id 'caviar' is not in the catalog" in msg
    assert "line 4: image" in msg and "not found" in msg and "\n" not in msg
    ok = read_labeled(bad, product_ids(), skip_bad=True)
    assert ok.rows == 3 and len(ok.paths) == 1 and len(ok.skipped) == 2
    (tmp_path / "header.csv").write_text("path,label\nx.jpg,pasta\n")
    with pytest.raises(ExportError, match="--finetune-labeled: .*header.csv: header must have columns image,id"):
        read_labeled(tmp_path / "header.csv", product_ids())


def test_holdout_is_the_last_block_of_each_products_photos(labeled):
    from edge_search_export.finetune import read_labeled

    lab = read_labeled(labeled, product_ids())
    train, held = lab.split(0.1)
    assert len(set(train) & set(held)) == 0 and len(train) + len(held) == len(lab.paths)
    assert np.bincount(lab.products[held]).tolist() == [2] * 12  # 10 % of 20 photos, every product
    # photos pid-0 .. pid-19: the last two by number (pid-18, pid-19; not pid-2, pid-3 as text orders them)
    assert sorted({lab.paths[i].stem.rsplit("-", 1)[1] for i in held}) == ["18", "19"]


def test_holdout_orders_numbers_in_names_as_numbers_and_keeps_single_photos():
    from edge_search_export.finetune import held_back

    paths = [Path("a/IMG_9.jpg"), Path("b/only.jpg"), Path("a/IMG_10.jpg"), Path("a/IMG_2.jpg"), Path("c/x_1.jpg"),
             Path("c/x_3.jpg")]
    train, held = held_back(paths, np.array([0, 1, 0, 0, 2, 2]), 0.1)
    assert held.tolist() == [2, 5] and train.tolist() == [0, 1, 3, 4]  # at least one per product with two or more
    assert held_back(paths, np.array([0, 1, 0, 0, 2, 2]), 0.0)[1].tolist() == []


def train_tiny(labeled, catalog_csv, checkpoint=None, epochs=3, seed=0, negatives=(), config=TINY_TEACHER,
               **settings):
    import torch

    from edge_search.core.images import load_image
    from edge_search_export.sample_catalog import PRODUCTS
    from edge_search_export.config import FinetuneSettings
    from edge_search_export.finetune import finetune_teacher, load_photos, read_labeled
    from edge_search_export.teacher import load_teacher

    torch.manual_seed(seed)
    teacher = load_teacher(str(config), str(checkpoint) if checkpoint else "random")
    lab = read_labeled(labeled, product_ids())
    photos, kept, _ = load_photos(list(lab.paths), 64, False, "")
    catalog = [load_image(catalog_csv.parent / "images" / f"{p[0]}.jpg") for p in PRODUCTS]
    report = finetune_teacher(teacher, photos, lab.products[kept], catalog, np.arange(len(PRODUCTS)),
                              [p[1] for p in PRODUCTS], FinetuneSettings(epochs=epochs, batch_size=16, **settings),
                              seed=seed, progress=False, negatives=negatives)
    return teacher, report


@pytest.fixture(scope="module")
def trained_from_random(labeled, sample_catalog):
    """The tiny teacher trained 4 epochs from random weights, seed 0 (two tests read it; neither changes it)."""
    return train_tiny(labeled, sample_catalog, epochs=4)


def test_training_from_random_weights_learns_and_is_deterministic(labeled, sample_catalog, trained_from_random):
    _, report = trained_from_random
    losses = [h["loss"] for h in report.history]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.3, losses
    assert report.history[-1]["train_top1_in_batch"] > report.history[0]["train_top1_in_batch"]
    assert report.towers == ["image", "text"] and report.learning_rate == 2e-3  # random init trains both
    # the same seed gives the same losses and weights; another seed does not (one epoch shows it)
    first, report1 = train_tiny(labeled, sample_catalog, epochs=1)
    again, report2 = train_tiny(labeled, sample_catalog, epochs=1)
    assert [h["loss"] for h in report2.history] == [h["loss"] for h in report1.history]
    a, b = first.model.state_dict(), again.model.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    other, report3 = train_tiny(labeled, sample_catalog, epochs=1, seed=1)
    assert [h["loss"] for h in report3.history] != [h["loss"] for h in report1.history]


# The tiny pretrained teacher's loss per epoch, measured with the code before the class term and the
# negatives existed (commit 23a3dee): a pretrained teacher given no negatives trains as it did. Within
# 1e-3: that run's OpenCV 5.0 resampled the augmented views a little differently from the pinned 5.1
# (4.9426, 4.7346 now), and a CPU's float rounding moves the last digit; the class term moves the first.
PRETRAINED_LOSSES_BEFORE = [4.9416, 4.7331]


def test_pretrained_teacher_without_negatives_trains_as_before(labeled, sample_catalog, tiny_checkpoint):
    _, report = train_tiny(labeled, sample_catalog, checkpoint=tiny_checkpoint, epochs=2)
    assert [h["loss"] for h in report.history] == pytest.approx(PRETRAINED_LOSSES_BEFORE, rel=1e-3)
    assert report.class_weight == 0.0 and report.negatives == 0 and "prototypes" not in report.to_json()["loss"]


def _flat_noise(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(rng.normal(rng.uniform(30, 220, 3), 20, (80, 80, 3)), 0, 255).astype(np.uint8)
            for _ in range(count)]


def test_negatives_lower_their_best_product_score(labeled, sample_catalog, trained_from_random):
    """Plain coloured noise, 24 images to train on and 24 others to measure: after
    4 epochs from random weights the tiny teacher scores them a median 0.92 against
    their nearest catalog image; with the negatives term (weight 5 on this short
    run) 0.71, and its lowest tenth falls from 0.79 to 0.09 (measured)."""
    from edge_search.core.images import load_image
    from edge_search.core.preprocess import preprocess_batch
    from edge_search_export.sample_catalog import PRODUCTS

    catalog = [load_image(sample_catalog.parent / "images" / f"{p[0]}.jpg") for p in PRODUCTS]
    probe = _flat_noise(24, seed=1)

    def best_scores(teacher) -> np.ndarray:
        c = teacher.encode(preprocess_batch(catalog, teacher.preprocess))
        return (teacher.encode(preprocess_batch(probe, teacher.preprocess)) @ c.T).max(1)

    plain, _ = trained_from_random
    shaped, report = train_tiny(labeled, sample_catalog, epochs=4, negatives=_flat_noise(24, seed=0),
                                negative_weight=5.0)
    before, after = best_scores(plain), best_scores(shaped)
    assert np.median(before) > 0.88 and np.median(after) < 0.8, (np.median(before), np.median(after))
    assert np.percentile(after, 10) < np.percentile(before, 10) - 0.4
    assert report.negatives == 24 and "24 negatives" in report.to_json()["loss"]


def test_unknown_penalty_hinges_the_nearest_other_product_and_its_own():
    import torch

    from edge_search_export.finetune import unknown_penalty

    bank = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]])  # products 0, 1, 2
    products = np.array([0, 1, 2])
    f = torch.tensor([[1.0, 0.0, 0.0]])

    def penalty(labels, margin=0.5, known=0.7, anchor_products=products):
        return float(unknown_penalty(f.repeat(len(labels), 1), np.array(labels), bank, anchor_products, margin, known))

    # a photo of product 0: its own image (cosine 1) clears 0.7, product 2's (0.6) is 0.1 above 0.5
    assert penalty([0]) == pytest.approx(0.1)
    # the same photo labeled 2: product 0's image, at cosine 1, is another product's (0.5 over); its own is
    # at 0.6, 0.1 under the known margin
    assert penalty([2]) == pytest.approx(0.6)
    assert penalty([0, 2]) == pytest.approx(0.35)  # the mean
    assert penalty([0], margin=0.7) == 0.0
    # product 0 has two images (rows 0 and 2): neither is another product's; product 2's (cosine 0) is
    assert penalty([0], margin=-0.5, anchor_products=np.array([0, 2, 0])) == pytest.approx(0.5)
    # a product with no image among the anchors: only the other products' half counts
    assert penalty([5]) == pytest.approx(0.5)


def test_unknown_term_keeps_other_products_further_away(labeled, sample_catalog, trained_from_random):
    """The missing-product question on the tiny teacher: each labeled photo's cosine to the nearest
    catalog image of another product (what it would score were its own product not in the index),
    after 4 epochs from random weights with and without the term (weight 5, margin 0.3). It moves what
    it hinges; on the grocery dev split it did not refuse more unknown products (docs/benchmarks)."""
    from edge_search.core.images import load_image
    from edge_search.core.preprocess import preprocess_batch
    from edge_search_export.finetune import load_photos, read_labeled
    from edge_search_export.sample_catalog import PRODUCTS

    catalog = [load_image(sample_catalog.parent / "images" / f"{p[0]}.jpg") for p in PRODUCTS]
    lab = read_labeled(labeled, product_ids())
    photos, kept, _ = load_photos(list(lab.paths), None, False, "")
    own = lab.products[kept][:, None] == np.arange(len(PRODUCTS))[None, :]

    def scores(teacher) -> tuple[np.ndarray, float]:
        c = teacher.encode(preprocess_batch(catalog, teacher.preprocess))
        s = teacher.encode(preprocess_batch(photos, teacher.preprocess)) @ c.T
        return np.where(own, -np.inf, s).max(1), float((s.argmax(1) == lab.products[kept]).mean())

    plain, _ = trained_from_random
    # the own-product half off (its margin met from the start): what the other half moves, alone
    shaped, report = train_tiny(labeled, sample_catalog, epochs=4, unknown_weight=5.0, unknown_margin=0.3,
                                known_margin=0.3)
    (before, _), (after, r1_after) = scores(plain), scores(shaped)
    # measured: median 0.93 -> 0.85, the photos named right 0.61 -> 0.56
    assert np.median(after) < np.median(before) - 0.05, (np.median(before), np.median(after))
    assert r1_after > 0.45, r1_after
    assert "nearest other product's catalog image above 0.3 and to its own below 0.3" in report.to_json()["loss"]


def test_catalog_term_with_a_margin_by_hand():
    """Two photos, each on its own product's view (cosine 1, the other 0), scale 1. Without a margin each
    row's soft-max loss is log(1 + e^-1); a margin of 0.5 lowers only the own cosine, to 0.5: log(1 + e^-0.5).
    The catalog side's rows are the same by symmetry, so the term (their mean) is that value."""
    import math

    import torch

    from edge_search_export.finetune import catalog_term

    f = g = torch.eye(2)
    pos = torch.tensor([0, 1])
    assert float(catalog_term(f, g, pos, 1.0)) == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert float(catalog_term(f, g, pos, 1.0, 0.5)) == pytest.approx(math.log(1 + math.exp(-0.5)), abs=1e-6)
    # two photos of product 0, one of product 1: the margin pulls the own cosines up harder than it pushes
    # the other's down (the gradient on a photo's own cosine grows with it, the other product's does not move)
    f = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], requires_grad=True)
    pos = torch.tensor([0, 0, 1])
    grads = []
    for m in (0.0, 0.3):
        f.grad = None
        catalog_term(f, torch.eye(2), pos, 4.0, m).backward()
        grads.append(f.grad[1].clone())
    # photo 1 (cosine 0.6 to its own view, 0.8 to the other): the margin asks more of it on both axes
    assert grads[1][0] < grads[0][0] < 0 and grads[1][1] > grads[0][1] > 0, grads


def test_pretrained_teacher_keeps_its_text_tower(labeled, sample_catalog, tiny_checkpoint):
    import torch

    before = torch.load(tiny_checkpoint)["state_dict"]
    teacher, report = train_tiny(labeled, sample_catalog, checkpoint=tiny_checkpoint, epochs=1)
    after = teacher.model.state_dict()
    text = [k for k in after if not k.startswith("visual.") and "logit" not in k and after[k].is_floating_point()]
    assert text and all(torch.equal(before[k], after[k]) for k in text)
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("visual."))
    assert report.towers == ["image"] and report.learning_rate == 1e-5
    _, both = train_tiny(labeled, sample_catalog, checkpoint=tiny_checkpoint, epochs=1, train_text=True)
    assert both.towers == ["image", "text"]


def test_a_vit_teacher_cannot_change_its_input_size(labeled, sample_catalog):
    from edge_search.errors import ExportError

    with pytest.raises(ExportError, match="cannot train at 96 px"):
        train_tiny(labeled, sample_catalog, epochs=1, image_size=96)


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory):
    """A tiny timm CNN teacher (runs at any side): its config and a random-weight checkpoint of it."""
    from conftest import TINY_CNN

    folder = tmp_path_factory.mktemp("cnn")
    config = folder / "tiny-cnn-train.json"
    config.write_text(json.dumps(TINY_CNN), encoding="utf-8")
    return config, make_checkpoint(config, folder / "tiny-cnn.pt")


def _sides_seen(monkeypatch) -> list[tuple[int, int]]:
    """The side of every crop training normalizes, in order."""
    from edge_search_export import finetune

    seen, real = [], finetune.normalize

    def spy(crop, pp):
        seen.append(pp.size)
        return real(crop, pp)

    monkeypatch.setattr(finetune, "normalize", spy)
    return seen


def test_training_at_several_sides_draws_one_side_a_step(labeled, sample_catalog, tiny_cnn, monkeypatch):
    config, ckpt = tiny_cnn
    seen = _sides_seen(monkeypatch)
    _, report = train_tiny(labeled, sample_catalog, checkpoint=ckpt, config=config, epochs=2, train_sides=(32, 48, 64))
    # a step: 16 photos of 4 products and those products' 4 catalog views, all at the step's side
    per_step = 16 + 4
    steps = [set(seen[i:i + per_step]) for i in range(0, len(seen), per_step)]
    assert len(seen) == 2 * (240 // 16) * per_step and all(len(s) == 1 for s in steps)
    assert set().union(*steps) == {(32, 32), (48, 48), (64, 64)}
    assert report.settings["train_sides"] == (32, 48, 64) and len(report.history) == 2
    # one side, the teacher's own, trains exactly as no list: the side's draw has its own stream
    seen.clear()
    _, one = train_tiny(labeled, sample_catalog, checkpoint=ckpt, config=config, epochs=1, train_sides=(64,))
    assert set(seen) == {(64, 64)}
    _, plain = train_tiny(labeled, sample_catalog, checkpoint=ckpt, config=config, epochs=1)
    assert [h["loss"] for h in one.history] == [h["loss"] for h in plain.history]
    seen.clear()  # one side other than the teacher's is the side it trains at
    train_tiny(labeled, sample_catalog, checkpoint=ckpt, config=config, epochs=1, train_sides=(32,))
    assert set(seen) == {(32, 32)}


def test_a_colour_cast_scales_each_channel_on_its_own_and_zero_draws_nothing():
    """Strength 0 leaves only the cast (and a crop at a jittered aspect): a flat grey image comes back flat
    in each channel, at its own gain in [0.8, 1.2]. Without a cast a view is the view it always was (the same draws, in order)."""
    from edge_search_export.views import augment

    grey = np.full((40, 50, 3), 100, np.uint8)
    assert (augment(grey, np.random.default_rng(1), 0.0) == 100).all()
    cast = augment(grey, np.random.default_rng(1), 0.0, colour_cast=0.2).reshape(-1, 3).astype(int)
    assert (cast == cast[0]).all() and ((80 <= cast[0]) & (cast[0] <= 120)).all() and len(set(cast[0])) == 3
    photo = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    plain = augment(photo, np.random.default_rng(3))
    assert np.array_equal(augment(photo, np.random.default_rng(3), 1.0, 0.0), plain)
    assert not np.array_equal(augment(photo, np.random.default_rng(3), 1.0, 0.2), plain)


def test_the_colour_cast_reaches_photos_and_negatives_not_catalog_views(labeled, sample_catalog, tiny_cnn,
                                                                       monkeypatch):
    from edge_search_export import finetune

    real, casts = finetune.augment, []

    def spy(rgb, rng, strength=1.0, colour_cast=0.0):
        casts.append((strength, colour_cast))
        return real(rgb, rng, strength, colour_cast)

    monkeypatch.setattr(finetune, "augment", spy)
    config, ckpt = tiny_cnn
    train_tiny(labeled, sample_catalog, checkpoint=ckpt, config=config, epochs=1, colour_cast=0.2,
               negatives=_flat_noise(8, seed=0), negatives_per_step=4)
    # a step: 16 photos (strength 1), 4 catalog views (0.5), 4 negatives (1); 240 photos, 15 steps
    assert casts.count((1.0, 0.2)) == 15 * (16 + 4) and casts.count((0.5, 0.0)) == 15 * 4
    assert len(casts) == 15 * 24


def test_a_vit_teacher_cannot_train_at_several_sides(labeled, sample_catalog):
    from edge_search.errors import ExportError

    with pytest.raises(ExportError, match="cannot train at 32 px .*leave the fine-tuning training sides at"):
        train_tiny(labeled, sample_catalog, epochs=1, train_sides=(32, 64))


def test_zero_epochs_keeps_the_teacher_as_loaded(labeled, sample_catalog, tiny_checkpoint):
    """What a re-export with an already fine-tuned teacher asks for: photos are
    still held back for calibration, the weights stay as loaded."""
    import torch

    from edge_search_export.teacher import load_teacher

    before = load_teacher(str(TINY_TEACHER), str(tiny_checkpoint)).model.state_dict()
    teacher, report = train_tiny(labeled, sample_catalog, checkpoint=tiny_checkpoint, epochs=0)
    assert report.history == [] and report.to_json()["final"] is None
    after = teacher.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_settings_are_validated():
    from edge_search.errors import ExportError
    from edge_search_export.config import FinetuneSettings

    for bad in ({"epochs": -1}, {"batch_size": 4, "photos_per_product": 4}, {"holdout": 0.6}, {"learning_rate": 2.0},
                {"catalog_weight": 0, "text_weight": 0, "photo_weight": 0}, {"photo_weight": -1},
                {"class_weight": -1}, {"label_smoothing": 1.0}, {"negative_margin": 1.5}, {"negatives_per_step": 0},
                {"unknown_weight": -1}, {"unknown_margin": 1.5},
                {"catalog_margin": -0.1}, {"catalog_margin": 1.0}, {"train_sides": (16, 64)},
                {"train_sides": (64.0,)}, {"colour_cast": -0.1}, {"colour_cast": 0.6}):
        with pytest.raises(ExportError):
            FinetuneSettings(**bad)


def test_export_with_finetuning_records_it_and_calibrates_no_match(tmp_path, sample_catalog, labeled):
    out, models = tmp_path / "tuned", tmp_path / "models"
    # the fine-tuned teacher's own tower ships (no student): it names enough held-out photos to calibrate on
    proc = run_cli("export", "--catalog", sample_catalog, "--out", out, "--teacher", TINY_TEACHER,
                   "--pretrained", "random", "--student", "none", "--gate", "int8_top1_agreement=0.5",
                   "--gate", "catalog_views_top1=0",  # six epochs on 216 photos: rotated crops are not named yet
                   "--finetune-labeled", labeled, "--finetune-epochs", "6", "--finetune-batch", "16",
                   "--save-models", models, "--quiet")
    assert "RANDOM weights" not in proc.stderr  # trained from scratch: not a pipeline check any more
    m = read_manifest(out)
    t = m["teacher"]
    assert t["pretrained"] == "random" and t["random_weights"] is False and t["licence"].startswith("own")
    ft = t["finetune"]
    assert ft["labels"] == "labels.csv" and ft["rows"] == 240 and ft["epochs"] == 6
    assert ft["holdout_photos"] == 24 and ft["photos"] == 216 and ft["trained_towers"] == ["image", "text"]
    assert ft["final"]["loss"] > 0 and ft["seconds"] > 0 and ft["skipped"] == 0
    assert m["fidelity"]["gates"]["enforced"] is True
    nm = m["fidelity"]["no_match"]
    assert nm["source"] == "24 held-out labeled photos (labels.csv)" and nm["calibrated"], nm
    cal = m["search"]["calibration"]
    assert cal["source"] == nm["source"] and cal["max_false_reject"] == 0.05
    assert m["search"]["min_score"] == nm["min_score"] > 0 and cal["min_margin"] == nm["min_margin"]
    assert nm["false_reject_of_correct"] <= 0.05 and set(nm["rules"]) == {"flat", "floor+margin",
                                                                         "product-floors+margin"}  # no negatives
    assert nm["rule"] == max(nm["rules"], key=lambda r: nm["rules"][r]["cross_validation"]) == cal["rule"]
    assert all(r["false_reject_of_correct"] <= 0.05 for r in nm["rules"].values())
    # the kept teacher is a checkpoint the export reads back; the fp32 student an ONNX model
    assert (models / "student.fp32.onnx").stat().st_size > 0
    again = tmp_path / "again"
    run_cli("export", "--catalog", sample_catalog, "--out", again, "--teacher", TINY_TEACHER,
            "--pretrained", models / "teacher.pt", "--student", "none", "--gate", "catalog_views_top1=0", "--quiet")
    assert read_manifest(again)["teacher"]["pretrained"] == "teacher.pt"
    res = json.loads(run_cli("search", "--bundle", out, "--json", labeled.parent / "photos" / "honey-3.jpg").stdout)
    assert set(res) >= {"results", "no_match"}


def test_bad_labels_stop_the_export_in_one_line(tmp_path, sample_catalog):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,id\nmissing.jpg,pasta\n")
    out = tmp_path / "out"
    proc = run_cli("export", "--catalog", sample_catalog, "--out", out, "--teacher", TINY_TEACHER,
                   "--pretrained", "random", "--student", "none", "--finetune-labeled", labels, "--quiet", check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "labels.csv: 1 bad row(s): line 2: image" in err and not out.exists()
    proc = run_cli("export", "--catalog", sample_catalog, "--out", out, "--finetune-epochs", "3", check=False)
    assert proc.returncode == 2 and "need --finetune-labeled" in proc.stderr
    proc = run_cli("export", "--catalog", sample_catalog, "--out", out, "--finetune-margin", "0.2", check=False)
    assert proc.returncode == 2 and "need --finetune-labeled" in proc.stderr
    labels.write_text("image,id\n")
    proc = run_cli("export", "--catalog", sample_catalog, "--out", out, "--teacher", TINY_TEACHER, "--pretrained",
                   "random", "--finetune-labeled", labels, "--finetune-margin", "1.5", "--quiet", check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert "catalog margin must be a cosine in [0, 1), got 1.5" in err and not out.exists()


def test_student_distills_on_the_labeled_photos_with_their_products(tmp_path, sample_catalog, labeled):
    out = tmp_path / "student"
    run_cli("export", "--catalog", sample_catalog, "--out", out, "--teacher", TINY_TEACHER, "--pretrained", "random",
            "--finetune-labeled", labeled, "--finetune-epochs", "1", "--finetune-batch", "16", "--finetune-margin", "0.2",
            "--student", "mobilenetv3_small_050", "--epochs", "1", "--views-per-image", "2",
            "--gate", "int8_top1_agreement=0.5", "--gate", "catalog_self_top1=0", "--gate", "catalog_views_top1=0",
            "--quiet")
    m = read_manifest(out)
    ft = m["teacher"]["finetune"]
    assert ft["settings"]["catalog_margin"] == 0.2 and "photo <-> catalog image (margin 0.2)" in ft["loss"], ft
    s = m["student"]
    # no --distill-images: the 216 labeled photos not held back are the distill photos, and they are labeled
    assert s["distill_images"] == 216, s
    assert "+ 1 x product cross-entropy" in s["distillation"]["loss"] and s["label_weight"] == 1.0, s
    # who embeds the catalog is decided on the 24 held-out store photos, not on augmented studio shots
    ce = m["fidelity"]["catalog_encoder"]
    assert ce["decided_by"] == "held_out_photo_top1" and ce["held_out_photos"] == 24, ce
    preference = {"teacher": 3, "student": 2, "teacher+student": 1, "teacher+student+views": 0}
    best = max(preference, key=lambda n: (ce[n]["held_out_photo_top1"], preference[n]))
    assert ce["chosen"] == best == m["index"]["catalog_encoder"]
    off = tmp_path / "off"
    run_cli("export", "--catalog", sample_catalog, "--out", off, "--teacher", TINY_TEACHER, "--pretrained", "random",
            "--finetune-labeled", labeled, "--finetune-epochs", "1", "--finetune-batch", "16",
            "--student", "mobilenetv3_small_050", "--epochs", "1", "--views-per-image", "2",
            "--distill-label-weight", "0", "--gate", "int8_top1_agreement=0.5", "--gate", "catalog_self_top1=0",
            "--gate", "catalog_views_top1=0", "--distill-images", labeled.parent / "photos", "--quiet")
    off_student = read_manifest(off)["student"]
    assert "cross-entropy" not in off_student["distillation"]["loss"] and off_student["label_weight"] == 0
    # the folder holds all 240 labeled photos, the 24 held back among them: still 216 distilled, each once
    assert len(list((labeled.parent / "photos").glob("*.jpg"))) == 240 and off_student["distill_images"] == 216
    proc = run_cli("export", "--catalog", sample_catalog, "--out", tmp_path / "bad", "--distill-label-weight", "-1",
                   check=False)
    assert proc.returncode == 2 and "--distill-label-weight must be >= 0" in proc.stderr
