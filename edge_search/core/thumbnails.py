"""Thumbnails in a bundle: one JPEG per product image shown, named by the
sha256 of its own bytes (`thumbs/<sha256>.jpg`), so the name is the checksum.

The manifest does not list them one by one (at 100 000 products that list
alone outgrew the manifest's 16 MiB cap, and every delta re-shipped it): its
`thumbnails` section gives their count, total and largest size, and the product
table (whose checksum the manifest holds) names each product's file. Equal
names are equal bytes, in any two bundles: a delta ships only the names its
base lacks. Bundles made before this listed thumbnails in `files`; they have no
`thumbnails` section and are read as before.

Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import os
import stat

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from edge_search.errors import BundleError
from edge_search.files import sha256_file

FOLDER = "thumbs"
_NAME = re.compile(r"thumbs/[0-9a-f]{64}\.jpg")


def thumbnail_name(data: bytes) -> str:
    """The bundle path a thumbnail with these bytes has."""
    return f"{FOLDER}/{hashlib.sha256(data).hexdigest()}.jpg"


def is_thumbnail_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


@dataclass(frozen=True)
class ThumbnailsInfo:
    """The manifest's `thumbnails` section: what the product table's thumbnail names add up to."""
    count: int  # distinct files
    bytes: int  # all of them together
    max_bytes: int  # the largest one: the bound an installer holds each member to

    @classmethod
    def of(cls, sizes: Iterable[int]) -> "ThumbnailsInfo":
        sizes = list(sizes)
        return cls(count=len(sizes), bytes=sum(sizes), max_bytes=max(sizes, default=0))

    def to_dict(self) -> dict[str, Any]:
        return {"folder": FOLDER, "naming": "sha256", "count": self.count, "bytes": self.bytes,
                "max_bytes": self.max_bytes}


def named(thumbnails: Iterable[str | None], where: str) -> list[str]:
    """The distinct thumbnail files a product table names, sorted; a name that is not
    `thumbs/<sha256>.jpg` is refused (it could point anywhere)."""
    names = set()
    for n in thumbnails:
        if n is None:
            continue
        if not isinstance(n, str) or not is_thumbnail_name(n):
            raise BundleError(f"{where}: thumbnail {str(n)[:80]!r} is not a {FOLDER}/<sha256>.jpg name")
        names.add(n)
    return sorted(names)


def verify_thumbnails(root: Path, info: ThumbnailsInfo, names: list[str], where: str) -> None:
    """Every named file is there, within the declared sizes, and has the bytes its name says."""
    if len(names) != info.count:
        raise BundleError(f"{where}: the product table names {len(names)} thumbnails, the manifest {info.count}")
    total = 0
    folder = str(root)
    for n in names:  # one lstat and one read each: a 100 000-product catalog has as many thumbnails
        p = os.path.join(folder, n)
        try:
            st = os.lstat(p)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{p}: missing from the bundle")
        size = st.st_size
        if size > info.max_bytes:
            raise BundleError(f"{p}: {size} bytes, over the {info.max_bytes} the manifest allows a thumbnail")
        total += size
        digest = sha256_file(p)
        if f"{FOLDER}/{digest}.jpg" != n:
            raise BundleError(f"{p}: checksum mismatch (sha256 {digest[:12]}…, its name says {n[7:19]}…)")
    if total != info.bytes:
        raise BundleError(f"{where}: thumbnails hold {total} bytes, the manifest says {info.bytes}")
