"""`pack`: a verified bundle folder -> one tar file for shipping (gzip when the name ends in .gz or .tgz).

manifest.json is the first member and manifest.sig (when signed) the second, so
an installer checks the signature before it reads any other header.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from edge_search.core.bundle import Bundle
from edge_search.core.manifest import MANIFEST_NAME
from edge_search.core.signing import SIGNATURE_NAME
from edge_search.errors import InstallError
from edge_search.files import atomic_output, check_output, ensure_folder


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


