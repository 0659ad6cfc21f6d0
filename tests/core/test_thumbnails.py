"""Thumbnails named by their own sha256, counted by the manifest and named by
the product table (edge_search/core/thumbnails.py): what a reader accepts and
what it refuses, and bundles from before, which list each one in `files`."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from conftest import COMMITTED, one_line_error, run_cli
from edge_search.core.bundle import Bundle
from edge_search.core.thumbnails import named
from edge_search.errors import BundleError


@pytest.fixture()
def bundle(tmp_path):
    out = tmp_path / "b"
    shutil.copytree(COMMITTED, out)
    return out


def _thumbs(root):
    return sorted({json.loads(line)["thumbnail"] for line in (root / "products.jsonl").read_text().splitlines()})


def _edit_manifest(root, change):
    m = json.loads((root / "manifest.json").read_text())
    change(m)
    (root / "manifest.json").write_text(json.dumps(m, indent=2))


def test_the_committed_bundle_counts_its_thumbnails_by_name(bundle):
    b = Bundle.open(bundle)
    names = _thumbs(bundle)
    assert b.thumbnail_names() == names and len(names) == b.manifest.thumbnails.count == 12
    assert not any(n.startswith("thumbs/") for n in b.manifest.files)
    assert b.file_names() == [*b.manifest.files, *names]
    assert b.verify() == b.file_names()
    assert sorted(f"thumbs/{p.name}" for p in (bundle / "thumbs").iterdir()) == names


@pytest.mark.parametrize("damage, fragment", [
    ("bytes", "checksum mismatch"),
    ("missing", "missing from the bundle"),
    ("bigger", "over the"),
])
def test_a_damaged_thumbnail_fails_verify_naming_the_file(bundle, damage, fragment):
    path = bundle / _thumbs(bundle)[3]
    data = path.read_bytes()
    if damage == "bytes":
        path.write_bytes(bytes(reversed(data)))
    elif damage == "missing":
        path.unlink()
    else:
        path.write_bytes(data + b"\0" * 10_000)
    with pytest.raises(BundleError, match=fragment) as e:
        Bundle.open(bundle)
    assert path.name in str(e.value)
    one_line_error(run_cli("search", "--bundle", bundle, path if path.exists() else bundle / "products.jsonl",
                           check=False), path.name)


def test_the_manifest_count_and_total_must_match(bundle):
    _edit_manifest(bundle, lambda m: m["thumbnails"].update(count=11))
    with pytest.raises(BundleError, match="names 12 thumbnails, the manifest 11"):
        Bundle.open(bundle)
    _edit_manifest(bundle, lambda m: m["thumbnails"].update(count=12, bytes=m["thumbnails"]["bytes"] - 1))
    with pytest.raises(BundleError, match="thumbnails hold"):
        Bundle.open(bundle)


@pytest.mark.parametrize("section, fragment", [
    ({"folder": "elsewhere", "naming": "sha256", "count": 1, "bytes": 1, "max_bytes": 1}, "named by sha256 only"),
    ({"folder": "thumbs", "naming": "md5", "count": 1, "bytes": 1, "max_bytes": 1}, "named by sha256 only"),
    ({"folder": "thumbs", "naming": "sha256", "count": 2, "bytes": 9, "max_bytes": 4}, "agree with each other"),
    ({"folder": "thumbs", "naming": "sha256", "count": 1, "bytes": 1}, "missing key 'max_bytes'"),
    ([], "must be a JSON object"),
])
def test_a_malformed_thumbnails_section_is_one_line(bundle, section, fragment):
    _edit_manifest(bundle, lambda m: m.update(thumbnails=section))
    one_line_error(run_cli("inspect", bundle, check=False), "thumbnails", fragment)


def test_only_sha256_names_inside_the_folder_are_thumbnails():
    good = f"thumbs/{hashlib.sha256(b'x').hexdigest()}.jpg"
    assert named([good, None, good], "t") == [good]
    for bad in ("../etc/passwd", "thumbs/../../x.jpg", f"/{good}", good.upper(), good[:-4] + ".png", 7):
        with pytest.raises(BundleError, match="is not a thumbs/<sha256>.jpg name"):
            named([good, bad], "products.jsonl")


def test_a_bundle_that_lists_its_thumbnails_in_files_reads_as_before(bundle, tmp_path):
    """Bundles made before the `thumbnails` section: every thumbnail is a `files` entry."""
    def as_before(m):
        info = m.pop("thumbnails")
        for name in _thumbs(bundle):
            m["files"][name] = {"sha256": hashlib.sha256((bundle / name).read_bytes()).hexdigest(),
                                "bytes": (bundle / name).stat().st_size}
        assert len(m["files"]) == 4 + info["count"]  # index, model, product table and its key file
    _edit_manifest(bundle, as_before)
    b = Bundle.open(bundle)
    assert b.manifest.thumbnails is None and b.thumbnail_names() == []
    assert sorted(b.verify()) == sorted(b.manifest.files) and len(b.file_names()) == 16
    run_cli("pack", bundle, "--out", tmp_path / "old.tar")
    run_cli("install", tmp_path / "old.tar", "--into", tmp_path / "k")
    assert sorted(p.name for p in (tmp_path / "k" / "current" / "thumbs").iterdir()) == \
        sorted(n[7:] for n in _thumbs(bundle))
