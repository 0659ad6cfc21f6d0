"""pack / install / rollback: the atomic switch of DIR/current, the checks an
install makes before switching, and archives that must be refused."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile

import pytest

from conftest import one_line_error, run_cli

@pytest.fixture(scope="module")
def packed(tiny_bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("ship")
    run_cli("pack", tiny_bundle, "--out", d / "b.tar.gz")
    run_cli("pack", tiny_bundle, "--out", d / "b.tar")
    return d


def rename_bundle(src, dst, name):
    """A copy of a bundle under another name (so another manifest and another install folder)."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["name"] = name
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


def state(into):
    return {n: os.readlink(into / n) for n in ("current", "previous") if (into / n).is_symlink()}


def test_install_switches_current_keeps_previous_and_rolls_back(tiny_bundle, packed, tmp_path, sample_catalog):
    into = tmp_path / "kiosk"
    img = sample_catalog.parent / "images" / "honey.jpg"
    out = run_cli("install", packed / "b.tar.gz", "--into", into).stdout
    assert "self-test" in out and "products found themselves" in out
    first = state(into)
    assert list(first) == ["current"] and first["current"].startswith("bundles/")
    assert '"honey"' in run_cli("search", "--bundle", into / "current", img, "--json").stdout
    other = rename_bundle(tiny_bundle, tmp_path / "other", "other")
    run_cli("install", other, "--into", into)  # a bundle folder installs too
    second = state(into)
    assert second["previous"] == first["current"] and "other-" in second["current"]
    assert json.loads((into / "current" / "manifest.json").read_text())["name"] == "other"
    run_cli("rollback", "--into", into)
    assert state(into) == {"current": second["previous"], "previous": second["current"]}
    run_cli("rollback", "--into", into)
    assert state(into) == second
    assert "already active" in run_cli("install", other, "--into", into).stdout
    assert not list(into.glob(".staging-*"))
    # only current and previous are kept
    run_cli("install", packed / "b.tar", "--into", into)
    assert sorted(p.name for p in (into / "bundles").iterdir()) == sorted(
        os.path.basename(v) for v in state(into).values())


def test_rollback_without_previous_is_one_line(packed, tmp_path):
    one_line_error(run_cli("rollback", "--into", tmp_path / "none", check=False), "no such install folder")
    run_cli("install", packed / "b.tar", "--into", tmp_path / "k")
    one_line_error(run_cli("rollback", "--into", tmp_path / "k", check=False), "no previous bundle")


def test_install_with_a_trusted_key_refuses_unsigned_and_keeps_current(tiny_bundle, packed, tmp_path):
    keys = tmp_path / "keys"
    run_cli("keygen", "--out", keys)
    into = tmp_path / "k"
    run_cli("install", packed / "b.tar", "--into", into)
    before = state(into)
    one_line_error(run_cli("install", packed / "b.tar.gz", "--into", into, "--trusted-key",
                           keys / "edge-search.pub.pem", check=False), "b.tar.gz", "not signed")
    signed = rename_bundle(tiny_bundle, tmp_path / "signed", "signed")
    run_cli("sign", signed, "--key", keys / "edge-search.key.pem")
    run_cli("pack", signed, "--out", tmp_path / "signed.tar")
    assert state(into) == before
    run_cli("install", tmp_path / "signed.tar", "--into", into, "--trusted-key", keys / "edge-search.pub.pem")
    assert "signed-" in state(into)["current"]
    assert (into / "current" / "manifest.sig").is_file()


def test_self_test_failure_keeps_the_old_bundle(tiny_bundle, packed, tmp_path):
    """A bundle whose checksums are right but whose index cannot find its own product: the
    first product's vectors are replaced by the opposite of its thumbnail's embedding, so that
    thumbnail scores it -1, below every other product (deterministic whatever the model)."""
    import numpy as np

    from edge_search.core.images import load_image
    from edge_search.core.index import VectorIndex
    from edge_search.core.search import Searcher

    bad = rename_bundle(tiny_bundle, tmp_path / "bad", "bad")
    s = Searcher.from_bundle(bad)
    first = s.products.products[0]
    q = s.embed_images([load_image(bad / first.thumbnail)])[0]
    info = s.manifest.index
    vecs = np.asarray(s.index.index.get(np.arange(info.count, dtype=np.uint64)), np.float32)
    vecs[list(first.keys)] = -q / np.linalg.norm(q)
    rescore = bad / info.rescore_file if info.rescore_file else None
    VectorIndex.build(vecs, dtype=info.dtype, exact=info.exact, rescore=rescore is not None).save(
        bad / info.file, rescore)
    m = json.loads((bad / "manifest.json").read_text())
    for name in [info.file] + ([info.rescore_file] if rescore else []):
        m["files"][name] = {"sha256": hashlib.sha256((bad / name).read_bytes()).hexdigest(),
                            "bytes": (bad / name).stat().st_size}
    (bad / "manifest.json").write_text(json.dumps(m, indent=2))
    into = tmp_path / "k"
    run_cli("install", packed / "b.tar", "--into", into)
    before = state(into)
    proc = run_cli("install", bad, "--into", into, check=False)
    one_line_error(proc, "self-test failed")
    assert f"the thumbnail of '{first.id}'" in proc.stderr
    assert state(into) == before and not list(into.glob(".staging-*"))


def _tar(path, members, gz=False):
    """members: (TarInfo-field dict, bytes or None)."""
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for fields, data in members:
            info = tarfile.TarInfo(fields["name"])
            for k, v in fields.items():
                if k != "name":
                    setattr(info, k, v)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _bundle_members(bundle):
    """manifest.json, the files it lists, then the thumbnails the product table names."""
    out = [({"name": "manifest.json"}, (bundle / "manifest.json").read_bytes())]
    for name in json.loads((bundle / "manifest.json").read_text())["files"]:
        out.append(({"name": name}, (bundle / name).read_bytes()))
    for name in _thumbnails(bundle):
        out.append(({"name": name}, (bundle / name).read_bytes()))
    return out


