"""`pack`: a verified bundle folder -> one tar file for shipping (gzip when the name ends in .gz or .tgz).

manifest.json is the first member and manifest.sig (when signed) the second, so
an installer checks the signature before it reads any other header. With a
base, a delta: only the files that differ from the base bundle (a changed
product table as a line delta, `delta/products.jsonl`, when that is smaller),
the thumbnails the base lacks, and a small `delta-base.json` naming it;
`install` takes the rest from the device's `current`, which must be that base
(by manifest sha256).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from edge_search.core.bundle import Bundle
from edge_search.core.manifest import MANIFEST_NAME
from edge_search.core.signing import SIGNATURE_NAME
from edge_search.errors import InstallError
from edge_search.files import atomic_output, check_output, ensure_folder, sha256_file
from edge_search.shipping.line_delta import PREFIX as LINE_DELTA, SUFFIXES as LINE_SUFFIXES, make_patch
from edge_search.shipping.unpack import DELTA_BASE


def delta_names(bundle: Bundle, base: Bundle) -> list[str]:
    """The files a device holding `base` lacks to arrive at `bundle`: new names, and names whose bytes
    differ; a thumbnail's name is its checksum, so only the names the base lacks."""
    old = base.manifest.files
    changed = [n for n, entry in bundle.manifest.files.items() if n not in old or old[n]["sha256"] != entry["sha256"]]
    have = set(base.thumbnail_names())
    return sorted(changed + [n for n in bundle.thumbnail_names() if n not in have])


def line_deltas(bundle: Bundle, base: Bundle, names: list[str]) -> dict[str, bytes]:
    """For the changed files made of lines that the base also has: a line delta, where it is under
    half the file (a repricing ships the changed product lines, not the table)."""
    out = {}
    for name in names:
        if name.endswith(LINE_SUFFIXES) and name in base.manifest.files and name in bundle.manifest.files:
            new = (bundle.root / name).read_bytes()
            patch = make_patch((base.root / name).read_bytes(), new)
            if len(patch) < len(new) // 2:
                out[name] = patch
    return out


def pack(bundle_dir: str | Path, out_file: str | Path, *, trusted_key: str | Path | None = None,
         base: str | Path | None = None) -> Path:
    """Write a verified bundle as one tar file (gzip for .gz/.tgz), written to a temp file and renamed.

    manifest.json is the first member and manifest.sig (when the bundle is
    signed) the second: an installer with a trusted key checks the signature
    from those two before it reads another header."""
    bundle = Bundle.open(bundle_dir, verify=True, trusted_key=trusted_key)
    out = check_output(out_file, flag="--out", error=InstallError)
    names = [MANIFEST_NAME] + ([SIGNATURE_NAME] if (bundle.root / SIGNATURE_NAME).is_file() else [])
    note = None
    patches: dict[str, bytes] = {}
    if base is not None:
        base_bundle = Bundle.open(base, verify=True)
        names += delta_names(bundle, base_bundle)
        patches = line_deltas(bundle, base_bundle, names)
        note = json.dumps({"name": base_bundle.manifest.name,
                           "manifest_sha256": sha256_file(base_bundle.root / MANIFEST_NAME)}).encode()
    else:
        names += sorted(bundle.file_names())
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    ensure_folder(out.parent, "--out", InstallError)
    with atomic_output(out, error=InstallError) as f:
        with tarfile.open(fileobj=f, mode=mode, format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                if note is not None and name not in (MANIFEST_NAME, SIGNATURE_NAME):
                    info = tarfile.TarInfo(DELTA_BASE)  # after the manifest and its signature, before the files
                    info.size, info.mode = len(note), 0o644
                    tar.addfile(info, io.BytesIO(note))
                    note = None
                if name in patches:
                    info = tarfile.TarInfo(LINE_DELTA + name)
                    info.size, info.mode = len(patches[name]), 0o644
                    tar.addfile(info, io.BytesIO(patches[name]))
                    continue
                info = tar.gettarinfo(str(bundle.root / name), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(bundle.root / name, "rb") as src:
                    tar.addfile(info, src)
            if note is not None:  # nothing changed but the manifest
                info = tarfile.TarInfo(DELTA_BASE)
                info.size, info.mode = len(note), 0o644
                tar.addfile(info, io.BytesIO(note))
    return out


