"""A bundle checked once is not hashed again at the next start while its files are unchanged
(core/checked.py); any change to a file, or another manifest, means a full check again."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

import edge_search  # noqa: F401  (onnxruntime before usearch)
import edge_search.core.bundle as bundle_module
import edge_search.core.checked as checked
from edge_search.core.bundle import Bundle
from edge_search.core.search import Searcher
from edge_search.errors import BundleError
from make_tiny_bundle import COMMITTED


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_SEARCH_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "b"
    shutil.copytree(COMMITTED, out)
    return out


@pytest.fixture
def settled(monkeypatch):
    """Files count as settled at once (the real margin is 2 s of the file system's coarse clock)."""
    monkeypatch.setattr(checked, "STAT_MARGIN_NS", 0)
    time.sleep(0.05)


def _hashing_fails(monkeypatch):
    def refuse(path, *a, **k):
        raise AssertionError(f"hashed {path}")
    monkeypatch.setattr(bundle_module, "sha256_file", refuse)
    monkeypatch.setattr("edge_search.core.thumbnails.sha256_file", refuse)


def test_a_restart_on_a_checked_unchanged_bundle_hashes_nothing(bundle, settled, monkeypatch):
    Bundle.open(bundle).verify()
    records = list((bundle.parent / "cache" / checked.FOLDER).iterdir())
    assert len(records) == 1 and sorted(json.loads(records[0].read_text())["files"]) == \
        sorted(json.loads((bundle / "manifest.json").read_text())["files"])
    _hashing_fails(monkeypatch)
    searcher = Searcher.from_bundle(bundle)  # the kiosk's and `search`'s open
    assert len(searcher.products) == 12
    with pytest.raises(AssertionError, match="hashed"):  # `verify` and install always hash
        Bundle.open(bundle).verify()


def test_files_too_new_to_trust_are_checked_again(bundle, monkeypatch):
    Bundle.open(bundle).verify()  # just copied: within the margin, so not recorded
    assert not (bundle.parent / "cache" / checked.FOLDER).exists()
    _hashing_fails(monkeypatch)
    with pytest.raises(AssertionError, match="hashed"):
        Searcher.from_bundle(bundle)


def test_a_file_changed_after_the_check_is_hashed_again_and_refused(bundle, settled):
    Bundle.open(bundle).verify()
    index = bundle / "index.usearch"
    data = bytearray(index.read_bytes())
    data[-1] ^= 1  # same size; the stat changes (ctime) even if the mtime were put back
    stat = index.stat()
    index.write_bytes(bytes(data))
    os.utime(index, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(BundleError, match="index.usearch: checksum mismatch"):
        Searcher.from_bundle(bundle)


def test_a_record_holds_for_its_own_manifest_only(bundle, settled, monkeypatch):
    Bundle.open(bundle).verify()
    m = json.loads((bundle / "manifest.json").read_text())
    m["name"] = "renamed"
    (bundle / "manifest.json").write_text(json.dumps(m))
    _hashing_fails(monkeypatch)
    with pytest.raises(AssertionError, match="hashed"):
        Searcher.from_bundle(bundle)


def test_a_cache_that_cannot_be_written_or_read_means_checking_every_time(bundle, settled, monkeypatch, tmp_path):
    (tmp_path / "not-a-folder").write_text("x")
    monkeypatch.setenv("EDGE_SEARCH_CACHE_DIR", str(tmp_path / "not-a-folder"))
    assert Bundle.open(bundle).verify()  # the check passes; nothing recorded, no error
    monkeypatch.setenv("EDGE_SEARCH_CACHE_DIR", str(tmp_path / "cache"))
    Bundle.open(bundle).verify()
    record = next((tmp_path / "cache" / checked.FOLDER).iterdir())
    record.write_text("{not json")
    b = Bundle.open(bundle, verify=False)
    assert not checked.already_checked(b.root, b.manifest_sha256, list(b.manifest.files))
    record.write_text(json.dumps({"files": {name: None for name in b.manifest.files}}))
    assert not checked.already_checked(b.root, b.manifest_sha256, list(b.manifest.files))
    (bundle / "model.onnx").unlink()  # a record naming no stamp must not stand for a missing file
    assert not checked.already_checked(b.root, b.manifest_sha256, list(b.manifest.files))


def test_a_shown_thumbnail_must_have_the_bytes_its_name_says(bundle):
    from edge_search.kiosk.tui.thumbs import ThumbCache

    name = Bundle.open(bundle).product_table().products[0].thumbnail
    assert ThumbCache(bundle).get(name).shape[2] == 3
    (bundle / name).write_bytes((bundle / name).read_bytes() + b"\0")  # decodes still, but not these bytes
    assert ThumbCache(bundle).get(name) is None
