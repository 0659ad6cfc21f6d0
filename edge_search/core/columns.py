"""Columns of many short values held as a few arrays, not one Python object each.

A catalog of a million images held as objects costs the machine that builds its
bundle about 1 KB per image in strings, floats and their containers (issue #15);
as columns it costs the bytes of its text plus a few words. Values are made into
Python objects only when one is read. Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from typing import Iterable, Iterator, Sequence

import numpy as np

from edge_search.errors import FileError


class Spill:
    """A folder that a build's finished columns move to: mapped from their files, they are pages the kernel
    can drop and read again, not memory the build holds beside its index while it builds it (issue #15: at
    100 000 images they were 0.27 KB per image of the driver's anonymous memory). A column is moved in
    place, so every holder of it lets go of the memory. The folder need not outlive the columns: on POSIX a
    mapped file stays readable after its name is removed, so it goes with the build's other temporary files."""

    SMALL = 1 << 16  # bytes; an array below it stays in memory (a file and a mapping each would cost more)

    def __init__(self, folder: str | os.PathLike):
        self.folder, self._files = os.fspath(folder), 0

    def array(self, a: np.ndarray) -> np.ndarray:
        """`a`'s contents, mapped from a new file in the folder (writable: a column may still be filled in)."""
        # (a memmap that came by pickle has no file: it is in memory like any array)
        if getattr(a, "filename", None) is not None or a.nbytes < self.SMALL or not a.size:
            return a
        path = os.path.join(self.folder, f"column-{self._files}.npy")
        self._files += 1
        try:
            np.save(path, a, allow_pickle=False)
            return np.load(path, mmap_mode="r+", allow_pickle=False)
        except OSError as e:  # (a full disk: one line naming the file, at the CLI's edge)
            raise FileError(f"{path}: cannot hold the build's columns ({e.strerror or e})") from None


class TextColumn(Sequence):
    """Strings (or None) packed as UTF-8 in one buffer, with their offsets."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, missing: np.ndarray):
        self._data, self._offsets, self._missing = data, offsets, missing

    @classmethod
    def of(cls, values: Iterable[str | None]) -> "TextColumn":
        b = TextBuilder()
        for v in values:
            b.append(v)
        return b.freeze()

    def __len__(self) -> int:
        return len(self._missing)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        if self._missing[i]:
            return None
        return self._data[self._offsets[i]:self._offsets[i + 1]].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str | None]:
        return (self[i] for i in range(len(self)))

    def spill(self, to: Spill) -> None:
        self._data, self._offsets, self._missing = to.array(self._data), to.array(self._offsets), \
            to.array(self._missing)

    def take(self, positions: np.ndarray) -> "TextColumn":
        """These entries (in this order), packed anew."""
        positions = np.asarray(positions, dtype=np.int64)
        starts, ends = self._offsets[positions], self._offsets[positions + 1]
        lengths = ends - starts
        offsets = np.zeros(len(positions) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # byte j of the new buffer comes from its entry's start plus its place in the entry
        source = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return TextColumn(self._data[source], offsets, self._missing[positions])

    @staticmethod
    def concat(columns: Sequence["TextColumn"]) -> "TextColumn":
        data = np.concatenate([c._data[:c._offsets[-1]] for c in columns]) if columns else np.zeros(0, np.uint8)
        shifts = np.cumsum([0] + [int(c._offsets[-1]) for c in columns])
        offsets = np.concatenate([[0]] + [c._offsets[1:] + shift for c, shift in zip(columns, shifts)])
        missing = np.concatenate([c._missing for c in columns]) if columns else np.zeros(0, bool)
        return TextColumn(data, offsets.astype(np.int64), missing)

    def distinct(self) -> tuple[np.ndarray, np.ndarray]:
        """(the position of each distinct value's first entry, in entry order; each entry's distinct value as
        an index into those, -1 for a missing entry)."""
        present = np.flatnonzero(~self._missing)
        group = np.full(len(self), -1, dtype=np.int64)
        if not len(present):
            return present, group
        # values are told apart by a 128-bit hash each (not padded to one width: a million 80-byte ids padded
        # and indexed byte by byte took gigabytes), then every entry is checked equal to its group's first
        data, offsets = self._data, self._offsets
        hashes = bytearray()
        for i in present:
            hashes += hashlib.blake2b(data[offsets[i]:offsets[i + 1]], digest_size=16).digest()
        keyed = np.frombuffer(hashes, dtype=np.dtype((np.void, 16)))
        _, first, inverse = np.unique(keyed, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        for j, i in enumerate(present):
            f = present[first[inverse[j]]]
            if f != i and data[offsets[i]:offsets[i + 1]].tobytes() != data[offsets[f]:offsets[f + 1]].tobytes():
                raise ValueError("two different texts with one 128-bit hash")  # (never seen; not silently merged)
        order = np.argsort(first)
        rank = np.empty(len(first), dtype=np.int64)
        rank[order] = np.arange(len(first))
        group[present] = rank[inverse]
        return present[first[order]], group


class TextBuilder:
    """A TextColumn appended to one value at a time."""

    def __init__(self):
        self._data = bytearray()
        self._ends = array("q")
        self._missing = bytearray()

    def __len__(self) -> int:
        return len(self._missing)

    def get(self, i: int) -> str | None:
        if self._missing[i]:
            return None
        return self._data[self._ends[i - 1] if i else 0:self._ends[i]].decode("utf-8")

    def append(self, value: str | None) -> None:
        if value is not None:
            self._data += value.encode("utf-8")
        self._ends.append(len(self._data))
        self._missing.append(value is None)

    def freeze(self) -> TextColumn:
        offsets = np.zeros(len(self._ends) + 1, dtype=np.int64)
        offsets[1:] = np.frombuffer(self._ends, dtype=np.int64) if len(self._ends) else []
        # views of the builder's own buffers, not copies (a builder is done with once frozen)
        return TextColumn(np.frombuffer(self._data, dtype=np.uint8), offsets,
                          np.frombuffer(self._missing, dtype=np.bool_))


class ShaColumn(Sequence):
    """SHA-256 digests (or None), 32 bytes each; read as the hex strings the rest of the code uses."""

    def __init__(self, digests: np.ndarray, known: np.ndarray):
        self._digests, self._known = digests, known

    @classmethod
    def empty(cls, count: int) -> "ShaColumn":
        return cls(np.zeros((count, 32), dtype=np.uint8), np.zeros(count, dtype=bool))

    @classmethod
    def of(cls, values: Sequence[str | None]) -> "ShaColumn":
        col = cls.empty(len(values))
        for i, v in enumerate(values):
            col.set(i, v)
        return col

    def __len__(self) -> int:
        return len(self._known)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        return self._digests[i].tobytes().hex() if self._known[i] else None

    def __iter__(self) -> Iterator[str | None]:
        return (self[i] for i in range(len(self)))

    def spill(self, to: Spill) -> None:
        self._digests, self._known = to.array(self._digests), to.array(self._known)

    def set(self, i: int, value: str | None) -> None:
        """Entry i becomes `value` (a column is filled in place as the build learns each image's digest)."""
        if value is None:
            self._known[i] = False
            return
        self._digests[i] = np.frombuffer(bytes.fromhex(value), dtype=np.uint8)
        self._known[i] = True

    def take(self, positions: np.ndarray) -> "ShaColumn":
        positions = np.asarray(positions, dtype=np.int64)
        return ShaColumn(self._digests[positions], self._known[positions])

    def digests(self, positions: np.ndarray) -> np.ndarray:
        """The raw digests at these positions (len x 32 bytes); an unknown one reads as zeros."""
        return self._digests[np.asarray(positions, dtype=np.int64)]

    def overlaid(self, positions: np.ndarray, source: "ShaColumn", source_positions: np.ndarray) -> "ShaColumn":
        """A copy with entry positions[j] replaced by source's entry source_positions[j] where that is known."""
        positions, source_positions = np.asarray(positions, np.int64), np.asarray(source_positions, np.int64)
        keep = source._known[source_positions]
        digests, known = self._digests.copy(), self._known.copy()
        digests[positions[keep]] = source._digests[source_positions[keep]]
        known[positions[keep]] = True
        return ShaColumn(digests, known)

    def known(self) -> np.ndarray:
        return self._known.copy()


class DigestSet:
    """A set of SHA-256 digests as one sorted array: `hex in s` by binary search (a base bundle's million
    image hashes as a Python set of str cost ~150 bytes each; here 32)."""

    def __init__(self, digests: np.ndarray):
        voids = np.ascontiguousarray(digests, dtype=np.uint8).reshape(-1, 32).view(np.dtype((np.void, 32)))[:, 0]
        self._sorted = np.unique(voids)

    @classmethod
    def of(cls, column: ShaColumn) -> "DigestSet":
        return cls(column.digests(np.flatnonzero(column.known())))

    @classmethod
    def of_distinct(cls, voids: np.ndarray) -> "DigestSet":
        """Of digests already sorted and distinct (as np.unique gives them, 32-byte voids): not sorted again."""
        out = cls(np.zeros((0, 32), np.uint8))
        out._sorted = voids
        return out

    def __len__(self) -> int:
        return len(self._sorted)

    def position(self, hex_digest: str) -> int | None:
        """Where the digest sorts among them, when it is one of them."""
        try:
            key = np.frombuffer(bytes.fromhex(hex_digest), dtype=self._sorted.dtype)[0]
        except (ValueError, TypeError):
            return None
        i = int(np.searchsorted(self._sorted, key))
        return i if i < len(self._sorted) and self._sorted[i] == key else None

    def __contains__(self, hex_digest) -> bool:
        return isinstance(hex_digest, str) and self.position(hex_digest) is not None

    def __and__(self, other: "DigestSet") -> "DigestSet":
        both = DigestSet(np.zeros((0, 32), np.uint8))
        both._sorted = np.intersect1d(self._sorted, other._sorted, assume_unique=True)
        return both
