"""export/ray_pass.py: what the child process hands back is applied to the driver's own catalog."""

from __future__ import annotations

import numpy as np

from edge_search.core.catalog import read_catalog
from edge_search.core.columns import ShaColumn
from edge_search_export.ray_pass import PassResult

DIGESTS = ["a" * 64, "b" * 64, "c" * 64]


def result(kept, count: int) -> PassResult:
    return PassResult(kept=kept, sha256=ShaColumn.of((DIGESTS * 5)[:count]), thumb=ShaColumn.of([None] * count),
                      skipped=("c.csv line 3: image broken.jpg: not an image",), embedded={"student": 2},
                      record={"engine": "ray"})


def test_every_row_kept_shares_the_driver_s_columns(sample_catalog):
    catalog = read_catalog(sample_catalog, read_images=False)
    n = len(catalog.rows)
    after = result(None, n).applied(catalog)
    assert len(after.rows) == n and list(after.rows.sha256) == (DIGESTS * 5)[:n]
    # the text columns are the driver's own objects, not copies that came back through the pickle
    assert after.rows.name is catalog.rows.name and after.rows.image is catalog.rows.image
    assert after.skipped == ("c.csv line 3: image broken.jpg: not an image",)


def test_a_dropped_row_is_dropped_here_too(sample_catalog):
    catalog = read_catalog(sample_catalog, read_images=False)
    kept = np.asarray([0, 2, 5])
    after = result(kept, 3).applied(catalog)
    assert [after.rows.id(i) for i in range(3)] == [catalog.rows.id(i) for i in kept]
    assert list(after.rows.line) == [catalog.rows.line[i] for i in kept]
    assert list(after.rows.sha256) == DIGESTS and list(after.rows.thumb) == [None] * 3


def test_an_error_in_the_child_is_raised_in_the_driver_as_it_was(sample_catalog, tmp_path):
    import pytest

    from edge_search.errors import EdgeSearchError
    from edge_search_export.ray_pass import PassJob, prefill_apart

    catalog = read_catalog(sample_catalog, read_images=False)
    job = PassJob(cfg=None, base=tmp_path / "no-such-base", catalog=catalog, cache=tmp_path / "cache",
                  thumbs_dir=tmp_path, progress=False)
    with pytest.raises(EdgeSearchError, match="no-such-base"):
        prefill_apart(job)  # the child's load_base refuses the folder before Ray starts


def test_a_bug_in_the_child_is_one_line_not_its_traceback(sample_catalog, tmp_path, capfd):
    import pytest

    from edge_search.errors import ExportError
    from edge_search_export.ray_pass import PassJob, prefill_apart
    from make_tiny_bundle import COMMITTED

    catalog = read_catalog(sample_catalog, read_images=False)
    # a config without the engine settings the child reads after loading the base: an AttributeError there
    job = PassJob(cfg=object(), base=COMMITTED, catalog=catalog, cache=tmp_path / "cache", thumbs_dir=tmp_path,
                  progress=False)
    with pytest.raises(ExportError, match="the Ray embedding pass failed: AttributeError"):
        prefill_apart(job)
    assert "Traceback" not in capfd.readouterr().err
