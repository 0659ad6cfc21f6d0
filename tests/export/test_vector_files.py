"""A catalog build's vectors on disk (vector_files.VectorFile) and the index's vectors read from them chunk
by chunk (catalog_build.IndexVectors): the same numbers, in the same block-major order, as in memory."""

from __future__ import annotations

import numpy as np
import pytest

from edge_search.errors import ExportError
from edge_search_export.catalog_build import INDEX_VIEWS, IndexVectors, Stream, index_vectors
from edge_search_export.vector_files import VectorFile


def written(path, array: np.ndarray, batch: int) -> VectorFile:
    f = VectorFile(path, *array.shape)
    for start in range(0, len(array), batch):
        f.write(array[start:start + batch])
    return f.close()


def test_rows_written_in_batches_read_back_as_ranges_chunks_and_picks(tmp_path):
    a = np.random.default_rng(0).standard_normal((1000, 12)).astype(np.float32)
    f = written(tmp_path / "v.npy", a, 37)
    assert np.array_equal(np.load(tmp_path / "v.npy"), a)  # a plain .npy file
    assert np.array_equal(f.rows(slice(100, 250)), a[100:250])
    pick = np.array([0, 5, 999, 5])
    assert np.array_equal(f[pick], a[pick])
    assert np.array_equal(f[np.arange(300, 700)], a[300:700])
    assert np.array_equal(np.asarray(f), a)


def test_a_block_that_does_not_fit_a_short_file_and_an_existing_file_are_refused(tmp_path):
    f = VectorFile(tmp_path / "v.npy", 4, 3)
    with pytest.raises(ExportError, match="does not fit"):
        f.write(np.zeros((2, 4), np.float32))
    f.write(np.zeros((3, 3), np.float32))
    with pytest.raises(ExportError, match="does not fit"):
        f.write(np.zeros((2, 3), np.float32))
    with pytest.raises(ExportError, match="3 of 4 rows written"):
        f.close()
    (tmp_path / "mine.npy").write_bytes(b"keep")
    with pytest.raises(ExportError, match="mine.npy: cannot write"):
        VectorFile(tmp_path / "mine.npy", 1, 1)
    assert (tmp_path / "mine.npy").read_bytes() == b"keep"


@pytest.mark.parametrize("encoder", ["student", "teacher+student", "teacher+student+views"])
def test_index_vectors_from_files_are_the_in_memory_ones_block_by_block(tmp_path, encoder):
    rng = np.random.default_rng(1)
    n, d = 50, 8
    mem = {"student": rng.standard_normal((n, d)), "teacher": rng.standard_normal((n, d)),
           "views": rng.standard_normal((n, INDEX_VIEWS * d))}
    mem = {k: v.astype(np.float32) for k, v in mem.items()}
    shas = [f"{i:064x}" for i in range(n)]
    on_disk = Stream(shas=shas, vectors={k: written(tmp_path / f"{k}.npy", v, 7) for k, v in mem.items()})
    expected = {"student": [mem["student"]], "teacher+student": [mem["teacher"], mem["student"]],
                "teacher+student+views": [mem["teacher"], mem["student"]] +
                [mem["views"][:, j * d:(j + 1) * d] for j in range(INDEX_VIEWS)]}[encoder]
    expected = np.concatenate(expected)
    v = IndexVectors.of(on_disk, encoder)
    assert len(v) == len(expected) and v.blocks == len(expected) // n
    assert np.array_equal(v.array(), expected)
    straddling = np.arange(n - 5, min(n + 5, len(expected)))  # a chunk across two blocks' boundary
    assert np.array_equal(v.take(straddling), expected[straddling])
    positions = np.unique([0, n - 1, min(n, len(expected) - 1), len(expected) - 1])
    assert np.array_equal(v.take(positions), expected[positions])
    assert np.array_equal(index_vectors(Stream(shas=shas, vectors=mem), encoder)[0], expected)


def test_picked_rows_in_any_order_with_repeats_masks_and_negatives(tmp_path):
    a = np.random.default_rng(2).standard_normal((500, 6)).astype(np.float32)
    f = written(tmp_path / "v.npy", a, 64)
    for pick in (np.array([499, 0, 3, 3, 4, 5, 250, -1]), np.array([], np.int64), np.arange(0, 500, 7)):
        assert np.array_equal(f[pick], a[pick])
    mask = np.zeros(500, bool)
    mask[[1, 2, 3, 400]] = True
    assert np.array_equal(f[mask], a[mask]) and np.array_equal(f[::3], a[::3])
    assert np.array_equal(f[10:10], a[10:10])
    with pytest.raises(IndexError):
        f[np.array([500])]


def test_picked_rows_are_read_not_mapped(tmp_path, monkeypatch):
    """The gates' sampled rows are read with plain reads: a mapping would put every page of the file the
    kernel maps around each fault into the build's memory (issue #15)."""
    import mmap

    a = np.zeros((100, 4), np.float32)
    f = written(tmp_path / "v.npy", a, 100)
    monkeypatch.setattr(mmap, "mmap", lambda *args, **kw: pytest.fail("mapped"))
    monkeypatch.setattr(np, "memmap", lambda *args, **kw: pytest.fail("mapped"))
    assert f[np.array([7, 90, 8])].shape == (3, 4)


def test_a_file_cut_short_is_refused_by_name(tmp_path):
    a = np.ones((10, 4), np.float32)
    f = written(tmp_path / "v.npy", a, 10)
    with open(tmp_path / "v.npy", "r+b") as g:
        g.truncate(f.offset + 5 * 16)
    with pytest.raises(ExportError, match="v.npy: the build's vectors were cut short"):
        f[np.array([8])]
    with pytest.raises(ExportError, match="cut short"):
        f.rows(slice(0, 10))
