"""Shipping bundles to devices: pack into one file, install, roll back.

`pack` writes a bundle as one tar file (gzip when the name ends in .gz or
.tgz). `install` unpacks a packed file (or copies a bundle folder) into
`DIR/.staging-*`, refusing anything unsafe before it is written (absolute
paths, `..`, links, devices, names the manifest does not list, members larger
than the manifest declares), verifies checksums and, when a key is
configured, the signature, loads the model and checks that a self-test query
finds its product; only then is the bundle moved to `DIR/bundles/<name>` and
`DIR/current` switched to it in one atomic rename of a symlink. `DIR/previous`
keeps the bundle it replaced; `rollback` swaps the two. A kill at any moment
leaves `DIR/current` on a complete bundle. Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from edge_search.core.bundle import Bundle
from edge_search.errors import BundleError, EdgeSearchError, ImageError, InstallError
from edge_search.files import (MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, atomic_output, check_output, ensure_folder, fsync_dir,
                    fsync_tree, open_regular, publish_modes)
from edge_search.core.manifest import MANIFEST_NAME, Manifest, manifest_from_bytes, read_manifest_bytes
from edge_search.shipping.signing import SIGNATURE_NAME

CURRENT, PREVIOUS, BUNDLES = "current", "previous", "bundles"
MAX_MEMBERS = 200_000
MAX_EXTENDED_HEADER_BYTES = 64 << 10  # a PAX/GNU long-name header carries a path and a few numbers
MAX_ARCHIVE_BYTES = 64 << 30
SELF_TEST_TOP = 3  # each self-test product must be among this many results
SELF_TEST_PRODUCTS = 5  # distinct products queried: more than SELF_TEST_TOP, so a constant answer fails
SELF_TEST_MARGIN = 0.25  # own score at most this share of (best - median) below the best


# --- pack ---------------------------------------------------------------------
def pack(bundle_dir: str | Path, out_file: str | Path, *, trusted_key: str | Path | None = None) -> Path:
    """Write a verified bundle as one tar file (gzip for .gz/.tgz), written to a temp file and renamed.

    manifest.json is the first member and manifest.sig (when the bundle is
    signed) the second: an installer with a trusted key checks the signature
    from those two before it reads another header."""
    bundle = Bundle.open(bundle_dir, verify=True, trusted_key=trusted_key)
    out = check_output(out_file, flag="--out", error=InstallError)
    names = [MANIFEST_NAME] + ([SIGNATURE_NAME] if (bundle.root / SIGNATURE_NAME).is_file() else [])
    names += sorted(bundle.manifest.files)
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    ensure_folder(out.parent, "--out", InstallError)
    with atomic_output(out, error=InstallError) as f:
        with tarfile.open(fileobj=f, mode=mode, format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                info = tar.gettarinfo(str(bundle.root / name), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(bundle.root / name, "rb") as src:
                    tar.addfile(info, src)
    return out


# --- unpacking, member by member ---------------------------------------------
def _member_name(name: str, where: str) -> str:
    """A member name as a safe relative POSIX path, or InstallError."""
    if not name or "\x00" in name or "\\" in name:
        raise InstallError(f"{where}: member {name!r} has an unusable name")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/"):
        raise InstallError(f"{where}: member '{name}' is an absolute path")
    if ".." in p.parts:
        raise InstallError(f"{where}: member '{name}' leaves the bundle ('..')")
    parts = [x for x in p.parts if x not in ("", ".")]
    if not parts:
        raise InstallError(f"{where}: member {name!r} has an empty name")
    return "/".join(parts)


def _kind(m: tarfile.TarInfo) -> str:
    if m.issym():
        return f"a symbolic link (to '{m.linkname}')"
    if m.islnk():
        return f"a hard link (to '{m.linkname}')"
    if m.ischr() or m.isblk():
        return "a device file"
    if m.isfifo():
        return "a FIFO"
    return "not a regular file"


def _copy_limited(src, dst: Path, limit: int, where: str, name: str) -> None:
    written = 0
    with open(dst, "xb") as out:
        while block := src.read(1 << 20):
            written += len(block)
            if written > limit:
                raise InstallError(f"{where}: member '{name}' is larger than the {limit} bytes the manifest declares")
            out.write(block)


class _HeaderRefused(Exception):
    """Raised from inside tarfile's header parser; turned into an InstallError naming the archive."""


