"""Augmented views of product images for distillation and export-time checks.

Catalog images are clean studio shots; kiosk queries are hand-held photos.
These views (crops, rotation, perspective, lighting, blur, noise, JPEG) are
the bridge the student is trained and measured on. Deterministic per seed.
"""

from __future__ import annotations

import cv2
import numpy as np


def augment(rgb: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
            colour_cast: float = 0.0) -> np.ndarray:
    """One seeded hand-held-looking view. `colour_cast` > 0 also multiplies each channel by its own
    gain in [1 - colour_cast, 1 + colour_cast]: another store's light or another camera's white balance,
    which brightness, saturation and a small hue shift do not make (bench/shifts.py). 0 draws nothing
    more from `rng`, so a view without it is the view it always was."""
    h, w = rgb.shape[:2]
    img = rgb
    # random resized crop: keep 35-100 % of the area at a jittered aspect ratio
    area = h * w * rng.uniform(1.0 - 0.65 * strength, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = int(min(w, max(8, round(np.sqrt(area * aspect)))))
    ch = int(min(h, max(8, round(np.sqrt(area / aspect)))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img[y0:y0 + ch, x0:x0 + cw]
    h, w = img.shape[:2]
    # rotation and a little perspective, as from a hand holding the product
    angle = rng.uniform(-25, 25) * strength
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = rng.uniform(-0.08, 0.08, size=(4, 2)) * strength * np.float32([w, h])
    m = cv2.getPerspectiveTransform(src, (src + jitter).astype(np.float32))
    rot = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), [0, 0, 1]])
    border = tuple(int(v) for v in rng.integers(0, 256, size=3))
    img = cv2.warpPerspective(img, rot @ m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=border)
    # lighting: brightness, contrast, saturation, a small hue shift
    x = img.astype(np.float32)
    x = (x - x.mean()) * rng.uniform(1 - 0.4 * strength, 1 + 0.4 * strength) + x.mean()
    x = x * rng.uniform(1 - 0.35 * strength, 1 + 0.35 * strength)
    gray = x.mean(axis=2, keepdims=True)
    x = gray + (x - gray) * rng.uniform(1 - 0.5 * strength, 1 + 0.4 * strength)
    if colour_cast:
        x = x * rng.uniform(1 - colour_cast, 1 + colour_cast, 3).astype(np.float32)
    img = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.5 * strength:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.integers(-6, 7))) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.random() < 0.3 * strength:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), 0)
    if rng.random() < 0.3 * strength:
        noise = rng.normal(0, rng.uniform(2, 10), img.shape)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.4 * strength:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return img


def views(rgb: np.ndarray, count: int, seed: int, strength: float = 1.0,
          colour_cast: float = 0.0) -> list[np.ndarray]:
    """`count` views of one image; the first is the image itself."""
    rng = np.random.default_rng(seed)
    return [rgb] + [augment(rgb, rng, strength, colour_cast) for _ in range(count - 1)]
