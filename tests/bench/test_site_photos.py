"""bench/site_photos.py: which val photos are a retailer's shelf photos and which are queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_search.evaluation.evaluate import Query


def _rows(spec: dict[str, list[int]]) -> list[Query]:
    # interleaved across products, numbers out of order: the split must sort by the photo's number
    out = []
    for i in range(max(map(len, spec.values()))):
        for pid, numbers in spec.items():
            if i < len(numbers):
                out.append(Query(image=Path(f"/v/{pid}/{pid}_{numbers[i]:03d}.jpg"), id=pid, line=len(out) + 2))
    return out


def test_first_photos_in_shooting_order_are_site_photos_the_rest_queries():
    from bench.site_photos import site_split

    rows = _rows({"A": [3, 1, 2, 10], "B": [2, 1], "C": [5, 4, 6]})
    sites, known, unknown = site_split(rows, 2, left_out={"C"})
    assert {pid: [r.image.name for r in rs] for pid, rs in sites.items()} == {
        "A": ["A_001.jpg", "A_002.jpg"], "B": ["B_001.jpg", "B_002.jpg"]}
    # A's photos 3 and 10 are queries, in input order; B gives site photos only
    assert [r.image.name for r in known] == ["A_003.jpg", "A_010.jpg"]
    # a product left out gives no site photos: all its photos are unknown-product queries
    assert "C" not in sites
    assert [r.image.name for r in unknown] == ["C_005.jpg", "C_004.jpg", "C_006.jpg"]


def test_the_last_photos_can_be_the_site_photos_instead():
    from bench.site_photos import site_split

    rows = _rows({"A": [3, 1, 2, 10], "B": [2, 1]})
    sites, known, _ = site_split(rows, 2, left_out=set(), last=True)
    assert {pid: [r.image.name for r in rs] for pid, rs in sites.items()} == {
        "A": ["A_003.jpg", "A_010.jpg"], "B": ["B_001.jpg", "B_002.jpg"]}
    assert [r.image.name for r in known] == ["A_001.jpg", "A_002.jpg"]


def test_not_a_grocery_run_is_one_argparse_line_and_writes_nothing(tmp_path, capsys):
    from bench.site_photos import main

    with pytest.raises(SystemExit) as e:
        main(["--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nothing" in err and "not a bench/grocery.py --out" in err
    assert not (tmp_path / "out").exists()


def test_a_clustered_share_resamples_whole_clusters():
    from bench.stats import clustered_share

    # product a: both photos right, b: both wrong; resampling products gives 0, 1/2 or 1, never 1/4 or 3/4
    e = clustered_share([True, True, False, False], [True] * 4, ["a", "a", "b", "b"])
    assert e.value == 0.5 and (e.low, e.high) == (0.0, 1.0) and e.n == 4
    # `within` leaves rows out of numerator and denominator alike: a's second photo does not count
    e = clustered_share([True, False, False, True], [True, False, True, True], ["a", "a", "b", "b"])
    assert e.value == pytest.approx(2 / 3) and e.n == 3
    # one cluster per row: every resample is a share of the rows, and 3 of 4 stays the value
    assert clustered_share([True, True, True, False], [True] * 4, [0, 1, 2, 3]).value == 0.75


def test_rotate_needs_two_draws_or_none(tmp_path, capsys):
    from bench.site_photos import main

    with pytest.raises(SystemExit):
        main(["--run", str(tmp_path), "--out", str(tmp_path / "o"), "--rotate", "1"])
    assert "--rotate 0 or at least 2" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_separability_needs_rotate(tmp_path, capsys):
    from bench.site_photos import main

    with pytest.raises(SystemExit):
        main(["--run", str(tmp_path), "--out", str(tmp_path / "o"), "--separability"])
    assert "--separability needs --rotate" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_site_calibration_ranks_each_site_photo_without_its_own_entries_and_skips_products_without_photos():
    from types import SimpleNamespace

    from bench.site_photos import _with_site_calibration

    # a: one studio image + one site photo, each embedded by teacher and student (keys 0, 1 | 2, 3);
    # b: a catalog product with no photo in the split (keys 4, 5): no site photo, nothing to add
    store = SimpleNamespace(products=SimpleNamespace(products=[SimpleNamespace(id="a", keys=[0, 1, 2, 3]),
                                                               SimpleNamespace(id="b", keys=[4, 5])]))
    site_a = np.asarray([[1.0, 0.0], [0.0, 1.0]], np.float32)  # a's two site photos; k = 1 takes the first
    queries, truth = np.asarray([[0.6, 0.8]], np.float32), np.asarray([1])
    vecs, own, skip = _with_site_calibration(store, queries, truth, {"a": site_a}, 1, ["teacher", "student"])
    assert np.allclose(vecs, [[0.6, 0.8], [1.0, 0.0]]) and own.tolist() == [1, 0]
    assert skip[0] is None and skip[1].tolist() == [2, 3]