class _CappedTarInfo(tarfile.TarInfo):
    """tarfile reads a PAX or GNU long-name header's whole body into memory, as large as its
    header claims: a 100-byte header can ask for gigabytes. Bundles need neither big extended
    headers nor sparse files, so those are refused before tarfile reads them."""

    def _proc_member(self, tar):
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _HeaderRefused(f"member '{self.name}' is a sparse file; bundles hold regular files only")
        extended = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                    tarfile.SOLARIS_XHDTYPE)
        if self.type in extended and self.size > MAX_EXTENDED_HEADER_BYTES:
            raise _HeaderRefused(f"an extended (PAX/GNU) header of {self.size} bytes, over the "
                                 f"{MAX_EXTENDED_HEADER_BYTES} byte limit")
        return super()._proc_member(tar)


def _limits(manifest: Manifest, where: str) -> dict[str, int]:
    """The largest size each member may have: the manifest's own declaration."""
    limits = {MANIFEST_NAME: MAX_MANIFEST_BYTES, SIGNATURE_NAME: MAX_SIGNATURE_BYTES}
    for name, entry in manifest.files.items():
        limits[_member_name(name, f"{where}:{MANIFEST_NAME} files")] = entry["bytes"]
    return limits


def _check_member(m: tarfile.TarInfo, name: str, limits: dict[str, int], where: str) -> None:
    if m.isdir():
        return
    if not m.isreg():
        raise InstallError(f"{where}: member '{name}' is {_kind(m)}; bundles hold regular files only")
    if name not in limits:
        raise InstallError(f"{where}: member '{name}' is not listed in the manifest")
    if m.size > limits[name]:
        raise InstallError(f"{where}: member '{name}' is {m.size} bytes, the manifest declares {limits[name]}")


def _check_space(stage: Path, limits: dict[str, int], where: str) -> None:
    """Refuse an archive whose declared files cannot fit, before writing them."""
    need = sum(limits.values())
    free = shutil.disk_usage(stage).free
    if need > free:
        raise InstallError(f"{where}: the bundle declares {need} bytes, {stage.parent} has {free} free")


def _extract(tar: tarfile.TarFile, m: tarfile.TarInfo, name: str, stage: Path, limit: int, where: str) -> None:
    if m.isdir():
        return
    dst = stage / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(m)
    if src is None:
        raise InstallError(f"{where}: member '{name}' cannot be read")
    _copy_limited(src, dst, limit, where, name)


def _read_small(tar: tarfile.TarFile, m: tarfile.TarInfo | None, name: str, limit: int, where: str) -> bytes:
    if m is None:
        raise InstallError(f"{where}: no {name} in the archive (not a packed bundle)")
    if not m.isreg():
        raise InstallError(f"{where}: member '{name}' is {_kind(m)}")
    if m.size > limit:
        raise InstallError(f"{where}: {name} is {m.size} bytes, over the {limit} byte limit")
    return tar.extractfile(m).read(limit)


def _unpack(archive: Path, stage: Path, trusted_key: Path | None = None) -> None:
    """Unpack a packed bundle into `stage`, refusing anything unsafe before it is written.

    With a trusted key, the archive must begin with manifest.json and
    manifest.sig, and the signature is checked from those two members before
    another header is read: an archive the device does not trust costs no
    disk and almost no work, whatever its manifest declares."""
    where = str(archive)
    with open_regular(archive, limit=MAX_ARCHIVE_BYTES, what="packed bundle", error=InstallError) as f:
        try:
            tar = tarfile.open(fileobj=f, mode="r:*", tarinfo=_CappedTarInfo)
        except _HeaderRefused as e:
            raise InstallError(f"{where}: refused: {e}") from None
        except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, RecursionError) as e:
            raise InstallError(f"{where}: not a packed bundle (not a readable tar archive: {_short(e)})") from None
        with tar:
            try:
                if trusted_key is not None:
                    _unpack_signed(tar, stage, where, trusted_key)
                else:
                    _unpack_unsigned(tar, stage, where)
            except InstallError:
                raise
            except _HeaderRefused as e:
                raise InstallError(f"{where}: refused: {e}") from None
            except BundleError as e:
                raise InstallError(str(e)) from None
            except (tarfile.TarError, EOFError, zlib.error, ValueError, UnicodeError, RecursionError) as e:
                raise InstallError(f"{where}: malformed archive ({_short(e)})") from None
            except OSError as e:
                raise InstallError(f"{where}: cannot unpack ({_short(e)})") from None


