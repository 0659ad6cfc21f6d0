"""Choosing the OpenCV resize filter that best reproduces open_clip's PIL
preprocessing, measured on the catalog's own images."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from open_clip.transform import PreprocessCfg as OpenClipPreprocessCfg
from open_clip.transform import image_transform_v2
from PIL import Image

from edge_search.core.manifest import CV2_INTERPOLATIONS, PreprocessCfg
from edge_search.core.preprocess import preprocess


def open_clip_reference(rgb: np.ndarray, cfg: PreprocessCfg) -> np.ndarray:
    oc = OpenClipPreprocessCfg(size=cfg.size, mode=cfg.mode, mean=cfg.mean, std=cfg.std,
                               interpolation=cfg.interpolation, resize_mode=cfg.resize_mode,
                               fill_color=cfg.fill_color)
    return image_transform_v2(oc, is_train=False)(Image.fromarray(rgb)).numpy()


def choose_interpolation(images: list[np.ndarray], cfg: PreprocessCfg, limit: int = 32) -> tuple[PreprocessCfg, dict]:
    """Mean absolute difference (in normalized units) to open_clip's transform per filter; lowest wins."""
    sample = images[:limit]
    refs = [open_clip_reference(im, cfg) for im in sample]
    scores = {}
    for name in CV2_INTERPOLATIONS:
        c = replace(cfg, cv2_interpolation=name)
        scores[name] = float(np.mean([np.abs(preprocess(im, c) - r).mean() for im, r in zip(sample, refs)]))
    best = min(scores, key=scores.get)
    return replace(cfg, cv2_interpolation=best), {
        "chosen": best, "mean_abs_diff_vs_open_clip": {k: round(v, 5) for k, v in scores.items()},
        "images": len(sample)}
