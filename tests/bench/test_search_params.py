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
    # chosen on the first 100 queries, reported on the other 100
    assert r["choosing_queries"] == 100
    assert chosen == (16 if r["choosing_recall_at_10"]["16"] >= 0.99 else 64)
    assert r["meets_target"] == (r["expansions"][str(chosen)]["search_ms_p50"] <= 1.0
                                 and r["expansions"][str(chosen)]["recall_at_10"] >= 0.99)
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


def test_a_projected_graph_finds_candidates_that_rescoring_in_full_dimensions_ranks(tmp_path):
    sys.path.insert(0, str(REPO))
    from bench import search_params

    out = tmp_path / "r.json"
    assert search_params.main(["--vectors", "3000", "--project", "64", "--fetch", "4", "--expansions", "64",
                               "--keep", str(tmp_path / "w"), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["projected_dims"] == 64 and r["rescored"] and r["fetch_per_result"] == 4
    # 40 candidates from the 64-d graph hold each query's cluster: 512-d rescoring finds the exact top-10
    assert r["expansions"]["64"]["recall_at_10"] >= 0.99
    assert (tmp_path / "w" / "index-3000-f16-c16-a128-p64.usearch").exists()
    # the projection: orthonormal columns, the directions of the largest second moment first
    shards = sorted((tmp_path / "w" / "shards-3000").glob("shard-*.npy"))
    p = search_params.projection(shards, 64)
    assert p.shape == (512, 64) and np.allclose(p.T @ p, np.eye(64), atol=1e-4)
    v = np.load(shards[0])
    energy = ((v @ p) ** 2).sum(0)
    assert (np.diff(energy) <= 1e-3 * energy[0]).all()
    # a 2-d graph cannot tell 150 clusters apart, and 10 candidates leave rescoring nothing to rank: it misses
    assert search_params.main(["--vectors", "3000", "--project", "2", "--fetch", "1", "--expansions", "64",
                               "--keep", str(tmp_path / "w"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["expansions"]["64"]["recall_at_10"] < 0.9
