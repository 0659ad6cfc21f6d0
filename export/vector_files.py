"""A catalog build's vectors on disk, so a catalog of millions of images never holds them in memory.

`VectorFile` is a float32 .npy matrix written in row order, batch by batch, by plain file writes, and
read back by ranges or picked rows with plain reads: no mapping, so no page of the file is counted in the
build's memory (read through a mapping, the gates' 2 000 rows sampled from 40 000 made the build's
process map the whole of its vector files, the kernel mapping each fault's neighbours too: RssFile grew
2.1 KB per image). A build keeps only what it needs at a time (a chunk for the index, the sampled rows of
the gates); the index it builds is the one thing that grows with the catalog.
Must not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge_search.errors import ExportError

CHUNK_ROWS = 8192  # rows read at a time: 16 MB of 512-d float32


class VectorFile:
    """`rows` x `width` float32 on disk; write() the rows in order, then read."""

    def __init__(self, path: Path, rows: int, width: int):
        self.path, self.shape = Path(path), (int(rows), int(width))
        self.written = 0
        try:
            self._f = open(self.path, "xb")  # a work file of our own: never over anything
            np.lib.format.write_array_header_1_0(
                self._f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                          "shape": self.shape})
            self.offset = self._f.tell()
        except OSError as e:
            raise ExportError(f"{self.path}: cannot write the build's vectors ({e.strerror or e})") from None

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != self.shape[1] or self.written + len(block) > self.shape[0]:
            raise ExportError(f"internal: {self.path.name}: block {block.shape} does not fit {self.shape} "
                              f"after {self.written} rows")
        try:
            self._f.write(block.tobytes())
        except OSError as e:
            raise ExportError(f"{self.path}: cannot write the build's vectors ({e.strerror or e})") from None
        self.written += len(block)

    def close(self) -> "VectorFile":
        if self._f is not None:
            self._f.close()
            self._f = None
        if self.written != self.shape[0]:
            raise ExportError(f"internal: {self.path.name}: {self.written} of {self.shape[0]} rows written")
        return self

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, which: np.ndarray | slice) -> np.ndarray:
        """A copy of these rows (a slice, integer positions or a boolean mask), read run by run of
        consecutive rows."""
        n, width = self.shape
        if isinstance(which, slice):
            start, stop, step = which.indices(n)
            if step == 1:  # one run
                out = np.empty((max(0, stop - start), width), np.float32)
                with open(self.path, "rb") as f:
                    self._read_into(f.fileno(), out, start)
                return out
            picked = np.arange(start, stop, step, dtype=np.int64)
        else:
            which = np.asarray(which)
            picked = np.flatnonzero(which) if which.dtype == bool else which.astype(np.int64, copy=False)
            if picked.ndim != 1:
                raise ExportError(f"internal: {self.path.name}: rows picked as a {picked.ndim}-d array")
            if len(picked) and (picked.min() < -n or picked.max() >= n):
                bad = int(picked.min() if picked.min() < -n else picked.max())
                raise IndexError(f"{self.path.name}: row {bad} of {n}")
            picked = np.where(picked < 0, picked + n, picked)
        ordered = len(picked) < 2 or bool((np.diff(picked) >= 0).all())
        order = None if ordered else np.argsort(picked, kind="stable")
        rows = picked if ordered else picked[order]
        got = np.empty((len(rows), width), np.float32)
        if len(rows):
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            with open(self.path, "rb") as f:
                for a, b in zip(np.concatenate(([0], breaks)), np.concatenate((breaks, [len(rows)]))):
                    self._read_into(f.fileno(), got[a:b], int(rows[a]))
        if ordered:
            return got
        out = np.empty_like(got)
        out[order] = got
        return out

    def _read_into(self, fd: int, block: np.ndarray, first: int) -> None:
        if not block.size:
            return
        view, done = memoryview(block).cast("B"), 0
        where = self.offset + first * self.shape[1] * 4
        while done < len(view):
            count = os.preadv(fd, [view[done:]], where + done)
            if count <= 0:
                raise ExportError(f"{self.path}: the build's vectors were cut short")
            done += count

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """All of it in memory (numpy would otherwise make an object array of this file)."""
        out = self.rows(slice(None))
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, which) -> np.ndarray:
        return self.rows(which)
