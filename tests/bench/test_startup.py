"""bench/startup.py on the committed bundle: the grown bundles are whole (a checked open passes, the
key file included) and a fresh process reports every stage. The figures are
`python bench/startup.py --bundle BUNDLE`."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from conftest import REPO


def test_a_grown_bundle_is_whole_and_a_fresh_process_times_every_stage(tiny_bundle, tmp_path):
    sys.path.insert(0, str(REPO))
    from bench.startup import STAGES, grow, run_child

    import edge_search  # noqa: F401
    from edge_search.core.bundle import Bundle
    from edge_search.core.search import Searcher

    out = grow(tiny_bundle, 50, tmp_path / "grown")
    bundle = Bundle.open(out)  # checksums, and the key file against every line
    table = bundle.product_table()
    assert len(table) == 50 and table.products[49].id.endswith("-49") and table.products[0].id == "oat-milk"
    assert [p.keys for p in table.products] == [(i,) for i in range(50)]
    assert len(Bundle.open(tiny_bundle).product_table()) == 12  # the source untouched (its files are linked)
    searcher = Searcher.from_bundle(bundle)
    own = np.asarray(searcher.index.index.get(np.array([3], np.uint64)), np.float32).reshape(-1)
    assert searcher.search_vector(own, k=1, min_score=-1)[0][0].id == table.products[3].id

    photo = tmp_path / "frame.jpg"
    cv2.imwrite(str(photo), np.full((480, 640, 3), 128, np.uint8))
    r = run_child(out, photo, 1)
    assert all(r[s] > 0 for s in ("imports", "searcher", "first_answer"))
    assert abs(r["open_to_first_answer"] - sum(r[s] for s in STAGES)) < 0.1
    assert r["process_wall"] > r["imports"] + r["open_to_first_answer"]
    assert Path(out / "products.keys.npy").stat().st_size == 128 + 4 * 50  # int32, one entry per key
