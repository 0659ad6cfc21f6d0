"""bench/site_photos.py: which val photos are a retailer's shelf photos and which are queries."""

from __future__ import annotations

from pathlib import Path

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
