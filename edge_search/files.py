"""File helpers shared by export and runtime: checksums, atomic writes, and
the two checks every command goes through at the file system's edge.

Outputs are written to a temporary sibling and renamed into place, so a crash
leaves either the old file or the new one, never half of one. A path we are
told to write must be absent or a regular file (or, for folders, a real
folder): never a FIFO, a device node or a symlink, which a rename would
silently replace (`check_output`). Inputs are read only from regular files and
only up to a cap fitting what they are (`read_regular`), so a FIFO or
/dev/zero neither hangs a command nor fills memory. Every OSError becomes one
line naming the path (`FileError`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

from edge_search.errors import EdgeSearchError, FileError


def describe_os_error(e: OSError) -> str:
    """The reason part of an OSError, as one short phrase ('No space left on device')."""
    return e.strerror or type(e).__name__


def _kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


# --- outputs --------------------------------------------------------------------
def check_output(path: str | Path, *, folder: bool = False, flag: str = "output",
                 error: type[EdgeSearchError] = FileError) -> Path:
    """Refuse an output path that holds anything but what we would write there.

    A file output may be absent or a regular file (replaced atomically); a
    folder output absent or a real folder. A symlink, FIFO, device node or
    socket at the path is refused: `os.replace` would swap it for a regular
    file (run as root against /dev/sda, that destroys a device node), and a
    symlinked folder would send our files elsewhere. Returns the absolute path."""
    refuse_output(path, folder=folder, flag=flag, error=error)
    return Path(path).absolute()


def refuse_output(p: str | Path, *, folder: bool = False, flag: str = "output",
                  error: type[EdgeSearchError] = FileError) -> None:
    """check_output without making a Path (a build writes a thumbnail per image, and pathlib interns every
    part of every path it is given: the table it keeps them in only grows)."""
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        what = "create the folder" if folder else "write the file"
        raise error(f"{flag} {p}: cannot {what} (a file is in the way)") from None
    except (OSError, ValueError) as e:
        reason = describe_os_error(e) if isinstance(e, OSError) else "not a usable path"
        raise error(f"{flag} {p}: cannot check it ({reason})") from None
    if stat.S_ISDIR(st.st_mode) if folder else stat.S_ISREG(st.st_mode):
        return
    what = "folder" if folder else "file"
    raise error(f"{flag} {p}: is {_kind_of(st.st_mode)}; refusing to write a {what} over it")


def plain_name(name: str, flag: str, error: type[EdgeSearchError] = FileError) -> str:
    """A file name stem that stays in the folder it is put in: no separators, no '..', no control characters."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith(".")
            or any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name)):
        raise error(f"{flag} {name!r}: must be a plain file name (no '/', no leading '.', no control characters)")
    return name


def write_all(f: IO[bytes], data: bytes) -> None:
    """The one place output bytes hit the disk (a seam: tests inject ENOSPC here)."""
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_output(path: Path, *, mode: int = 0o644, overwrite: bool = True,
                  error: type[EdgeSearchError] = FileError) -> Iterator[IO[bytes]]:
    """Yield a temp file beside `path`; on success it becomes `path` in one step.

    With `overwrite=False` the final step is a hard link, which fails if
    `path` appeared meanwhile: never clobbered, even by a racing writer. On
    any failure (a full disk, say) the temp file is removed: nothing
    half-written is left under `path`, so a retry starts clean."""
    path = os.fspath(path)  # (not a Path: see refuse_output)
    refuse_output(path, error=error)
    if not overwrite and os.path.lexists(path):
        raise error(f"{path}: already exists (never overwritten)")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=os.path.dirname(path) or ".")
    except OSError as e:
        raise error(f"{path}: cannot write ({describe_os_error(e)})") from None
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            refuse_output(path, error=error)  # again: something may have appeared while we wrote
            if overwrite:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)
                os.unlink(tmp)
        except FileExistsError:
            raise error(f"{path}: already exists (never overwritten)") from None
        except OSError as e:
            raise error(f"{path}: cannot write ({describe_os_error(e)})") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        # a read of n bytes allocates n up front: a small file (a thumbnail) is read in one call of its size
        # (+1, to see its end), not into a 1 MiB buffer twice
        size = os.fstat(f.fileno()).st_size
        want = min(size + 1, chunk) if size else chunk
        while block := f.read(want):
            h.update(block)
            if len(block) < want:
                break
            want = chunk
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True,
                       error: type[EdgeSearchError] = FileError) -> None:
    with atomic_output(path, mode=mode, overwrite=overwrite, error=error) as f:
        write_all(f, data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


LINES_CHUNK = 1 << 20  # bytes of lines gathered per write (each write is also an fsync)


def atomic_write_lines(path: Path, lines: Iterable[str]) -> None:
    """atomic_write_text of the lines joined, without ever holding them as one string (a million
    products' table), written a chunk at a time."""
    with atomic_output(path) as f:
        chunk, size = [], 0
        for line in lines:
            data = line.encode("utf-8")
            chunk.append(data)
            size += len(data)
            if size >= LINES_CHUNK:
                write_all(f, b"".join(chunk))
                chunk, size = [], 0
        if chunk:
            write_all(f, b"".join(chunk))


def ensure_folder(path: str | Path, flag: str = "output", error: type[EdgeSearchError] = FileError) -> Path:
    """Create an output folder (and its parents) after `check_output`; one line on failure."""
    p = check_output(path, folder=True, flag=flag, error=error)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a parent is a file
        raise error(f"{flag} {path}: cannot create the folder (a file is in the way)") from None
    except OSError as e:
        raise error(f"{flag} {path}: cannot create the folder ({describe_os_error(e)})") from None
    return p


def check_writable_folder(path: str | Path, flag: str = "output", error: type[EdgeSearchError] = FileError) -> None:
    """Prove early that files can be created in `path` (made if missing): a long job
    must not find out at its end that its output cannot be written."""
    p = ensure_folder(path, flag, error)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise error(f"{flag} {path}: cannot write there ({describe_os_error(e)})") from None


def check_new_folder(path: str | Path, flag: str = "--out", error: type[EdgeSearchError] = FileError) -> Path:
    """An output folder made by renaming a staged one beside it: refuse what sits at the path
    (`check_output`) and prove now that its parent can be written."""
    out = check_output(path, folder=True, flag=flag, error=error)
    check_writable_folder(out.parent, flag, error)
    return out


# --- inputs ---------------------------------------------------------------------
# Caps on what one input file may make us read into memory, by what it is.
MAX_IMAGE_BYTES = 256 << 20  # a 64 MP photo as an uncompressed BMP is 192 MB
MAX_MANIFEST_BYTES = 16 << 20
MAX_SIGNATURE_BYTES = 4096
MAX_KEY_BYTES = 64 << 10
CACHE_ENV = "EDGE_SEARCH_CACHE_DIR"
# a file whose stat stands for its checked bytes (the embedding cache's known hashes, a bundle's checked
# record) must have a ctime this much older than the check's start: file system timestamps come from a
# coarse clock (a few ms on Linux), so a write right after the check could leave them unchanged
STAT_MARGIN_NS = 2_000_000_000


def default_cache_dir() -> Path:
    """$EDGE_SEARCH_CACHE_DIR, else $XDG_CACHE_HOME/edge-search, else ~/.cache/edge-search."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-search"


def write_cache_record(path: Path, record) -> bool:
    """Write a JSON record under the cache folder (creating its folder); False when that cannot be
    done: a record only saves work, so its caller goes on without it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record) + "\n")
    except (EdgeSearchError, OSError):
        return False
    return True


