"""The content-addressed embedding cache: (encoder sha256, image sha256) -> vector.

A catalog build embeds only the images this cache has not seen with the same
encoder, so a catalog that changes a little is embedded a little. One SQLite
file (standard library, atomic commits, no server); vectors are float32
blobs. Safe to delete at any time: it only ever saves work. Must not import
torch (a catalog build whose encoder is an ONNX file runs without it).

It also remembers each catalog image file's sha256 under its stat (size,
mtime, ctime, inode, device), as git's index does, so a nightly build need
not read every unchanged image again to know its bytes. A file is remembered
only when its ctime is older than the start of the build that hashed it (so
no write could land between the hashing and the stat); any later write moves
its ctime past that and the entry no longer matches.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sqlite3
import stat as stat_mod
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from edge_search.core.columns import DigestSet
from edge_search.errors import ExportError
from edge_search.files import STAT_MARGIN_NS, check_output, file_stamp

CACHE_FILE = "embeddings.sqlite"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EmbeddingCache:
    """Vectors by (encoder, image) content hashes; `view` names a derived image
    (e.g. "mild:1:0.3", a seeded augmentation of the image) or "" for the image itself."""

    def __init__(self, folder: str | Path):
        # a symlink, FIFO or device where the cache folder or file should be is refused, never opened
        check_output(folder, folder=True, flag="--embedding-cache", error=ExportError)
        self.path = check_output(Path(folder) / CACHE_FILE, flag="--embedding-cache", error=ExportError)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS vectors (encoder TEXT NOT NULL, image TEXT NOT NULL, "
                            "view TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL, "
                            "PRIMARY KEY (encoder, image, view))")
            self.db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, stat TEXT NOT NULL, "
                            "sha256 TEXT NOT NULL)")
            self.db.commit()
        except (OSError, sqlite3.Error) as e:
            raise ExportError(f"{self.path}: cannot open the embedding cache ({e}); "
                              "pass --embedding-cache DIR or delete the file") from None

    def get(self, encoder: str, images: list[str], view: str = "") -> dict[str, np.ndarray]:
        """The cached vectors among `images` (sha256 hex), by image hash."""
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(images), 500):  # SQLite's bound-parameter limit
            chunk = images[start:start + 500]
            rows = self.db.execute(
                f"SELECT image, dim, vector FROM vectors WHERE encoder = ? AND view = ? AND image IN "
                f"({','.join('?' * len(chunk))})", [encoder, view, *chunk])
            for image, dim, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if len(vec) == dim:  # a short blob is a torn write from some other tool: embed again
                    out[image] = vec
        return out

    def images(self, encoder: str, view: str = "") -> DigestSet:
        """Every image the cache holds a vector of under this encoder and view (as digests: a cache of a
        million images as a set of str held ~150 MB on the driver)."""
        rows = self.db.execute("SELECT image FROM vectors WHERE encoder = ? AND view = ? AND length(vector) = 4 * dim",
                               (encoder, view))
        raw = bytearray()
        for (image,) in rows:
            try:
                digest = bytes.fromhex(image)
            except (TypeError, ValueError):  # a row some other tool wrote: not an image hash of ours
                continue
            if len(digest) == 32:
                raw += digest
        return DigestSet(np.frombuffer(bytes(raw), dtype=np.uint8))

    def put(self, encoder: str, vectors: dict[str, np.ndarray], view: str = "") -> None:
        rows = [(encoder, image, view, int(v.shape[-1]), np.asarray(v, np.float32).tobytes())
                for image, v in vectors.items()]
        try:
            with self.db:  # one transaction: all of them or none
                self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as e:
            raise ExportError(f"{self.path}: cannot write the embedding cache ({e})") from None

    def file_sha(self, path: str | Path) -> str | None:
        """The sha256 of the bytes of `path` as a build hashed them, when the file's stat is still the one
        it had then; None otherwise (read it)."""
        key = file_stamp(path)
        if key is None:
            return None
        row = self.db.execute("SELECT stat, sha256 FROM files WHERE path = ?", (os.path.abspath(path),)).fetchone()
        return row[1] if row is not None and row[0] == key else None

    def remember_files(self, hashed: Iterable[tuple[str | Path, str]], build_start_ns: int) -> int:
        """Remember the sha256 a build took of each file whose ctime is safely older than the build's
        start (see the module doc); returns how many were. One transaction, written REMEMBER_CHUNK files at
        a time (a catalog of a million files is not listed in memory)."""
        count = 0
        try:
            with self.db:
                for chunk in _chunked(hashed, REMEMBER_CHUNK):
                    rows = []
                    for path, sha in chunk:
                        try:
                            st = os.stat(path, follow_symlinks=False)
                        except OSError:
                            continue
                        if stat_mod.S_ISREG(st.st_mode) and st.st_ctime_ns < build_start_ns - STAT_MARGIN_NS:
                            rows.append((os.path.abspath(path), file_stamp(path, st), sha))
                    self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", rows)
                    count += len(rows)
        except sqlite3.Error as e:
            raise ExportError(f"{self.path}: cannot write the embedding cache ({e})") from None
        return count

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


REMEMBER_CHUNK = 2000


def _chunked(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
