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

from array import array
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from edge_search.core.columns import DigestSet, TextBuilder, TextColumn

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

    def keys_at(self, positions: np.ndarray) -> np.ndarray:
        """The keys of these rows of the block-major vector array (block 0's rows, then block 1's, ...):
        position p is row p % rows of block p // rows (no key array as long as the index is made)."""
        positions = np.asarray(positions, dtype=np.int64)
        rows = len(self.row_keys)
        return self.row_keys[positions % rows, positions // rows] if len(positions) else np.zeros(0, np.int64)

    def delta_positions(self) -> np.ndarray:
        """The block-major positions whose keys are past the base segment (a delta segment's vectors)."""
        return np.flatnonzero((self.row_keys >= self.base_count).T.ravel())


def fresh_layout(rows: int, blocks: int, reason: str = "") -> KeyLayout:
    keys = np.arange(rows, dtype=np.int64)[:, None] + rows * np.arange(blocks, dtype=np.int64)[None, :]
    return KeyLayout(row_keys=keys, base_count=rows * blocks, removed=np.zeros(0, np.int64), segmented=False,
                     reason=reason)


@dataclass(frozen=True)
class BaseImages:
    """A base bundle's build record of its images (build/images.jsonl: id, sha256, keys), as columns (a
    nightly build on a million-image base held a dict per image: ~0.5 KB each)."""

    ids: TextColumn
    shas: TextColumn
    keys: np.ndarray | None  # images x blocks; None when the records give another number of keys than blocks

    def __len__(self) -> int:
        return len(self.ids)

    def digests(self) -> DigestSet:
        """The images' sha256, as a set to test membership in."""
        raw = bytearray()
        for sha in self.shas:
            try:
                digest = bytes.fromhex(sha)
            except ValueError:  # not a sha256 (a hand-made record): in no set of image hashes
                continue
            if len(digest) == 32:
                raw += digest
        return DigestSet(np.frombuffer(bytes(raw), dtype=np.uint8))

    @classmethod
    def of(cls, records: Iterable[dict], blocks: int) -> "BaseImages":
        """Each image's keys as its record lists them, else (a record from before keys were listed, always
        a single segment) by its row."""
        ids, shas, listed, by_row = TextBuilder(), TextBuilder(), array("q"), bytearray()
        uneven = False
        for rec in records:
            ids.append(str(rec["id"]))
            shas.append(str(rec["sha256"]))
            keys = rec.get("keys")
            by_row.append(keys is None)
            if keys is not None and len(keys) != blocks:
                uneven = True
            listed.extend(map(int, keys) if keys is not None and not uneven else [-1] * blocks)
        n = len(by_row)
        if uneven:
            return cls(ids.freeze(), shas.freeze(), None)
        keys = np.frombuffer(listed, dtype=np.int64).reshape(n, blocks).copy() if n else np.zeros((0, blocks), np.int64)
        rows = np.flatnonzero(np.frombuffer(bytes(by_row), dtype=np.bool_))
        keys[rows] = rows[:, None] + n * np.arange(blocks)[None, :]
        return cls(ids.freeze(), shas.freeze(), keys)


def _pairs(ids: Sequence[str], shas: Sequence[str]) -> Iterator[str]:
    # one text per (product, image); ids hold no control characters (catalog.py refuses them)
    return (f"{i}\x1f{s}" for i, s in zip(ids, shas))


def _ranks(groups: np.ndarray) -> np.ndarray:
    """Each entry's place among the entries of its group before it (0 for the first)."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return rank


def layout_on_base(ids: Sequence[str], shas: Sequence[str], blocks: int, *,
                   base_images: "BaseImages | Sequence[dict]", base_count: int, rebase_share: float = REBASE_SHARE,
                   force_rebase: bool = False) -> KeyLayout:
    """Keys for a catalog built on a base whose index has `base_count` keys in its base segment and whose
    build record lists `base_images` (BaseImages, or its records: id, sha256, keys). Images the base holds
    keep their keys (a product holding the same image twice takes the base's copies in order); the delta's
    images, those carried over from the base's delta first (in their order there), then the new ones in
    catalog order, are numbered densely after the base segment."""
    rows = len(ids)
    if force_rebase:
        return fresh_layout(rows, blocks, "asked (--rebase)")
    if not isinstance(base_images, BaseImages):
        base_images = BaseImages.of(base_images, blocks)
    old = base_images.keys
    if old is None or old.shape[1] != blocks:
        return fresh_layout(rows, blocks, "the base's images have another number of vectors each")
    # the k-th row of a (product, image) takes the k-th base image of that pair, in the base's order
    pairs = TextColumn.of(_pairs(ids, shas))
    pair = TextColumn.concat([pairs, TextColumn.of(_pairs(base_images.ids, base_images.shas))]).distinct()[1]
    row_pair, base_pair = pair[:rows], pair[rows:]
    width = max(rows, len(base_images)) + 1
    base_slot = base_pair * width + _ranks(base_pair)
    order = np.argsort(base_slot)
    row_slot = row_pair * width + _ranks(row_pair)
    at = np.searchsorted(base_slot[order], row_slot)
    found = at < len(order)
    found[found] = base_slot[order[at[found]]] == row_slot[found]
    match = np.where(found, order[np.minimum(at, len(order) - 1)], -1)  # each row's base image, or -1
    row_keys = np.full((rows, blocks), -1, dtype=np.int64)
    in_base = found & (old[np.maximum(match, 0), 0] < base_count)
    row_keys[in_base] = old[match[in_base]]
    carried = np.flatnonzero(found & ~in_base)
    carried = carried[np.argsort(old[match[carried], 0], kind="stable")]  # in their order in the base's delta
    new = np.flatnonzero(~found)
    kept = row_keys[row_keys[:, 0] >= 0].ravel()
    live = np.zeros(base_count, dtype=bool)
    live[kept] = True
    removed = np.flatnonzero(~live).astype(np.int64)
    delta_rows = np.concatenate([carried, new])
    row_keys[delta_rows] = base_count + np.arange(len(delta_rows))[:, None] * blocks + np.arange(blocks)[None, :]
    grown = len(delta_rows) * blocks + len(removed)
    if grown > rebase_share * base_count:
        return fresh_layout(rows, blocks, f"the delta ({len(delta_rows) * blocks} added, {len(removed)} removed) "
                                          f"passed {rebase_share:.0%} of the base's {base_count} vectors")
    return KeyLayout(row_keys=row_keys, base_count=base_count, removed=removed, segmented=True)
