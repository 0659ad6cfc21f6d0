"""Product thumbnails from the bundle, loaded once and kept small.

Called from worker threads only (file reads are slow work); the UI gets the
arrays inside messages. Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_search.errors import ImageError
from edge_search.core.images import decode_image, thumbnail
from edge_search.core.thumbnails import is_thumbnail_name, thumbnail_name
from edge_search.files import MAX_IMAGE_BYTES, read_regular

THUMB_SIDE = 48  # pixels: enough for the details view, tiny in memory
# A kiosk runs for weeks over a catalog of up to ~100k products: keep at most
# this many (~7 KB each) and start over when full.
MAX_CACHED = 1024


class ThumbCache:
    def __init__(self, root: Path | None):
        self.root = None if root is None else Path(root)
        self._cache: dict[str, np.ndarray | None] = {}

    def get(self, rel: str | None) -> np.ndarray | None:
        """The thumbnail at `rel` inside the bundle, or None (no root, no file, unreadable)."""
        if rel is None or self.root is None:
            return None
        if rel not in self._cache:  # two threads may both load it once: harmless
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            p = Path(rel)
            if p.is_absolute() or ".." in p.parts:
                self._cache[rel] = None
            else:
                self._cache[rel] = _load(self.root / p, rel)
        return self._cache[rel]


def _load(path: Path, rel: str) -> np.ndarray | None:
    """The thumbnail's pixels; None (a blank square, not a fault) for a file that is missing, unreadable,
    or whose bytes are not the ones its sha256 name says (a kiosk that starts on a bundle it checked
    before does not hash every thumbnail again: core/checked.py)."""
    try:
        data = read_regular(path, limit=MAX_IMAGE_BYTES, what="thumbnail", error=ImageError)
        if is_thumbnail_name(rel) and thumbnail_name(data) != rel:
            return None
        return thumbnail(decode_image(data, str(path)), THUMB_SIDE)
    except (ImageError, OSError):
        return None
