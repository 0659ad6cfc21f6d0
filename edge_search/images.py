"""Reading photos from disk or memory into RGB uint8 arrays.

Owns decoding and its failure modes; every failure is an ImageError naming
the file. Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError

# A 30 000 x 30 000 photo decodes to 2.7 GB; no kiosk query or catalog image
# needs more than this many pixels.
MAX_PIXELS = 64_000_000


_stderr_lock = threading.Lock()


@contextlib.contextmanager
def _quiet_stderr():
    """libjpeg prints warnings about corrupt files straight to fd 2 (OpenCV's
    log level does not reach it); our ImageError already says what is wrong."""
    with _stderr_lock:
        try:
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        if fd < 0:  # no real stderr (e.g. under Textual): nothing to silence
            yield
            return
        sys.stderr.flush()
        saved = os.dup(fd)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            os.close(devnull)


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an H x W x 3 RGB uint8 array."""
    if not data:
        raise ImageError(f"{name}: empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # IMREAD_COLOR honours EXIF orientation and drops alpha; 16-bit and
        # grayscale inputs come back as 8-bit BGR.
        with _quiet_stderr():
            bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise ImageError(f"{name}: cannot decode image ({str(e).strip().splitlines()[-1]})") from None
    if bgr is None or bgr.size == 0:
        raise ImageError(f"{name}: not a readable image (unknown format or corrupt data)")
    if bgr.shape[0] * bgr.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: image is {bgr.shape[1]}x{bgr.shape[0]}, over the {MAX_PIXELS} pixel limit")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_image(path: str | Path) -> np.ndarray:
    """Read and decode an image file to RGB uint8."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{p}: is a directory, not an image") from None
    except OSError as e:
        raise ImageError(f"{p}: cannot read ({e.strerror or e})") from None
    return decode_image(data, str(p))


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("could not encode JPEG")
    return buf.tobytes()


def thumbnail(rgb: np.ndarray, max_side: int = 128) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
