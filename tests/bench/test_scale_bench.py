"""bench/scale.py's own measurements, on sizes small enough to reason about."""

from __future__ import annotations

import sys

from conftest import REPO

sys.path.insert(0, str(REPO))
from bench.scale import child  # noqa: E402


def test_the_index_alone_grows_with_its_width():
    narrow = child("index-alone", 4000, 32, "f16", False, False)
    wide = child("index-alone", 4000, 512, "f16", False, False)
    assert narrow["count"] == wide["count"] == 4000
    # 4 000 f16 vectors of 512 are 3.9 MB before any graph, of 32 0.24 MB; the graph is the same for both.
    # (usearch's own count is its arenas, 16 MB for either at this size: not what the process holds)
    assert wide["anon_mb"] >= 3.9
    assert wide["anon_mb"] - narrow["anon_mb"] >= 3.9 - 0.25
    # the build's peak, read while it runs, also holds the chunk being added: 4 000 x 512 float32 (7.8 MB)
    # beside the index, gone once the index is built
    assert wide["peak_anon_mb"] >= wide["anon_mb"] + 7.8
