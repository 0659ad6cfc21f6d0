"""The device's OpenCV preprocessing agrees with open_clip's own transforms."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from edge_search.core.manifest import PreprocessCfg
from edge_search.core.preprocess import preprocess, resize_and_crop

SIZES = [(37, 211), (480, 640), (333, 481), (1000, 300), (225, 223), (100, 100), (224, 224)]


def photo(h: int, w: int) -> np.ndarray:
    """A smooth scene with edges and text, like a product photo, at any size."""
    base = np.zeros((512, 512, 3), np.uint8)
    yy, xx = np.mgrid[0:512, 0:512]
    base[..., 0] = (xx / 2).astype(np.uint8)
    base[..., 1] = (yy / 2).astype(np.uint8)
    base[..., 2] = 128
    cv2.circle(base, (200, 260), 90, (240, 40, 30), -1)
    cv2.rectangle(base, (300, 80), (470, 420), (20, 160, 60), -1)
    cv2.putText(base, "OAT MILK", (60, 470), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (255, 255, 255), 3)
    return cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA)


@pytest.mark.export
@pytest.mark.parametrize("mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("hw", SIZES)
def test_matches_open_clip_on_odd_sizes(hw, mode):
    pytest.importorskip("open_clip")
    from edge_search_export.interpolation import open_clip_reference

    cfg = PreprocessCfg(size=(224, 224), resize_mode=mode, cv2_interpolation="area")
    img = photo(*hw)
    ours, ref = preprocess(img, cfg), open_clip_reference(img, cfg)
    assert ours.shape == ref.shape == (3, 224, 224)
    diff = np.abs(ours - ref)
    # normalized units (std ~0.27): 0.03 is under 2/255 of a pixel on average
    assert diff.mean() < 0.03, diff.mean()
    assert np.percentile(diff, 99) < 0.35


@pytest.mark.export
def test_a_one_pixel_crop_shift_would_be_caught():
    """The tolerance above is tight enough to see a crop offset truncated
    instead of rounded (the bug other projects shipped)."""
    pytest.importorskip("open_clip")
    from edge_search_export.interpolation import open_clip_reference

    cfg = PreprocessCfg(size=(224, 224))
    img = photo(333, 481)
    ref = open_clip_reference(img, cfg)
    shifted = preprocess(img[:, 1:], cfg)  # moves the crop window by one source pixel
    assert np.abs(preprocess(img, cfg) - ref).mean() * 2 < np.abs(shifted - ref).mean()


def test_geometry_and_normalization():
    cfg = PreprocessCfg(size=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    img = np.full((40, 100, 3), 255, np.uint8)
    crop = resize_and_crop(img, cfg)
    assert crop.shape == (64, 64, 3)
    x = preprocess(img, cfg)
    assert x.dtype == np.float32 and x.shape == (3, 64, 64)
    assert np.allclose(x, 1.0)  # (1 - 0.5) / 0.5


def test_longest_pads_with_fill_colour():
    cfg = PreprocessCfg(size=(32, 32), resize_mode="longest", fill_color=0)
    crop = resize_and_crop(np.full((16, 64, 3), 200, np.uint8), cfg)
    assert crop.shape == (32, 32, 3)
    assert crop[0, 16].tolist() == [0, 0, 0] and crop[16, 16].tolist() == [200, 200, 200]


def test_config_is_validated():
    with pytest.raises(ValueError):
        PreprocessCfg(resize_mode="stretch")
    with pytest.raises(ValueError):
        PreprocessCfg(cv2_interpolation="nearest-ish")
    assert replace(PreprocessCfg(), size=96).size == (96, 96)