def _unpack_signed(tar: tarfile.TarFile, stage: Path, where: str, trusted_key: Path) -> None:
    from edge_search.shipping.signing import verify_signature_bytes

    members = iter(tar)
    first, second = next(members, None), next(members, None)
    names = [_member_name(m.name, where) if m is not None else None for m in (first, second)]
    if names[0] == MANIFEST_NAME and names[1] != SIGNATURE_NAME:
        raise InstallError(f"{where}: bundle is not signed (no {SIGNATURE_NAME} after {MANIFEST_NAME}) and a "
                           f"trusted key is configured ({trusted_key})")
    if names != [MANIFEST_NAME, SIGNATURE_NAME]:
        raise InstallError(f"{where}: a trusted key is configured and the archive does not begin with "
                           f"{MANIFEST_NAME} and {SIGNATURE_NAME} (unsigned, or not packed by `edge-search pack`)")
    data = _read_small(tar, first, MANIFEST_NAME, MAX_MANIFEST_BYTES, where)
    sig = _read_small(tar, second, SIGNATURE_NAME, MAX_SIGNATURE_BYTES, where)
    verify_signature_bytes(data, sig, trusted_key, f"{where}:{SIGNATURE_NAME}")
    # trusted from here on: the manifest's sizes bound every member
    limits = _limits(manifest_from_bytes(data, f"{where}:{MANIFEST_NAME}"), where)
    _check_space(stage, limits, where)
    (stage / MANIFEST_NAME).write_bytes(data)
    (stage / SIGNATURE_NAME).write_bytes(sig)
    seen = {MANIFEST_NAME, SIGNATURE_NAME}
    for count, m in enumerate(members, 3):
        if count > MAX_MEMBERS:
            raise InstallError(f"{where}: more than {MAX_MEMBERS} members (not a bundle)")
        name = _member_name(m.name, where)
        if name in seen:
            raise InstallError(f"{where}: member '{name}' appears twice")
        seen.add(name)
        _check_member(m, name, limits, where)
        _extract(tar, m, name, stage, limits.get(name, 0), where)


def _unpack_unsigned(tar: tarfile.TarFile, stage: Path, where: str) -> None:
    """No key configured: every header is checked against the manifest before a byte is written."""
    members = _read_headers(tar, where)
    data = _read_small(tar, members.get(MANIFEST_NAME), MANIFEST_NAME, MAX_MANIFEST_BYTES, where)
    limits = _limits(manifest_from_bytes(data, f"{where}:{MANIFEST_NAME}"), where)
    for name, m in members.items():
        _check_member(m, name, limits, where)
    _check_space(stage, limits, where)
    for name, m in members.items():
        _extract(tar, m, name, stage, limits.get(name, 0), where)


def _read_headers(tar: tarfile.TarFile, where: str) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for count, m in enumerate(tar, 1):
        if count > MAX_MEMBERS:
            raise InstallError(f"{where}: more than {MAX_MEMBERS} members (not a bundle)")
        name = _member_name(m.name, where)
        if m.issym() or m.islnk() or m.isdev() or m.isfifo():
            raise InstallError(f"{where}: member '{name}' is {_kind(m)}; bundles hold regular files only")
        if name in members:
            raise InstallError(f"{where}: member '{name}' appears twice")
        members[name] = m
    if not members:
        raise InstallError(f"{where}: empty archive (not a packed bundle)")
    return members


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def _copy_bundle_dir(src: Path, stage: Path, trusted_key: Path | None = None) -> None:
    """Copy a bundle folder's manifest, signature and listed files (nothing else, no links);
    with a trusted key, the signature is checked before anything is copied."""
    data = read_manifest_bytes(src)
    if trusted_key is not None:
        from edge_search.shipping.signing import verify_signature

        verify_signature(src, data, trusted_key)
    manifest = manifest_from_bytes(data, str(src / MANIFEST_NAME))
    names = [SIGNATURE_NAME] if (src / SIGNATURE_NAME).is_file() else []
    for name in [*names, *manifest.files]:
        rel = _member_name(name, str(src / MANIFEST_NAME))
        p = src / rel
        if p.is_symlink() or not p.is_file():
            raise InstallError(f"{p}: missing or not a regular file")
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, stage / rel)
    (stage / MANIFEST_NAME).write_bytes(data)


# --- install -------------------------------------------------------------------
@dataclass(frozen=True)
class InstallReport:
    name: str
    path: Path  # DIR/bundles/<name>
    previous: Path | None
    self_test: str  # what the self-test queried and found
    seconds: float
    already_current: bool = False


@contextlib.contextmanager
def _locked(into: Path) -> Iterator[None]:
    """One install or rollback at a time per DIR."""
    lock = into / ".lock"
    try:
        # O_NOFOLLOW: a .lock that is a link is never followed (to a file of someone else's)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise InstallError(f"{lock}: cannot open the lock file ({e.strerror or e})") from None
    with os.fdopen(fd, "r+b") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InstallError(f"{lock}: is not a regular file; move it away")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstallError(f"{into}: another install or rollback is running") from None
        yield


