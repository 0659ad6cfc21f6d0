"""Product thumbnails from the bundle, loaded once and kept small.

Called from worker threads only (file reads are slow work); the UI gets the
arrays inside messages. Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_search.errors import ImageError
from edge_search.core.images import load_image, thumbnail

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
                try:
                    self._cache[rel] = thumbnail(load_image(self.root / p), THUMB_SIDE)
                except (ImageError, OSError):  # a missing thumbnail is a blank square, not a fault
                    self._cache[rel] = None
        return self._cache[rel]
