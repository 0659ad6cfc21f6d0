"""The quality check and the enhancements: which frames are searched, and why not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import edge_search  # noqa: F401  (onnxruntime before usearch)
from edge_search.kiosk.enhance import ENHANCEMENTS, centre_crop, describe, equalize
from edge_search.kiosk.quality import PRESETS, REASONS, QualityCheck, QualityConfig, measure
from edge_search_export.sample_catalog import draw_product


def feed(quality: QualityCheck, image: np.ndarray, times: int, still: bool = False) -> list[str]:
    return [quality.check(image, still=still).reason for _ in range(times)]


def test_a_held_product_is_searched_once_when_steady():
    quality = QualityCheck(QualityConfig(steady_frames=2))
    reasons = feed(quality, draw_product(0), 5)
    # first frame: no motion measured yet; then two steady frames; then the same view again
    assert reasons == ["moving", "moving", "steady", "unchanged", "unchanged"]


def test_a_new_product_is_searched_again_after_it_settles():
    quality = QualityCheck(QualityConfig(steady_frames=2))
    feed(quality, draw_product(0), 3)
    assert feed(quality, draw_product(5), 4) == ["moving", "moving", "steady", "unchanged"]


def test_small_noise_is_steady_but_a_moving_product_is_not():
    rng = np.random.default_rng(0)
    base = draw_product(3)
    quality = QualityCheck()
    noisy = [np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8) for _ in range(4)]
    assert [quality.check(f).reason for f in noisy] == ["moving", "moving", "steady", "unchanged"]
    quality.reset()
    shifted = [np.roll(base, 25 * i, axis=1) for i in range(5)]
    assert {quality.check(f).reason for f in shifted} == {"moving"}


def test_blurry_frames_are_skipped():
    quality = QualityCheck()
    blurred = cv2.GaussianBlur(draw_product(1), (0, 0), 4)
    verdicts = [quality.check(blurred) for _ in range(4)]
    assert verdicts[-1].reason == "blurry" and not verdicts[-1].search
    assert verdicts[-1].quality.sharpness < QualityConfig().min_sharpness < measure(draw_product(1), QualityConfig())[0].sharpness


@pytest.mark.parametrize("level, reason", [(5, "dark"), (252, "bright")])
def test_badly_exposed_frames_are_skipped(level, reason):
    frame = draw_product(2).astype(np.int16)
    frame = np.clip(frame * 0.1 + level, 0, 255).astype(np.uint8) if level < 128 else \
        np.clip(frame * 0.1 + level - 20, 0, 255).astype(np.uint8)
    quality = QualityCheck()
    assert feed(quality, frame, 4)[-1] == reason


def test_stills_need_no_steadiness_but_repeats_are_not_searched_twice():
    quality = QualityCheck()
    assert feed(quality, draw_product(4), 2, still=True) == ["still", "unchanged"]
    assert feed(quality, draw_product(7), 1, still=True) == ["still"]


def test_force_and_reset():
    quality = QualityCheck(QualityConfig(steady_frames=1))
    feed(quality, draw_product(0), 3)
    quality.force()
    assert feed(quality, draw_product(0), 2) == ["forced", "unchanged"]
    quality.reset()
    assert feed(quality, draw_product(0), 2) == ["moving", "steady"]


def test_resolution_change_is_a_new_view():
    quality = QualityCheck(QualityConfig(steady_frames=1))
    feed(quality, draw_product(0), 2)
    wide = np.ascontiguousarray(draw_product(0)[40:280])  # 320 x 240: another camera mode
    assert feed(quality, wide, 2) == ["moving", "steady"]


def test_config_is_validated_and_presets_are_valid():
    with pytest.raises(ValueError):
        QualityConfig(min_brightness=200, max_brightness=100)
    with pytest.raises(ValueError):
        QualityConfig(steady_motion=1.5)
    with pytest.raises(ValueError):
        QualityConfig(motion_width=500, analysis_width=320)
    assert PRESETS["lenient"].min_sharpness < PRESETS["camera"].min_sharpness
    assert all(r in REASONS for r in ("dark", "bright", "moving", "blurry", "unchanged", "steady", "still"))


def test_centre_crop_keeps_the_middle():
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 90:110] = 255
    crop = centre_crop(img, keep=0.5)
    assert crop.shape == (50, 100, 3)
    assert crop[25, 50].tolist() == [255, 255, 255] and crop[0, 0].tolist() == [0, 0, 0]


def test_equalize_stretches_a_flat_low_contrast_image_and_keeps_shape():
    rng = np.random.default_rng(1)
    dull = (100 + rng.integers(0, 20, (120, 160, 1))).repeat(3, axis=2).astype(np.uint8)
    out = equalize(dull)
    assert out.shape == dull.shape and out.dtype == np.uint8
    assert out.std() > 2 * dull.std()


def test_every_enhancement_has_words():
    assert describe("original") == "the whole frame"
    for name in ENHANCEMENTS:
        assert describe(name) and ENHANCEMENTS[name][0](draw_product(0)).ndim == 3
