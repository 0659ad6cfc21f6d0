"""Simple enhancements a low-confidence frame is searched again with.

Owns the enhancement functions and their names (the JSON name and the
words the screen shows). Each takes and returns RGB uint8. Must not import
torch, open_clip, onnx or textual.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

# The centre of the frame, where a shopper holds the product: cuts away a
# busy shop background that can outvote a small product.
CROP_KEEP = 0.6


def centre_crop(rgb: np.ndarray, keep: float = CROP_KEEP) -> np.ndarray:
    h, w = rgb.shape[:2]
    ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(rgb[top : top + ch, left : left + cw])


def equalize(rgb: np.ndarray) -> np.ndarray:
    """Contrast-limited histogram equalization of lightness only, so colours keep their hue."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


ORIGINAL = "original"
# name -> (function, words for the screen); tried in this order
CENTRE_CROP = "centre-crop"
ENHANCEMENTS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    CENTRE_CROP: (centre_crop, "the centre of the frame"),
    "equalized": (equalize, "the frame with contrast equalized"),
}
DEFAULT_RETRIES = tuple(ENHANCEMENTS)


WORDS, PHOTO_AND_WORDS = "words", "photo+words"  # the kiosk's typed queries (TUI `/`)


def describe(variant: str) -> str:
    """Words for the screen: which image (or words) the results come from."""
    if variant == WORDS:
        return "the words typed"
    if variant == PHOTO_AND_WORDS:
        return "the frozen photo and the words typed"
    return "the whole frame" if variant == ORIGINAL else ENHANCEMENTS[variant][1]