def _thumbnails(bundle):
    rows = [json.loads(line) for line in (bundle / "products.jsonl").read_text().splitlines()]
    return sorted({r["thumbnail"] for r in rows})


@pytest.mark.parametrize("case, fragment", [
    ("absolute", "absolute path"),
    ("dotdot", "leaves the bundle"),
    ("symlink", "symbolic link"),
    ("hardlink", "hard link"),
    ("device", "device file"),
    ("fifo", "FIFO"),
    ("oversize", "the manifest declares"),
    ("unlisted", "not listed in the manifest"),
    ("thumb-not-sha", "not listed in the manifest"),
    ("thumb-extra", "more thumbnails than the 12 the manifest counts"),
    ("thumb-oversize", "the manifest declares"),
    ("thumb-bytes", "checksum mismatch"),
    ("duplicate", "appears twice"),
    ("no-manifest", "no manifest.json"),
    ("garbage", "not a packed bundle"),
    ("truncated", "b.tar"),
    ("empty", "not a packed bundle"),
])
def test_unsafe_or_malformed_archives_are_refused_before_anything_is_written(tiny_bundle, packed, tmp_path,
                                                                             case, fragment):
    into = tmp_path / "k"
    run_cli("install", packed / "b.tar", "--into", into)
    before = state(into)
    good = _bundle_members(tiny_bundle)
    evil = tmp_path / "b.tar"
    outside = tmp_path / "escaped"
    if case == "absolute":
        _tar(evil, good + [({"name": str(outside)}, b"x")])
    elif case == "dotdot":
        _tar(evil, good + [({"name": "thumbs/../../escaped"}, b"x")])
    elif case == "symlink":
        _tar(evil, good[:1] + [({"name": good[1][0]["name"], "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, None)]
             + good[2:])
    elif case == "hardlink":
        _tar(evil, good[:1] + [({"name": good[1][0]["name"], "type": tarfile.LNKTYPE, "linkname": "manifest.json"}, None)]
             + good[2:])
    elif case == "device":
        _tar(evil, good + [({"name": "thumbs/dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None)])
    elif case == "fifo":
        _tar(evil, good + [({"name": "fifo", "type": tarfile.FIFOTYPE}, None)])
    elif case == "oversize":
        name, data = good[1][0]["name"], good[1][1]
        _tar(evil, good[:1] + [({"name": name}, data + b"\0" * 4096)] + good[2:])
    elif case == "unlisted":
        _tar(evil, good + [({"name": "run-me.sh"}, b"#!/bin/sh\n")])
    elif case == "thumb-not-sha":
        _tar(evil, good + [({"name": "thumbs/run-me.jpg"}, b"x")])
    elif case == "thumb-extra":  # a well-named thumbnail no product shows, beyond the count
        data = b"\xff\xd8 not a product"
        _tar(evil, good + [({"name": f"thumbs/{hashlib.sha256(data).hexdigest()}.jpg"}, data)])
    elif case in ("thumb-oversize", "thumb-bytes"):
        name = _thumbnails(tiny_bundle)[0]
        data = (tiny_bundle / name).read_bytes()
        data = data + b"\0" * 100_000 if case == "thumb-oversize" else bytes(reversed(data))  # same size, other bytes
        _tar(evil, [m for m in good if m[0]["name"] != name] + [({"name": name}, data)])
    elif case == "duplicate":
        _tar(evil, good + [good[1]])
    elif case == "no-manifest":
        _tar(evil, good[1:])
    elif case == "garbage":
        evil.write_bytes(os.urandom(5000))
    elif case == "truncated":
        data = (packed / "b.tar.gz").read_bytes()
        evil.write_bytes(data[: len(data) // 2])
    elif case == "empty":
        evil.write_bytes(b"")
    proc = run_cli("install", evil, "--into", into, check=False)
    one_line_error(proc, fragment)
    assert state(into) == before
    assert not outside.exists() and not list(into.glob(".staging-*"))
    assert len(list((into / "bundles").iterdir())) == 1


def test_reinstalling_the_previous_bundle_keeps_its_folder_and_mends_a_damaged_one(tiny_bundle, packed, tmp_path):
    """Installing again the bundle `previous` points to must not delete it in place first:
    a kill in the middle left `previous` on a half bundle (seen in the kill loop)."""
    into = tmp_path / "kiosk"
    run_cli("install", packed / "b.tar", "--into", into)
    first = into / state(into)["current"]
    inode = first.stat().st_ino
    run_cli("install", rename_bundle(tiny_bundle, tmp_path / "other", "other"), "--into", into)
    assert (into / state(into)["previous"]).resolve() == first.resolve()
    run_cli("install", packed / "b.tar", "--into", into)  # back to the first: it is kept, not rewritten
    assert (into / state(into)["current"]).resolve() == first.resolve() and first.stat().st_ino == inode
    run_cli("inspect", into / "current")  # verifies every checksum
    # a damaged copy under the same name is not reused: it is moved aside and replaced whole
    run_cli("install", tmp_path / "other", "--into", into)
    next((first / "thumbs").iterdir()).write_bytes(b"damaged")  # thumbnails are named by their image's content
    run_cli("install", packed / "b.tar", "--into", into)
    run_cli("inspect", into / "current")  # verifies every checksum
    assert first.stat().st_ino != inode and not list((into / "bundles").glob(".*"))
