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
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from .bundle import Bundle
from .errors import BundleError, EdgeSearchError, ImageError, InstallError
from .files import fsync_dir, fsync_tree, publish_modes
from .manifest import MANIFEST_NAME, Manifest, manifest_from_bytes
from .signing import SIGNATURE_NAME

CURRENT, PREVIOUS, BUNDLES = "current", "previous", "bundles"
MAX_MANIFEST_BYTES = 16 << 20
MAX_SIGNATURE_BYTES = 4096
MAX_MEMBERS = 200_000
SELF_TEST_TOP = 3  # the self-test product must be among this many results


# --- pack ---------------------------------------------------------------------
def pack(bundle_dir: str | Path, out_file: str | Path, *, trusted_key: str | Path | None = None) -> Path:
    """Write a verified bundle as one tar file (gzip for .gz/.tgz), written to a temp file and renamed."""
    bundle = Bundle.open(bundle_dir, verify=True, trusted_key=trusted_key)
    out = Path(out_file).absolute()
    if out.is_dir():
        raise InstallError(f"{out}: is a folder; --out names the file to write (e.g. bundle.tar.gz)")
    names = [MANIFEST_NAME] + ([SIGNATURE_NAME] if (bundle.root / SIGNATURE_NAME).is_file() else [])
    names += sorted(bundle.manifest.files)
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise InstallError(f"{out}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            with tarfile.open(fileobj=f, mode=mode, format=tarfile.PAX_FORMAT) as tar:
                for name in names:  # the manifest first: an installer reads it before anything else
                    info = tar.gettarinfo(str(bundle.root / name), arcname=name)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o644
                    with open(bundle.root / name, "rb") as src:
                        tar.addfile(info, src)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
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


def _unpack(archive: Path, stage: Path) -> None:
    where = str(archive)
    try:
        tar = tarfile.open(archive, mode="r:*")
    except FileNotFoundError:
        raise InstallError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise InstallError(f"{where}: is a folder") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as e:
        raise InstallError(f"{where}: not a packed bundle (not a readable tar archive: {_short(e)})") from None
    with tar:
        try:
            members = _read_headers(tar, where)
            manifest_member = members.get(MANIFEST_NAME)
            if manifest_member is None:
                raise InstallError(f"{where}: no {MANIFEST_NAME} in the archive (not a packed bundle)")
            if not manifest_member.isreg():
                raise InstallError(f"{where}: member '{MANIFEST_NAME}' is {_kind(manifest_member)}")
            if manifest_member.size > MAX_MANIFEST_BYTES:
                raise InstallError(f"{where}: {MANIFEST_NAME} is {manifest_member.size} bytes, over the "
                                   f"{MAX_MANIFEST_BYTES} byte limit")
            data = tar.extractfile(manifest_member).read()
            manifest = manifest_from_bytes(data, f"{where}:{MANIFEST_NAME}")
            limits = {MANIFEST_NAME: MAX_MANIFEST_BYTES, SIGNATURE_NAME: MAX_SIGNATURE_BYTES}
            for name, entry in manifest.files.items():
                limits[_member_name(name, f"{where}:{MANIFEST_NAME} files")] = entry["bytes"]
            # every header is checked before a single byte is written
            for name, m in members.items():
                if m.isdir():
                    continue
                if not m.isreg():
                    raise InstallError(f"{where}: member '{name}' is {_kind(m)}; bundles hold regular files only")
                if name not in limits:
                    raise InstallError(f"{where}: member '{name}' is not listed in the manifest")
                if m.size > limits[name]:
                    raise InstallError(f"{where}: member '{name}' is {m.size} bytes, the manifest declares "
                                       f"{limits[name]}")
            for name, m in members.items():
                if m.isdir():
                    continue
                dst = stage / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is None:
                    raise InstallError(f"{where}: member '{name}' cannot be read")
                _copy_limited(src, dst, limits[name], where, name)
        except InstallError:
            raise
        except BundleError as e:
            raise InstallError(str(e)) from None
        except (tarfile.TarError, EOFError, zlib.error, ValueError, UnicodeError) as e:
            raise InstallError(f"{where}: malformed archive ({_short(e)})") from None
        except OSError as e:
            raise InstallError(f"{where}: cannot unpack ({_short(e)})") from None


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


def _copy_bundle_dir(src: Path, stage: Path) -> None:
    """Copy a bundle folder's manifest, signature and listed files (nothing else, no links)."""
    data = (src / MANIFEST_NAME).read_bytes() if (src / MANIFEST_NAME).is_file() else None
    if data is None:
        raise InstallError(f"{src}: no {MANIFEST_NAME} (not a bundle folder)")
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
    with open(into / ".lock", "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstallError(f"{into}: another install or rollback is running") from None
        yield


def _target(link: Path) -> Path | None:
    if not link.is_symlink():
        return None
    return (link.parent / os.readlink(link)).resolve()


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


def self_test(bundle_dir: Path, *, threads: int = 1):
    """Load the bundle's model and index; the first product's thumbnail must find
    that product among the top results. Returns (searcher, description)."""
    from .images import load_image
    from .search import Searcher

    searcher = Searcher.from_bundle(bundle_dir, verify=False, threads=threads)
    if not searcher.products.products:
        raise InstallError(f"{bundle_dir}: self-test: the bundle has no products")
    product = searcher.products.products[0]
    if not product.thumbnail:
        raise InstallError(f"{bundle_dir}: self-test: product '{product.id}' has no thumbnail to query with")
    try:
        image = load_image(Bundle(root=Path(bundle_dir), manifest=searcher.manifest).path(product.thumbnail))
    except ImageError as e:
        raise InstallError(f"self-test: {e}") from None
    result = searcher.search_image(image, k=SELF_TEST_TOP, min_score=-2.0)
    ids = [h.id for h in result.hits]
    if product.id not in ids:
        raise InstallError(f"{bundle_dir}: self-test failed: the thumbnail of '{product.id}' found {ids}, "
                           f"not itself in the top {SELF_TEST_TOP}")
    rank = ids.index(product.id) + 1
    if not np.isfinite(result.best_score):
        raise InstallError(f"{bundle_dir}: self-test failed: no finite score")
    return searcher, f"'{product.id}' found at rank {rank} (score {result.hits[rank - 1].score:.3f})"


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
        stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=into))
        try:
            if src.is_dir():
                _copy_bundle_dir(src, stage)
            else:
                _unpack(src, stage)
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
