"""A catalog build's vectors on disk, so a catalog of millions of images never holds them in memory.

`VectorFile` is a float32 .npy matrix written in row order, batch by batch, by plain file writes, and
read back by ranges or picked rows through a mapping that is closed again at once: the pages it read
leave the process with it. A build keeps only what it needs at a time (a chunk for the index, the
sampled rows of the gates); the index it builds is the one thing that grows with the catalog.
Must not import torch.
"""

from __future__ import annotations

import mmap
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
        """A copy of these rows: a range by a plain read, picked rows through a mapping closed before return."""
        n, width = self.shape
        if isinstance(which, slice):
            start, stop, step = which.indices(n)
            if step == 1:
                count = max(0, stop - start) * width
                with open(self.path, "rb") as f:
                    f.seek(self.offset + start * width * 4)
                    out = np.fromfile(f, dtype=np.float32, count=count)
                if out.size != count:
                    raise ExportError(f"{self.path}: the build's vectors were cut short")
                return out.reshape(-1, width)
        if not n:
            return np.zeros((0, width), np.float32)[which]
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = np.frombuffer(m, dtype=np.float32, count=n * width, offset=self.offset).reshape(n, width)
            out = np.array(view[which])
            del view  # the mapping closes only once nothing points into it
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """All of it in memory (numpy would otherwise make an object array of this file)."""
        out = self.rows(slice(None))
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, which) -> np.ndarray:
        return self.rows(which)