def file_stamp(path: str | Path, st: os.stat_result | None = None) -> str | None:
    """What stands for a regular file's checked bytes while it is unchanged: its size, mtime, ctime, inode
    and device (see STAT_MARGIN_NS); None for a missing file or one that is not regular (`st`: its lstat,
    when the caller has it)."""
    if st is None:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


MAX_TABLE_BYTES = 1 << 30  # catalogs, queries, products.jsonl: read line by line, but still bounded


@contextlib.contextmanager
def open_regular(path: str | Path, *, limit: int, what: str = "file",
                 error: type[EdgeSearchError] = FileError) -> Iterator[IO[bytes]]:
    """Open a regular file for reading, or raise `error` in one line.

    Opened non-blocking, so a FIFO cannot hang us in open(); anything but a
    regular file (FIFO, /dev/zero, a socket, a folder) is refused by fstat on
    the opened descriptor, so no swap can happen between check and read;
    a file over `limit` bytes is refused before it is read."""
    p = path  # (not made a Path: pathlib interns every part, and a catalog build reads a million images)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{p}: no such file") from None
    except IsADirectoryError:
        raise error(f"{p}: is a folder, not a {what}") from None
    except ValueError:  # a NUL byte in the name (from a catalog cell, say)
        raise error(f"{str(p)!r}: not a usable file name") from None
    except OSError as e:
        raise error(f"{p}: cannot read ({describe_os_error(e)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{p}: is {_kind_of(st.st_mode)}, not a regular file; a {what} is read only from a regular file")
        if st.st_size > limit:
            raise error(f"{p}: {st.st_size} bytes, over the {limit} byte limit for a {what}")
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


@contextlib.contextmanager
def open_regular_text(path: str | Path, *, limit: int, what: str, error: type[EdgeSearchError] = FileError,
                      encoding: str = "utf-8", newline: str | None = None) -> Iterator[IO[str]]:
    """`open_regular` for text read line by line (catalogs, query lists)."""
    with open_regular(path, limit=limit, what=what, error=error) as f:
        yield io.TextIOWrapper(f, encoding=encoding, newline=newline)


def read_regular(path: str | Path, *, limit: int, what: str = "file",
                 error: type[EdgeSearchError] = FileError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see `open_regular`)."""
    with open_regular(path, limit=limit, what=what, error=error) as f:
        try:
            # read what the file holds, not `limit`: read(n) allocates n bytes up front, and the limits are
            # hundreds of MB (a 1 GiB buffer for every product table, 256 MB for every catalog image)
            parts, got = [], 0
            want = min(limit, os.fstat(f.fileno()).st_size) + 1
            while got <= limit:
                part = f.read(want)
                if not part:
                    break
                parts.append(part)
                got += len(part)
                if len(part) < want:  # a buffered read comes back short only at the end of the file
                    break
                want = min(limit + 1 - got, 1 << 20)
            data = b"".join(parts)  # (one part: that very object, not copied)
        except OSError as e:
            raise error(f"{path}: cannot read ({describe_os_error(e)})") from None
    if len(data) > limit:  # grew while we read it
        raise error(f"{path}: over the {limit} byte limit for a {what}")
    return data


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
    out = check_output(out, folder=True, flag="--out")
    if out.exists() and not force:
        raise EdgeSearchError(f"{out}: already exists (pass --force to replace it)")
    ensure_folder(out.parent, "--out")
    clean_leftovers(out)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise FileError(f"--out {out}: cannot write beside it ({describe_os_error(e)})") from None
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
