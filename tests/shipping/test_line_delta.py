"""Line deltas (edge_search/shipping/line_delta.py): a delta pack ships the changed lines of
products.jsonl, the installer rebuilds the file from the device's copy, bounded, and checks it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile

import pytest
from hypothesis import given, settings, strategies as st

from conftest import one_line_error, run_cli
from edge_search.errors import InstallError
from edge_search.shipping.line_delta import apply_patch, make_patch


def test_a_patch_copies_runs_and_writes_the_rest():
    old = b"a\nb\nc\nd\n"
    assert make_patch(old, old) == b"C 0 4\n"
    assert make_patch(old, b"a\nB\nc\nd\n") == b"C 0 1\nL 2\nB\nC 2 2\n"
    assert make_patch(old, b"c\nd\na\nb\nnew") == b"C 2 2\nC 0 2\nL 3\nnew"
    assert make_patch(b"", b"x\n") == b"L 2\nx\n" and make_patch(old, b"") == b""


lines = st.lists(st.sampled_from([b"p1\n", b"p2\n", b'{"id": "x", "price": 1.5}\n', b"\n", b"p3", b"q\r\n"]),
                 max_size=30)


@settings(max_examples=200, deadline=None)
@given(old=lines, new=lines)
def test_applying_a_patch_gives_the_new_file_back(old, new):
    old, new = b"".join(old), b"".join(new)
    assert apply_patch(old, make_patch(old, new), len(new), "t") == new


@pytest.mark.parametrize("patch, fragment", [
    (b"C 3 2\n", "a copy outside the base file"),
    (b"C -1 1\n", "a copy outside the base file"),
    (b"C 0 0\n", "a copy outside the base file"),
    (b"L 50\nshort", "literal bytes past the end"),
    (b"X 1\n", "an unknown operation"),
    (b"C 0 1", "an operation header at byte 0"),
    (b"C " + b"9" * 100 + b"\n", "an operation header"),
    (b"C 0 one\n", "invalid literal"),
    (b"C 0 4\nC 0 4\n", "more than the 12 bytes"),
])
def test_a_malformed_or_oversized_patch_is_refused(patch, fragment):
    with pytest.raises(InstallError, match=fragment):
        apply_patch(b"a\nb\nc\nd\n", patch, 12, "delta.tar:delta/products.jsonl")


def _repriced(bundle, out):
    """A copy of the bundle with its first product repriced, its manifest's checksum brought along."""
    shutil.copytree(bundle, out)
    rows = (out / "products.jsonl").read_text().splitlines(keepends=True)
    first = json.loads(rows[0])
    rows[0] = json.dumps({**first, "price": 0.01}) + "\n"
    data = "".join(rows).encode()
    (out / "products.jsonl").write_bytes(data)
    m = json.loads((out / "manifest.json").read_text())
    m["name"] = "repriced"
    m["files"]["products.jsonl"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (out / "manifest.json").write_text(json.dumps(m, indent=2))
    return out


def _rewrite(src, dst, change, drop=frozenset()):
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            if m.name in drop:
                continue
            data = change(m.name, tin.extractfile(m).read())
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    return dst


def test_an_installed_line_delta_is_exactly_the_new_table(tiny_bundle, tmp_path):
    b2 = _repriced(tiny_bundle, tmp_path / "b2")
    run_cli("pack", b2, "--base", tiny_bundle, "--out", tmp_path / "delta.tar")
    with tarfile.open(tmp_path / "delta.tar") as tar:
        assert "delta/products.jsonl" in tar.getnames() and "products.jsonl" not in tar.getnames()
    into = tmp_path / "k"
    run_cli("install", tiny_bundle, "--into", into)
    run_cli("install", tmp_path / "delta.tar", "--into", into)
    assert (into / "current" / "products.jsonl").read_bytes() == (b2 / "products.jsonl").read_bytes()
    assert not (into / "current" / "delta").exists()


@pytest.mark.parametrize("damage, fragment", [
    ("copy-outside", "a copy outside the base file"),
    ("grows", "more than the"),
    ("other-lines", "checksum mismatch"),
    ("no-base", "line deltas (delta/...) in an archive that names no base"),
    ("not-lines", "member 'delta/index.usearch' is not listed in the manifest"),
])
def test_a_bad_line_delta_is_refused_and_current_stays(tiny_bundle, tmp_path, damage, fragment):
    b2 = _repriced(tiny_bundle, tmp_path / "b2")
    run_cli("pack", b2, "--base", tiny_bundle, "--out", tmp_path / "delta.tar")

    def change(name, data):
        if name != "delta/products.jsonl":
            return data
        return {"copy-outside": b"C 0 9999\n", "grows": b"C 0 12\n" * 3, "other-lines": b"C 0 12\n"}.get(damage, data)

    # no-base: delta-base.json dropped, a patch in what then claims to be a whole bundle
    evil = _rewrite(tmp_path / "delta.tar", tmp_path / "evil.tar", change,
                    drop={"delta-base.json"} if damage == "no-base" else set())
    if damage == "not-lines":  # only files made of lines (.jsonl) may come as a line delta
        with tarfile.open(evil, "a") as tar:
            info = tarfile.TarInfo("delta/index.usearch")
            info.size = 7
            tar.addfile(info, io.BytesIO(b"C 0 1\n\n"))
    assert len((tiny_bundle / "products.jsonl").read_bytes().splitlines()) == 12  # what "C 0 12" copies
    into = tmp_path / "k"
    run_cli("install", tiny_bundle, "--into", into)
    before = os.readlink(into / "current")
    one_line_error(run_cli("install", evil, "--into", into, check=False), fragment)
    assert os.readlink(into / "current") == before and not list(into.glob(".staging-*"))