def _target(link: Path) -> Path | None:
    """Where DIR/current (or previous) points; None when absent. Anything but a symlink made by
    install (a real folder, a file) or a link that cannot be followed (a loop) is refused in one line."""
    try:
        st = os.lstat(link)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InstallError(f"{link}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISLNK(st.st_mode):
        raise InstallError(f"{link}: is a real {'folder' if stat.S_ISDIR(st.st_mode) else 'file'}, not the link "
                           "install makes; move it away and install again")
    try:
        return (link.parent / os.readlink(link)).resolve(strict=False)
    except (OSError, RuntimeError) as e:  # a loop: RuntimeError before Python 3.13
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "a symlink loop"
        raise InstallError(f"{link}: cannot follow the link ({reason}); move it away and install again") from None


def _point(link: Path, target: Path) -> None:
    """Make `link` a symlink to `target` (relative) in one atomic rename."""
    tmp = link.parent / f".{link.name}-{os.getpid()}-{time.monotonic_ns()}"
    os.symlink(os.path.relpath(target, link.parent), tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _clean(into: Path) -> None:
    """Remove what a killed install left: staging folders and half-made links."""
    for p in into.glob(".staging-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in list(into.glob(f".{CURRENT}-*")) + list(into.glob(f".{PREVIOUS}-*")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _safe_name(manifest: Manifest, manifest_bytes: bytes) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", manifest.name).strip(".-")[:64] or "bundle"
    return f"{stem}-{hashlib.sha256(manifest_bytes).hexdigest()[:12]}"


def _self_test_products(products) -> list:
    """Up to SELF_TEST_PRODUCTS products with thumbnails, spread over the catalog."""
    with_thumbs = [p for p in products if p.thumbnail]
    n = min(SELF_TEST_PRODUCTS, len(with_thumbs))
    if n <= 1:
        return with_thumbs[:n]
    return [with_thumbs[round(i * (len(with_thumbs) - 1) / (n - 1))] for i in range(n)]


def self_test(bundle_dir: Path, *, threads: int = 1):
    """Load the bundle's model and index and query several products' thumbnails: each must find
    its own product among the top SELF_TEST_TOP, scoring near the top of the catalog's spread
    (no further below the best than SELF_TEST_MARGIN of best minus the median). A bundle that
    answers everything alike puts the same few products first for every query, so distinct
    products cannot all pass; shuffled vectors put each product's own score in the crowd.
    Returns (searcher, description)."""
    from edge_search.core.images import load_image
    from edge_search.core.search import Searcher

    searcher = Searcher.from_bundle(bundle_dir, verify=False, threads=threads)
    products = searcher.products.products
    if not products:
        raise InstallError(f"{bundle_dir}: self-test: the bundle has no products")
    chosen = _self_test_products(products)
    if not chosen:
        raise InstallError(f"{bundle_dir}: self-test: no product has a thumbnail to query with")
    bundle = Bundle(root=Path(bundle_dir), manifest=searcher.manifest)
    found = []
    for product in chosen:
        try:
            image = load_image(bundle.path(product.thumbnail))
        except ImageError as e:
            raise InstallError(f"self-test: {e}") from None
        result = searcher.search_image(image, k=len(products), min_score=-2.0)
        scores = np.array([h.score for h in result.hits])
        ids = [h.id for h in result.hits]
        if not np.isfinite(scores).all() or product.id not in ids:
            raise InstallError(f"{bundle_dir}: self-test failed: the thumbnail of '{product.id}' got no finite "
                               "score for itself")
        rank = ids.index(product.id) + 1
        own, best, median = scores[rank - 1], scores.max(), float(np.median(scores))
        if rank > SELF_TEST_TOP:
            raise InstallError(f"{bundle_dir}: self-test failed: the thumbnail of '{product.id}' found "
                               f"{ids[:SELF_TEST_TOP]}, not itself in the top {SELF_TEST_TOP}")
        if len(products) > 2 and best - own > SELF_TEST_MARGIN * (best - median):
            raise InstallError(f"{bundle_dir}: self-test failed: the thumbnail of '{product.id}' scores itself "
                               f"{own:.4f}, too far below the best {best:.4f} (catalog median {median:.4f})")
        found.append(f"'{product.id}' rank {rank} ({own:.3f})")
    return searcher, f"{len(found)} products found themselves: " + ", ".join(found)


def _os_errors_named(fn):
    """A read-only or full disk, a folder we may not write: one InstallError naming the path."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            where = e.filename if e.filename is not None else kwargs.get("into", args[-1] if args else "")
            raise InstallError(f"{where}: {e.strerror or type(e).__name__}") from None
    return wrapper


@_os_errors_named
def install(source: str | Path, into: str | Path, *, trusted_key: str | Path | None = None) -> InstallReport:
    """Unpack (or copy), verify, self-test, then switch DIR/current atomically."""
    t0 = time.perf_counter()
    src, into = Path(source), Path(into).absolute()
    if not src.exists():
        raise InstallError(f"{src}: no such file or folder")
    try:
        (into / BUNDLES).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InstallError(f"{into}: cannot create ({e.strerror or e})") from None
    with _locked(into):
        _clean(into)
        for link in (CURRENT, PREVIOUS):  # a folder or loop there is refused before any work, not after the switch
            _target(into / link)
        stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=into))
        try:
            if src.is_dir():
                _copy_bundle_dir(src, stage, Path(trusted_key) if trusted_key is not None else None)
            else:
                _unpack(src, stage, Path(trusted_key) if trusted_key is not None else None)
            try:
                bundle = Bundle.open(stage, verify=True, trusted_key=trusted_key)
                _, tested = self_test(stage)
            except InstallError:
                raise
            except EdgeSearchError as e:  # name what the user gave, not our staging folder
                raise InstallError(f"{src}: refused: " + str(e).replace(f"{stage}/", "").replace(str(stage), "bundle")) from None
            data = (stage / MANIFEST_NAME).read_bytes()
            name = _safe_name(bundle.manifest, data)
            dest = into / BUNDLES / name
            old = _target(into / CURRENT)
            if old == dest.resolve() and dest.is_dir():
                shutil.rmtree(stage, ignore_errors=True)
                return InstallReport(name=name, path=dest, previous=_target(into / PREVIOUS), self_test=tested,
                                     seconds=time.perf_counter() - t0, already_current=True)
            if dest.exists() and not _whole(dest):  # damaged on disk: moved aside, never deleted in place
                os.rename(dest, dest.parent / f".{dest.name}.old")
            if dest.exists():
                # the same bundle, installed before and whole: it may be what `previous` points to, so it
                # is kept as it is (deleting it in place, a kill left `previous` on a half bundle)
                shutil.rmtree(stage, ignore_errors=True)
            else:
                fsync_tree(stage)
                publish_modes(stage)
                os.rename(stage, dest)
                fsync_dir(dest.parent)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        _point(into / CURRENT, dest)  # the switch: one rename
        if old is not None and old.is_dir():
            _point(into / PREVIOUS, old)
        fsync_dir(into)
        _prune(into)
        return InstallReport(name=name, path=dest, previous=old, self_test=tested,
                             seconds=time.perf_counter() - t0)


def _whole(bundle_dir: Path) -> bool:
    try:
        Bundle.open(bundle_dir, verify=True)
        return True
    except EdgeSearchError:
        return False


def _prune(into: Path) -> None:
    """Keep only the bundles `current` and `previous` point to."""
    keep = {t for t in (_target(into / CURRENT), _target(into / PREVIOUS)) if t is not None}
    for p in (into / BUNDLES).iterdir():
        if p.resolve() not in keep and not p.name.startswith("."):
            # renamed aside first, so a kill mid-delete never leaves a half bundle under its name
            aside = p.parent / f".{p.name}.old"
            with contextlib.suppress(OSError):
                os.rename(p, aside)
                shutil.rmtree(aside, ignore_errors=True)
    for p in (into / BUNDLES).glob(".*.old"):
        shutil.rmtree(p, ignore_errors=True)


@_os_errors_named
def rollback(into: str | Path, *, trusted_key: str | Path | None = None) -> tuple[Path, Path]:
    """Switch DIR/current back to DIR/previous (and previous to what was current)."""
    into = Path(into).absolute()
    if not into.is_dir():
        raise InstallError(f"{into}: no such install folder")
    with _locked(into):
        cur, prev = _target(into / CURRENT), _target(into / PREVIOUS)
        if cur is None:
            raise InstallError(f"{into}: nothing installed (no '{CURRENT}')")
        if prev is None or not prev.is_dir():
            raise InstallError(f"{into}: no previous bundle to roll back to")
        try:
            Bundle.open(prev, verify=True, trusted_key=trusted_key)
        except EdgeSearchError as e:
            raise InstallError(f"previous bundle is unusable, not rolling back: {e}") from None
        _point(into / CURRENT, prev)
        _point(into / PREVIOUS, cur)
        fsync_dir(into)
        return prev, cur
