"""Deciding which camera frames are worth a search.

Owns the per-frame quality measures (sharpness as the variance of the
Laplacian, brightness and clipping for exposure, motion between frames) and
the rule built on them: search when the view has been steady for a few
frames and differs from the view searched last, so a product held still is
searched once and again when it changes. Pure NumPy/OpenCV on small
copies of the frame, about a millisecond for 640x480. Must not import torch,
open_clip, onnx or textual.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Why a frame was or was not searched, in words for the screen.
REASONS = {
    "dark": "too dark — more light, please",
    "bright": "too bright — glare or a bright light behind the product",
    "moving": "moving — hold the product still",
    "blurry": "blurry — hold the product steadier, or a little farther away",
    "unchanged": "same view as the last search",
    "steady": "steady — searching",
    "still": "photo — searching",
    "forced": "searching again",
}


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds, measured on grey copies `analysis_width` pixels wide.

    The defaults suit a 640x480 webcam at arm's length: a sharp product
    label scores a Laplacian variance in the hundreds, a defocused one
    under 40; sensor noise moves a blurred 64-px thumbnail by ~0.3 %.
    """

    analysis_width: int = 320
    min_sharpness: float = 40.0
    min_brightness: float = 35.0  # mean grey level, 0-255
    max_brightness: float = 225.0
    max_clipped: float = 0.6  # fraction of pixels at black or white
    motion_width: int = 64
    steady_motion: float = 0.02  # mean absolute change (0-1) between frames still counted as steady
    steady_frames: int = 2  # steady frames in a row before a search
    new_view: float = 0.05  # change (0-1) from the last searched view that makes a new view

    def __post_init__(self) -> None:
        if not 32 <= self.analysis_width <= 4096 or not 8 <= self.motion_width <= self.analysis_width:
            raise ValueError("analysis_width must be 32-4096 and motion_width 8..analysis_width")
        if self.min_sharpness < 0 or self.steady_frames < 0:
            raise ValueError("min_sharpness and steady_frames must not be negative")
        if not 0 <= self.min_brightness < self.max_brightness <= 255:
            raise ValueError("brightness limits must satisfy 0 <= min < max <= 255")
        for name in ("max_clipped", "steady_motion", "new_view"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")


# Named presets. "camera" is the default; "lenient" is for dim shops and
# soft, cheap webcams where the default would skip too many frames.
PRESETS = {
    "camera": QualityConfig(),
    "lenient": QualityConfig(min_sharpness=15.0, min_brightness=20.0, max_brightness=240.0, max_clipped=0.8,
                          steady_motion=0.04, steady_frames=1),
}


@dataclass(frozen=True)
class Quality:
    sharpness: float  # variance of the Laplacian
    brightness: float  # mean grey level, 0-255
    clipped: float  # fraction of pixels at black or white
    motion: float | None  # mean absolute change from the previous frame, 0-1; None for the first


@dataclass(frozen=True)
class Verdict:
    search: bool
    reason: str  # a key of REASONS
    quality: Quality

    @property
    def words(self) -> str:
        return REASONS[self.reason]


def measure(rgb: np.ndarray, cfg: QualityConfig) -> tuple[Quality, np.ndarray]:
    """Quality figures (motion left unset) and the small colour thumbnail motion is measured on."""
    h, w = rgb.shape[:2]
    if w > cfg.analysis_width:  # shrink before converting: 1/4 of the pixels to touch
        rgb = cv2.resize(rgb, (cfg.analysis_width, max(1, round(h * cfg.analysis_width / w))),
                         interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    brightness = float(grey.mean())
    clipped = float(np.count_nonzero((grey <= 8) | (grey >= 247))) / grey.size
    # motion and change are measured in colour: two packs of one shape and
    # different colours can have nearly the same grey levels
    gw = rgb.shape[1]
    thumb = rgb if gw <= cfg.motion_width else cv2.resize(
        rgb, (cfg.motion_width, max(1, round(rgb.shape[0] * cfg.motion_width / gw))), interpolation=cv2.INTER_AREA)
    # a light blur so sensor noise and compression blocks do not read as motion
    thumb = cv2.GaussianBlur(thumb.astype(np.float32) * (1.0 / 255.0), (3, 3), 0)
    return Quality(sharpness, brightness, clipped, None), thumb


def _change(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:  # the camera changed resolution: a new view
        return 1.0
    return float(np.abs(a - b).mean())


class QualityCheck:
    """Remembers the previous frame and the last searched view; one per frame stream.

    Not thread-safe: one thread calls check(); others ask for reset() or
    force() through the kiosk_loop, which applies them between frames.
    """

    def __init__(self, cfg: QualityConfig | None = None):
        self.cfg = cfg or QualityConfig()
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next steady view is searched, whatever was searched before."""
        self._previous: np.ndarray | None = None
        self._searched: np.ndarray | None = None
        self._steady = 0
        self._forced = False

    def force(self) -> None:
        """Search the next acceptable frame even if the view has not changed."""
        self._forced = True

    def check(self, rgb: np.ndarray, *, still: bool = False) -> Verdict:
        """Measure a frame and say whether to search it; a yes counts as searched."""
        cfg = self.cfg
        q, thumb = measure(rgb, cfg)
        motion = None if self._previous is None else _change(thumb, self._previous)
        q = Quality(q.sharpness, q.brightness, q.clipped, motion)
        self._previous = thumb
        self._steady = self._steady + 1 if motion is not None and motion <= cfg.steady_motion else 0
        if q.brightness < cfg.min_brightness or (q.clipped > cfg.max_clipped and q.brightness < 128):
            return Verdict(False, "dark", q)
        if q.brightness > cfg.max_brightness or q.clipped > cfg.max_clipped:
            return Verdict(False, "bright", q)
        # a photo from a folder is a complete, deliberate shot: no steadiness to wait for
        if not still and self._steady < cfg.steady_frames:
            return Verdict(False, "moving", q)
        if q.sharpness < cfg.min_sharpness:
            return Verdict(False, "blurry", q)
        if self._forced:
            reason = "forced"
        elif self._searched is not None and _change(thumb, self._searched) < cfg.new_view:
            return Verdict(False, "unchanged", q)
        else:
            reason = "still" if still else "steady"
        self._searched, self._forced = thumb, False
        return Verdict(True, reason, q)
