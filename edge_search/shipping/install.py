"""Installing bundles on a device: install, self-test, roll back.

`install` unpacks a packed file (or copies a bundle folder) into
`DIR/.staging-*` through unpack.py, verifies checksums and, when a key is
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
import json
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edge_search.core.bundle import Bundle
from edge_search.core.manifest import MANIFEST_NAME, Manifest, manifest_from_bytes
from edge_search.errors import EdgeSearchError, ImageError, InstallError
from edge_search.files import MAX_TABLE_BYTES, fsync_dir, fsync_tree, publish_modes, read_regular
from edge_search.shipping.line_delta import PREFIX as LINE_DELTA, apply_patch
from edge_search.shipping.unpack import DELTA_BASE, copy_bundle_dir, unpack_archive

CURRENT, PREVIOUS, BUNDLES = "current", "previous", "bundles"
SELF_TEST_TOP = 3  # each self-test product must be among this many results
SELF_TEST_PRODUCTS = 5  # distinct products queried: more than SELF_TEST_TOP, so a constant answer fails
SELF_TEST_MARGIN = 0.25  # own score at most this share of (best - median) below the best


@dataclass(frozen=True)
class InstallReport:
    name: str
    path: Path  # DIR/bundles/<name>
    previous: Path | None
    self_test: str  # what the self-test queried and found
    seconds: float
    already_current: bool = False
    from_base: int = 0  # a delta: files taken from the base bundle `current` held
    # the image model's batch-1 p50 ms by thread count on this device, and the count recorded
    # (core/threads.py; None: the cache folder could not be written, the runtime uses its default)
    thread_p50: dict[int, float] | None = None
    threads: int | None = None


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
    from edge_search.core.search import RANK_ALL, Searcher

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
        result = searcher.search_image(image, k=len(products), min_score=RANK_ALL)
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


def _time_threads(bundle: Bundle) -> tuple[dict[int, float], int | None]:
    """Time the image model at each thread count this device has (up to threads.MAX_THREADS) and
    record the fastest for the runtime (core/threads.py)."""
    from edge_search.core.threads import record_threads, time_thread_counts

    m, sha = bundle.manifest, bundle.model_sha256()
    p50 = time_thread_counts(bundle.path(m.model.file), input_name=m.model.input, output_name=m.model.output,
                             size=tuple(m.preprocess.size))
    return p50, record_threads(sha, p50) if sha else None


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
            from_base = 0
            if src.is_dir():
                copy_bundle_dir(src, stage, Path(trusted_key) if trusted_key is not None else None)
            else:
                unpack_archive(src, stage, Path(trusted_key) if trusted_key is not None else None)
            from_base = _fill_from_base(stage, into, src)  # 0 unless a delta
            try:
                bundle = Bundle.open(stage, verify=True, trusted_key=trusted_key)
                _, tested = self_test(stage)
            except InstallError:
                raise
            except EdgeSearchError as e:  # name what the user gave, not our staging folder
                raise InstallError(f"{src}: refused: " + str(e).replace(f"{stage}/", "").replace(str(stage), "bundle")) from None
            thread_p50, threads = _time_threads(bundle)
            data = (stage / MANIFEST_NAME).read_bytes()
            name = _safe_name(bundle.manifest, data)
            dest = into / BUNDLES / name
            old = _target(into / CURRENT)
            if old == dest.resolve() and dest.is_dir():
                shutil.rmtree(stage, ignore_errors=True)
                return InstallReport(name=name, path=dest, previous=_target(into / PREVIOUS), self_test=tested,
                                     seconds=time.perf_counter() - t0, already_current=True,
                                     thread_p50=thread_p50, threads=threads)
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
                             seconds=time.perf_counter() - t0, from_base=from_base,
                             thread_p50=thread_p50, threads=threads)


def _fill_from_base(stage: Path, into: Path, src: Path) -> int:
    """A delta (`pack --base`) carries only what changed and names its base in delta-base.json: the rest is
    copied from DIR/current, which must be that very bundle (by manifest sha256). Returns the files taken
    from it; every byte is then verified against the new (signed) manifest like any install."""
    note_path = stage / DELTA_BASE
    note = None
    if note_path.is_file():
        try:
            note = json.loads(note_path.read_bytes())
            base_name, base_sha = str(note["name"]), str(note["manifest_sha256"])
        except (ValueError, KeyError, TypeError):
            raise InstallError(f"{src}: refused: {DELTA_BASE} is malformed") from None
        note_path.unlink()
    manifest = manifest_from_bytes((stage / MANIFEST_NAME).read_bytes(), str(src))
    missing = [n for n in manifest.files if not (stage / n).is_file()]
    patches = stage / LINE_DELTA.rstrip("/")
    if note is None:
        if patches.exists():
            raise InstallError(f"{src}: refused: line deltas ({LINE_DELTA}...) in an archive that names no base")
        if missing:
            raise InstallError(f"{src}: refused: {len(missing)} file(s) missing from the archive, e.g. {missing[0]}")
        return 0
    current = _target(into / CURRENT)
    have = current is not None and (current / MANIFEST_NAME).is_file() and \
        hashlib.sha256((current / MANIFEST_NAME).read_bytes()).hexdigest() == base_sha
    if not have:
        now = current.name if current is not None else "nothing"
        raise InstallError(f"{src}: a delta on {base_name} ({base_sha[:12]}…); {into / CURRENT} is {now}: "
                           f"install {base_name} first (or the full bundle)")
    for name in missing:
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        patch = stage / (LINE_DELTA + name)
        if patch.is_file():  # the base's file, with the lines that changed
            limit = manifest.files[name]["bytes"]
            data = apply_patch(read_regular(current / name, limit=MAX_TABLE_BYTES, what="base file", error=InstallError),
                               patch.read_bytes(), limit, f"{src}:{LINE_DELTA}{name}")
            (stage / name).write_bytes(data)
        else:
            shutil.copyfile(current / name, stage / name)
    shutil.rmtree(patches, ignore_errors=True)  # used, or beside a file that came whole: not part of the bundle
    # thumbnails are named by their bytes and by the product table, which is complete only now; one the
    # base lacks too is left missing, for the verify below to name
    thumbs = [n for n in Bundle(root=stage, manifest=manifest).thumbnail_names()
              if not (stage / n).is_file() and (current / n).is_file()]
    for name in thumbs:
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(current / name, stage / name)
    return len(missing) + len(thumbs)


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
