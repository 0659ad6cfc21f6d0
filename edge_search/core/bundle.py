"""Opening a bundle directory: manifest, checksums, and the paths inside it.

Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from edge_search.errors import BundleError
from edge_search.files import sha256_file
from edge_search.core.checked import already_checked, record_checked
from edge_search.core.manifest import MANIFEST_NAME, Manifest, manifest_from_bytes, read_manifest_bytes
from edge_search.core.thumbnails import FOLDER as THUMBS_FOLDER, named, verify_thumbnails


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Manifest
    manifest_sha256: str = ""  # of the manifest bytes read (names the bundle's checked record); "" for none

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True, trusted_key: str | Path | None = None) -> "Bundle":
        """Read and check a bundle. With a `trusted_key`, manifest.sig must be that
        key's signature of the manifest bytes that are then parsed (one read, no gap)."""
        root = Path(path)
        data = read_manifest_bytes(root)
        if trusted_key is not None:
            from edge_search.core.signing import verify_signature

            verify_signature(root, data, trusted_key)
        manifest = manifest_from_bytes(data, str(root / MANIFEST_NAME))
        bundle = cls(root=root, manifest=manifest, manifest_sha256=hashlib.sha256(data).hexdigest())
        needed = [manifest.model.file, *manifest.index.files(), manifest.products_file]
        if manifest.products_keys is not None:
            needed.append(manifest.products_keys)
        if manifest.calibration is not None and manifest.calibration.negatives:
            needed.append(manifest.calibration.negatives)
        if manifest.text is not None:
            needed += [manifest.text.file, manifest.text.tokenizer] + ([manifest.text.index] if manifest.text.index else [])
        for name in needed:
            if name not in manifest.files:
                raise BundleError(f"{root / 'manifest.json'}: '{name}' has no checksum entry")
        for name in manifest.files:
            bundle.path(name)  # rejects names that escape the bundle
        if verify:
            bundle.verify()
        return bundle

    def path(self, name: str) -> Path:
        """The path of a file named by the manifest; refuses names outside the bundle."""
        p = Path(name)
        if p.is_absolute() or ".." in p.parts or not p.parts:
            raise BundleError(f"{self.root / 'manifest.json'}: file name '{name}' points outside the bundle")
        return self.root / p

    def removed_keys(self) -> np.ndarray:
        """The index keys a segmented index no longer returns (sorted); empty for one segment."""
        from edge_search.core.index import load_removed

        d, count = self.manifest.index.delta, self.manifest.index.count
        if d is None or d.removed_file is None:
            return np.zeros(0, dtype=np.int64)
        return load_removed(self.path(d.removed_file), d.removed, count)

    def product_table(self):
        """The product table, its keys checked against the index's key space and removed keys (read once
        per Bundle: verify, pack, install and a catalog build on it each ask)."""
        return self._product_table

    @cached_property
    def _product_table(self):
        from edge_search.core.products import ProductTable

        m = self.manifest
        keys = None if m.products_keys is None else self.path(m.products_keys)
        table = ProductTable.load(self.path(m.products_file), m.index.key_space, self.removed_keys(), keys_path=keys)
        if len(table) != m.product_count:
            raise BundleError(f"{self.path(m.products_file)}: {len(table)} products, manifest says {m.product_count}")
        return table

    def thumbnail_names(self) -> list[str]:
        """The thumbnail files the product table names, sorted, when the manifest counts them (a
        `thumbnails` section) rather than listing each in `files`; [] otherwise."""
        return [f"{THUMBS_FOLDER}/{bytes(d).hex()}.jpg" for d in self._thumbnail_digests]

    @cached_property
    def _thumbnail_digests(self) -> np.ndarray:
        # read once per Bundle: verify, pack and install each ask, and the table grows with the catalog; kept
        # as 32 bytes each, not as names (~130 bytes each: a nightly build holds its base bundle throughout)
        if self.manifest.thumbnails is None:
            return np.zeros((0, 32), dtype=np.uint8)
        from edge_search.core.products import each_product

        table = self.product_table()
        names = named((p.thumbnail for p in each_product(table.products)), str(self.path(self.manifest.products_file)))
        # (a checked name is lowercase hex, so the names come back as they were, in the same order)
        raw = b"".join(bytes.fromhex(n[len(THUMBS_FOLDER) + 1:-len(".jpg")]) for n in names)
        return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 32)

    def model_sha256(self) -> str | None:
        """The image model file's sha256 as the manifest lists it (names its device-threads record)."""
        entry = self.manifest.files.get(self.manifest.model.file)
        return entry.get("sha256") if isinstance(entry, dict) else None

    def file_names(self) -> list[str]:
        """Every file of the bundle but the manifest and its signature: `files`, then the thumbnails."""
        return [*self.manifest.files, *self.thumbnail_names()]

    def verify(self, *, reuse_check: bool = False) -> list[str]:
        """Check every file's size and sha256 (the product table's before the thumbnails it names);
        returns the names checked. With `reuse_check`, files unchanged since a full check passed on
        them are not hashed again (core/checked.py: what a kiosk restart does)."""
        names = list(self.manifest.files)
        if reuse_check and self.manifest_sha256 and already_checked(self.root, self.manifest_sha256, names):
            return names
        started = time.time_ns()
        checked = []
        for name, entry in self.manifest.files.items():
            p = self.path(name)
            if not p.is_file():
                raise BundleError(f"{p}: missing from the bundle")
            size = p.stat().st_size
            if size != entry["bytes"]:
                raise BundleError(f"{p}: size {size} bytes, manifest says {entry['bytes']} (corrupt or truncated)")
            digest = sha256_file(p)
            if digest != entry["sha256"]:
                raise BundleError(f"{p}: checksum mismatch (sha256 {digest[:12]}…, manifest {entry['sha256'][:12]}…)")
            checked.append(name)
        if self.manifest.products_keys is not None:  # what an open without checks takes on trust
            self.product_table().check_keys(self.path(self.manifest.products_file),
                                            self.path(self.manifest.products_keys), self.removed_keys())
        if self.manifest.thumbnails is not None:
            names = self.thumbnail_names()
            verify_thumbnails(self.root, self.manifest.thumbnails, names, str(self.root / MANIFEST_NAME))
            checked += names
        if self.manifest_sha256:
            record_checked(self.root, self.manifest_sha256, list(self.manifest.files), started)
        return checked
