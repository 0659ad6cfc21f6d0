"""Safe unpacking: a packed bundle (or a bundle folder) -> a staging folder, verified.

Refuses anything unsafe before it is written: absolute paths, `..`, links,
devices, names the manifest does not list, members larger than the manifest
declares, more members or bigger headers than a bundle can have. With a trusted
key the signature is checked from the archive's first two members before any
other header is read. Bounded in memory and disk, fail-closed.
"""

from __future__ import annotations

import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from edge_search.core.manifest import MANIFEST_NAME, Manifest, manifest_from_bytes, read_manifest_bytes
from edge_search.core.bundle import Bundle
from edge_search.core.signing import SIGNATURE_NAME
from edge_search.core.thumbnails import is_thumbnail_name
from edge_search.shipping.line_delta import PREFIX as LINE_DELTA, SUFFIXES as LINE_SUFFIXES
from edge_search.errors import BundleError, InstallError
from edge_search.files import MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, open_regular

MAX_MEMBERS = 200_000
MAX_EXTENDED_HEADER_BYTES = 64 << 10  # a PAX/GNU long-name header carries a path and a few numbers
MAX_ARCHIVE_BYTES = 64 << 30
# a delta (`pack --base`) names the bundle it applies to here: not signed, and not needed to be, since it only
# decides whether a device may try (what the install ends with is verified against the signed manifest)
DELTA_BASE, MAX_DELTA_BASE_BYTES = "delta-base.json", 4096


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


class _Limits:
    """The largest size each member may have: the manifest's own declaration. Thumbnails (named by
    their sha256, counted rather than listed) may be any `thumbs/<sha256>.jpg` up to the declared
    largest size, and no more of them than the declared count."""

    def __init__(self, manifest: Manifest, where: str):
        self.where, self.thumbs, self.thumbs_seen = where, manifest.thumbnails, 0
        self.sizes = {MANIFEST_NAME: MAX_MANIFEST_BYTES, SIGNATURE_NAME: MAX_SIGNATURE_BYTES,
                      DELTA_BASE: MAX_DELTA_BASE_BYTES}
        for name, entry in manifest.files.items():
            self.sizes[_member_name(name, f"{where}:{MANIFEST_NAME} files")] = entry["bytes"]
        # the files a line delta (`delta/<name>`) may build: each patch is bounded by its file's size
        self.patchable = {n for n in self.sizes if n.endswith(LINE_SUFFIXES)}

    def total(self) -> int:
        # a patch and the file it builds lie side by side until the install removes the patches
        return (sum(self.sizes.values()) + sum(self.sizes[n] for n in self.patchable)
                + (self.thumbs.bytes if self.thumbs is not None else 0))

    def check(self, m: tarfile.TarInfo, name: str) -> int:
        """The member's size limit, or InstallError when it may not be in the bundle at all."""
        where = self.where
        if not m.isreg():
            raise InstallError(f"{where}: member '{name}' is {_kind(m)}; bundles hold regular files only")
        if name in self.sizes:
            limit = self.sizes[name]
        elif name.startswith(LINE_DELTA) and name[len(LINE_DELTA):] in self.patchable:
            limit = self.sizes[name[len(LINE_DELTA):]]  # a line delta is never bigger than the file it builds
        elif self.thumbs is not None and is_thumbnail_name(name):
            self.thumbs_seen += 1
            if self.thumbs_seen > self.thumbs.count:
                raise InstallError(f"{where}: more thumbnails than the {self.thumbs.count} the manifest counts")
            limit = self.thumbs.max_bytes
        else:
            raise InstallError(f"{where}: member '{name}' is not listed in the manifest")
        if m.size > limit:
            raise InstallError(f"{where}: member '{name}' is {m.size} bytes, the manifest declares {limit}")
        return limit


def _check_space(stage: Path, limits: _Limits, where: str) -> None:
    """Refuse an archive whose declared files cannot fit, before writing them."""
    need = limits.total()
    free = shutil.disk_usage(stage).free
    if need > free:
        raise InstallError(f"{where}: the bundle declares {need} bytes, {stage.parent} has {free} free")


def _extract(tar: tarfile.TarFile, m: tarfile.TarInfo, name: str, stage: Path, limit: int, where: str) -> None:
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


def unpack_archive(archive: Path, stage: Path, trusted_key: Path | None = None) -> None:
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
    from edge_search.core.signing import verify_signature_bytes

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
    limits = _Limits(manifest_from_bytes(data, f"{where}:{MANIFEST_NAME}"), where)
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
        if not m.isdir():
            _extract(tar, m, name, stage, limits.check(m, name), where)


def _unpack_unsigned(tar: tarfile.TarFile, stage: Path, where: str) -> None:
    """No key configured: every header is checked against the manifest before a byte is written."""
    members = _read_headers(tar, where)
    data = _read_small(tar, members.get(MANIFEST_NAME), MANIFEST_NAME, MAX_MANIFEST_BYTES, where)
    limits = _Limits(manifest_from_bytes(data, f"{where}:{MANIFEST_NAME}"), where)
    allowed = {name: limits.check(m, name) for name, m in members.items() if not m.isdir()}
    _check_space(stage, limits, where)
    for name, m in members.items():
        if name in allowed:
            _extract(tar, m, name, stage, allowed[name], where)


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


def copy_bundle_dir(src: Path, stage: Path, trusted_key: Path | None = None) -> None:
    """Copy a bundle folder's manifest, signature and listed files (nothing else, no links);
    with a trusted key, the signature is checked before anything is copied."""
    data = read_manifest_bytes(src)
    if trusted_key is not None:
        from edge_search.core.signing import verify_signature

        verify_signature(src, data, trusted_key)
    manifest = manifest_from_bytes(data, str(src / MANIFEST_NAME))
    names = [SIGNATURE_NAME] if (src / SIGNATURE_NAME).is_file() else []
    # the thumbnails' names come from the product table, checked (with every byte) by the install's verify
    thumbs = Bundle(root=src, manifest=manifest).thumbnail_names()
    for name in [*names, *manifest.files, *thumbs]:
        rel = _member_name(name, str(src / MANIFEST_NAME))
        p = src / rel
        if p.is_symlink() or not p.is_file():
            raise InstallError(f"{p}: missing or not a regular file")
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, stage / rel)
    (stage / MANIFEST_NAME).write_bytes(data)


