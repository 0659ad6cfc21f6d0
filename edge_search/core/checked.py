"""A record that a bundle's files were checked, so that a restart need not hash them again.

The kiosk checks its bundle before it answers, and restarts after every power
cut: hashing a 100 000-product bundle (and parsing every product line against
the key file) takes seconds. After a full check passes, the stat of each file
the manifest lists (size, mtime, ctime, inode, device) is written under the
cache folder (files.default_cache_dir), named by the bundle's real path and its
manifest's sha256; a later check that finds every such file with the same stat
and the same manifest skips the hashing.

Why a stat can stand for the bytes: a file written in place or replaced gets a
new ctime, which no user can set back. A file changed within STAT_MARGIN_NS of
the check could keep its timestamps (a coarse clock), so a check is recorded
only when every file is older than that; a freshly installed bundle is hashed
again at its next start, then recorded. Thumbnails are left out (100 000 stats
would cost what the record saves): a thumbnail is checked against its name
when it is shown (kiosk/tui/thumbs.py). `edge-search verify` and install
always hash everything. What a record cannot see: bits that rot on the disk
under an unchanged stat, which no check between restarts sees either.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from edge_search.errors import EdgeSearchError
from edge_search.files import STAT_MARGIN_NS, default_cache_dir, file_stamp, read_regular, write_cache_record

FOLDER = "checked-bundles"
MAX_RECORD_BYTES = 1 << 20


def _record_path(root: Path, manifest_sha256: str) -> Path:
    key = hashlib.sha256(f"{os.path.realpath(root)}\0{manifest_sha256}".encode()).hexdigest()
    return default_cache_dir() / FOLDER / f"{key}.json"


def already_checked(root: Path, manifest_sha256: str, names: list[str]) -> bool:
    """Whether a full check of this bundle passed on these very files (same manifest, same stats)."""
    try:
        record = json.loads(read_regular(_record_path(root, manifest_sha256), limit=MAX_RECORD_BYTES))
    except (EdgeSearchError, OSError, ValueError):  # none, unreadable, or not ours: check again
        return False
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or sorted(files) != sorted(names):
        return False
    return all(isinstance(files[name], str) and files[name] == file_stamp(root / name) for name in names)


def record_checked(root: Path, manifest_sha256: str, names: list[str], started_ns: int) -> bool:
    """Remember that a full check that began at `started_ns` (time.time_ns()) passed on these files;
    False when a file is too new to be remembered or the cache folder cannot be written (the next
    check hashes again)."""
    stamps = {}
    for name in names:
        try:
            st = os.stat(root / name, follow_symlinks=False)
        except OSError:
            return False
        if st.st_ctime_ns >= started_ns - STAT_MARGIN_NS:
            return False
        stamps[name] = file_stamp(root / name, st)
    if None in stamps.values():
        return False
    record = {"bundle": os.path.realpath(root), "manifest_sha256": manifest_sha256, "files": stamps}
    return write_cache_record(_record_path(root, manifest_sha256), record)
