"""Reading photos from disk or memory into RGB uint8 arrays.

Owns decoding and its failure modes; every failure is an ImageError naming
the file. Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading
from pathlib import Path

# A 30 000 x 30 000 photo decodes to 2.7 GB; no kiosk query or catalog image
# needs more than this many pixels.
MAX_PIXELS = 64_000_000
# No product photo is 50 times wider than tall. A 143-byte 20000 x 1 PNG is
# small, but resized so its short side meets the model's input it becomes a
# 4.5 million x 224 buffer (3.5 GB); bounding the aspect ratio bounds every
# resize we make from a photo.
MAX_ASPECT = 50
# OpenCV's own decoder limit (read once, at its first decode): a second line of
# defence for formats whose header `header_size` does not read.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edge_search.errors import ImageError  # noqa: E402
from edge_search.files import MAX_IMAGE_BYTES, read_regular  # noqa: E402


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


def _jpeg_size(d: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(d):
        if d[i] != 0xFF:
            return None
        marker = d[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", d[i + 2:i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            if i + 9 > len(d):
                return None
            h, w = struct.unpack(">HH", d[i + 5:i + 9])
            return w, h
        if length < 2:
            return None
        i += 2 + length
    return None


def _tiff_size(d: bytes) -> tuple[int, int] | None:
    e = "<" if d[:2] == b"II" else ">"
    if len(d) < 8:
        return None
    (ifd,) = struct.unpack(e + "I", d[4:8])
    if ifd + 2 > len(d):
        return None
    (n,) = struct.unpack(e + "H", d[ifd:ifd + 2])
    found: dict[int, int] = {}
    for k in range(min(n, 512)):
        at = ifd + 2 + 12 * k
        if at + 12 > len(d):
            break
        tag, kind = struct.unpack(e + "HH", d[at:at + 4])
        if tag in (256, 257):
            value = struct.unpack(e + ("H" if kind == 3 else "I"), d[at + 8:at + (10 if kind == 3 else 12)])[0]
            found[tag] = value
    return (found[256], found[257]) if 256 in found and 257 in found else None


def _pnm_size(d: bytes) -> tuple[int, int] | None:
    tokens: list[int] = []
    text = d[2:512]
    for line in text.split(b"\n"):
        line = line.split(b"#")[0]
        for tok in line.split():
            if not tok.isdigit():
                return None
            tokens.append(int(tok))
            if len(tokens) == 2:
                return tokens[0], tokens[1]
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from an image file's header, without decoding it
    (JPEG, PNG, GIF, BMP, WebP, TIFF, PNM); None for formats it does not read."""
    d = data[:1 << 16]
    try:
        if d[:8] == b"\x89PNG\r\n\x1a\n" and len(d) >= 24:
            return struct.unpack(">II", d[16:24])
        if d[:2] == b"\xff\xd8":
            return _jpeg_size(data[:1 << 20])  # EXIF/ICC blocks may come before the frame header
        if d[:6] in (b"GIF87a", b"GIF89a") and len(d) >= 10:
            return struct.unpack("<HH", d[6:10])
        if d[:2] == b"BM" and len(d) >= 26:
            w, h = struct.unpack("<ii", d[18:26])
            return abs(w), abs(h)
        if d[:4] == b"RIFF" and d[8:12] == b"WEBP" and len(d) >= 30:
            chunk = d[12:16]
            if chunk == b"VP8X":
                return 1 + int.from_bytes(d[24:27], "little"), 1 + int.from_bytes(d[27:30], "little")
            if chunk == b"VP8L":
                bits = int.from_bytes(d[21:25], "little")
                return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", d[26:30])
                return w & 0x3FFF, h & 0x3FFF
        if d[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data[:1 << 22])
        if len(d) > 2 and d[0:1] == b"P" and d[1:2] in b"123456" and d[2:3].isspace():
            return _pnm_size(d)
    except struct.error:
        return None
    return None


def check_dimensions(width: int, height: int, name: str, when: str = "") -> None:
    """Refuse a width x height over MAX_PIXELS or with an aspect ratio over MAX_ASPECT (one line)."""
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: image is {width}x{height}, over the {MAX_PIXELS} pixel limit{when}")
    if min(width, height) < 1 or max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"{name}: image is {width}x{height}, an aspect ratio over {MAX_ASPECT}:1 "
                         f"(not a product photo){when}")


def check_size(data: bytes, name: str) -> None:
    """Refuse an image whose header declares too many pixels or too long a strip, before decoding it."""
    size = header_size(data)
    if size is not None:
        check_dimensions(size[0], size[1], name, " (refused before decoding)")


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an H x W x 3 RGB uint8 array.

    Enormous images are refused from their header, before decoding; EXIF
    orientation is applied (OpenCV's IMREAD_COLOR does, for still images)."""
    if not data:
        raise ImageError(f"{name}: empty file")
    check_size(data, name)
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
    check_dimensions(bgr.shape[1], bgr.shape[0], name)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_image(path: str | Path) -> np.ndarray:
    """Read and decode an image file to RGB uint8."""
    # a regular file only, and no larger than any photo we accept: a FIFO or /dev/zero is refused, not read
    data = read_regular(path, limit=MAX_IMAGE_BYTES, what="image", error=ImageError)
    return decode_image(data, str(path))


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
