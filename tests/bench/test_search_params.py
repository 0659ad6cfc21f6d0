"""bench/search_params.py on a small index: the sweep finds what exact search finds, and the choice is
the smallest expansion that reaches the recall target. The 1M figures are
`python bench/search_params.py --vectors 1000000`."""

from __future__ import annotations

import json
import sys

import numpy as np

from conftest import REPO


def test_the_sweep_measures_recall_against_exact_search_and_chooses_the_smallest_expansion(tmp_path):
    sys.path.insert(0, str(REPO))
    from bench import search_params

    out = tmp_path / "r.json"
    assert search_params.main(["--vectors", "3000", "--expansions", "16", "64", "--keep", str(tmp_path / "w"),
                               "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["vectors"] == 3000 and r["queries"] == 200 and set(r["expansions"]) == {"16", "64"}
    assert r["expansions"]["64"]["recall_at_10"] >= 0.99  # 3 000 vectors: a wide search finds the exact top-10
    chosen = r["chosen_expansion_search"]
    assert chosen == (16 if r["expansions"]["16"]["recall_at_10"] >= 0.99 else 64)
    assert r["meets_target"] == (r["expansions"][str(chosen)]["search_ms_p50"] <= 1.0)
    # the exact top-10 it measures against is the brute-force one
    shards = sorted((tmp_path / "w" / "shards-3000").glob("shard-*.npy"))
    queries = np.load(tmp_path / "w" / "shards-3000" / "queries.npy")
    vectors = np.concatenate([np.load(s) for s in shards])
    brute = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert [set(row) for row in search_params.exact_top(shards, queries).tolist()] == [set(row) for row in brute.tolist()]
    # a second run on the kept folder searches the same index without building it
    assert search_params.main(["--vectors", "3000", "--expansions", "64", "--keep", str(tmp_path / "w"),
                               "--out", str(out)]) == 0
    assert json.loads(out.read_text())["build_seconds"] is None
