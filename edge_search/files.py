"""File helpers shared by export and runtime: checksums and atomic writes.

Outputs are written to a temporary sibling and renamed into place, so a crash
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import EdgeSearchError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _renameat2_exchange():
    """Linux renameat2(RENAME_EXCHANGE): swap two paths in one step; None where unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (both stay valid at every instant).
    False when the system cannot (not Linux, old kernel, filesystem without support)."""
    fn = _renameat2_exchange()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def clean_leftovers(out: Path) -> list[Path]:
    """Remove staging folders a killed earlier run left beside `out` (`.NAME.partial-*`, `.NAME.old-*`)."""
    out = Path(out).absolute()
    removed = []
    if not out.parent.is_dir():
        return removed
    for pattern in (f".{out.name}.partial-*", f".{out.name}.old-*"):
        for p in out.parent.glob(pattern):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


@contextlib.contextmanager
def staged_directory(out: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory beside `out`; on success rename it to `out`.

    If the body raises, the staging directory is removed and `out` is untouched.
    With `force`, an existing `out` is replaced only after the new one is
    complete, in one atomic exchange where the system allows (Linux
    renameat2), so `out` is the old bundle or the new one at every instant.
    Staging folders left by a killed earlier run are removed first.
    """
    out = Path(out).absolute()
    if out.exists() and not force:
        raise EdgeSearchError(f"{out}: already exists (pass --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        fsync_tree(stage)
        publish_modes(stage)
        if out.exists():
            if exchange_paths(stage, out):
                shutil.rmtree(stage, ignore_errors=True)  # now holds the old bundle
            else:  # a short window with no `out`, never a partial one
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.rename(out, old / out.name)
                os.rename(stage, out)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish_modes(root: Path) -> None:
    # mkdtemp/mkstemp create owner-only entries; a bundle is read by other users
    # (the kiosk service account), so give it the usual modes.
    os.chmod(root, 0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


def fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
