"""Which index keys a catalog image's vectors get, across catalog builds.

A build from scratch numbers the images in catalog order: image i of N has
keys i, N + i, 2N + i, ... (one per block of the catalog encoder). A build on
a base keeps every image the base holds (same product, same bytes) at the
base's keys, so the base's index file, and the product-table lines of the
products that did not change, stay byte for byte what the device already has.
What changed goes into a delta segment (the images the base lacks, keys after
the base segment's) and a list of removed base keys. When that delta grows
past `REBASE_SHARE` of the base segment, the build starts a fresh single
segment again (every key renumbered: a full index download, once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# delta vectors + removed keys, as a share of the base segment, past which a build re-bases: measured by
# bench/update.py (search p95 with a delta of this size against the re-based index)
REBASE_SHARE = 0.10


@dataclass(frozen=True)
class KeyLayout:
    row_keys: np.ndarray  # catalog rows x blocks: each image's keys, one per catalog-encoder block
    base_count: int  # keys below it live in the base segment's file; with `segmented`, the rest in the delta
    removed: np.ndarray  # sorted base-segment keys no longer in the catalog
    segmented: bool
    reason: str = ""  # why a build on a base was re-based (empty when it was not, or had no base)

    @property
    def key_space(self) -> int:
        return int(self.row_keys.size + len(self.removed))

    @property
    def delta_count(self) -> int:
        return self.key_space - self.base_count if self.segmented else 0

    def block_major_keys(self) -> np.ndarray:
        """The key of each row of the block-major vector array (block 0's rows, then block 1's, ...)."""
        return self.row_keys.T.ravel()


def fresh_layout(rows: int, blocks: int, reason: str = "") -> KeyLayout:
    keys = np.arange(rows, dtype=np.int64)[:, None] + rows * np.arange(blocks, dtype=np.int64)[None, :]
    return KeyLayout(row_keys=keys, base_count=rows * blocks, removed=np.zeros(0, np.int64), segmented=False,
                     reason=reason)


def base_image_keys(images: Sequence[dict], blocks: int) -> list[list[int]]:
    """Each base image's keys: as its build record lists them, else (a record from before keys were
    listed, always a single segment) by its row."""
    n = len(images)
    return [list(map(int, img["keys"])) if "keys" in img else [r + b * n for b in range(blocks)]
            for r, img in enumerate(images)]


def layout_on_base(ids: Sequence[str], shas: Sequence[str], blocks: int, *, base_images: Sequence[dict],
                   base_count: int, rebase_share: float = REBASE_SHARE, force_rebase: bool = False) -> KeyLayout:
    """Keys for a catalog built on a base whose index has `base_count` keys in its base segment and whose
    build record lists `base_images` (id, sha256, keys). Images the base holds keep their keys (a product
    holding the same image twice takes the base's copies in order); the delta's images, those carried over
    from the base's delta first (in their order there), then the new ones in catalog order, are numbered
    densely after the base segment."""
    rows = len(ids)
    if force_rebase:
        return fresh_layout(rows, blocks, "asked (--rebase)")
    old = base_image_keys(base_images, blocks)
    if any(len(k) != blocks for k in old):
        return fresh_layout(rows, blocks, "the base's images have another number of vectors each")
    pool: dict[tuple[str, str], list[list[int]]] = {}
    for img, keys in zip(base_images, old):
        pool.setdefault((img["id"], img["sha256"]), []).append(keys)
    row_keys = np.full((rows, blocks), -1, dtype=np.int64)
    carried, new = [], []
    for r, key in enumerate(zip(ids, shas)):
        held = pool.get(key)
        if not held:
            new.append(r)
        elif held[0][0] < base_count:
            row_keys[r] = held.pop(0)
        else:
            carried.append((held.pop(0)[0], r))
    kept = row_keys[row_keys[:, 0] >= 0].ravel()
    live = np.zeros(base_count, dtype=bool)
    live[kept] = True
    removed = np.flatnonzero(~live).astype(np.int64)
    delta_rows = [r for _, r in sorted(carried)] + new
    for j, r in enumerate(delta_rows):
        row_keys[r] = base_count + j * blocks + np.arange(blocks)
    grown = len(delta_rows) * blocks + len(removed)
    if grown > rebase_share * base_count:
        return fresh_layout(rows, blocks, f"the delta ({len(delta_rows) * blocks} added, {len(removed)} removed) "
                                          f"passed {rebase_share:.0%} of the base's {base_count} vectors")
    return KeyLayout(row_keys=row_keys, base_count=base_count, removed=removed, segmented=True)
