"""The device's thread count: timed at install, recorded by model, used by the runtime. Runtime only."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli
from edge_search.core.bundle import Bundle
from edge_search.core.encoder import DEFAULT_THREADS
from edge_search.core.search import Searcher
from edge_search.core.threads import MAX_THREADS, _record_path, fastest, record_threads, recorded_threads
from edge_search.files import CACHE_ENV

SHA = "ab" * 32


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("p50, want", [
    ({1: 2.6, 2: 1.5}, 2),
    ({1: 1.0, 2: 0.97}, 1),  # within 5 %: the fewer threads leave a core to the camera and the screen
    ({1: 1.0, 2: 0.9, 4: 0.5}, 4),
    ({1: 1.0, 2: 1.2}, 1),
])
def test_fastest(p50, want):
    assert fastest(p50) == want


def test_a_record_is_read_back_and_a_bad_one_ignored(cache):
    assert recorded_threads(SHA) == recorded_threads(None) == DEFAULT_THREADS == 2  # nothing recorded
    assert record_threads(SHA, {1: 1.0, 2: 3.0}) == 1 and recorded_threads(SHA) == 1
    assert recorded_threads("cd" * 32) == DEFAULT_THREADS  # another model's count is not this one's
    for bad in ({"model_sha256": SHA, "threads": MAX_THREADS + 1}, {"model_sha256": SHA, "threads": True},
                {"model_sha256": "cd" * 32, "threads": 1}, [1]):
        _record_path(SHA).write_text(json.dumps(bad))
        assert recorded_threads(SHA) == DEFAULT_THREADS, bad
    _record_path(SHA).write_text("{not json")
    assert recorded_threads(SHA) == DEFAULT_THREADS


def test_an_unwritable_cache_records_nothing(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "file"))  # a file where the folder should be
    assert record_threads(SHA, {1: 1.0}) is None and recorded_threads(SHA) == DEFAULT_THREADS


def _intra_op(searcher: Searcher) -> int:
    return searcher.encoder.session.get_session_options().intra_op_num_threads


def test_the_runtime_runs_at_the_recorded_count_unless_told(tiny_bundle, cache):
    sha = Bundle.open(tiny_bundle, verify=False).model_sha256()
    assert len(sha) == 64
    assert _intra_op(Searcher.from_bundle(tiny_bundle, verify=False)) == DEFAULT_THREADS
    record_threads(sha, {1: 1.0, 2: 2.0})
    assert _intra_op(Searcher.from_bundle(tiny_bundle, verify=False)) == 1
    assert _intra_op(Searcher.from_bundle(tiny_bundle, verify=False, threads=2)) == 2


def test_install_times_the_model_and_records_the_fastest(tiny_bundle, tmp_path):
    out = run_cli("install", tiny_bundle, "--into", tmp_path / "kiosk").stdout
    counts = list(range(1, min(MAX_THREADS, os.cpu_count() or 1) + 1))
    assert "image model on this device, p50: 1 thread " in out
    sha = Bundle.open(tiny_bundle, verify=False).model_sha256()
    record = json.loads(_record_path(sha).read_text())  # the suite's own cache folder, as the CLI's
    assert [int(k) for k in record["p50_ms"]] == counts
    assert record["threads"] == fastest({int(k): v for k, v in record["p50_ms"].items()})
    assert f"runs at {record['threads']}" in out and recorded_threads(sha) == record["threads"]
