"""Catalog rows held as columns (issue #15): the same rows back, at a few words per row."""

import csv
import gc
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from edge_search.core.catalog import Catalog, CatalogRow, CatalogRows, read_catalog
from edge_search.core.columns import DigestSet, ShaColumn, Spill, TextColumn


def test_text_column_round_trip_take_and_distinct():
    values = ["b", "a", None, "b", "a\0", "é", "a", ""]
    col = TextColumn.of(values)
    assert list(col) == values and len(col) == 8
    assert list(col.take(np.array([5, 2, 0, 5]))) == ["é", None, "b", "é"]
    assert list(col[1:4]) == ["a", None, "b"]
    first, group = col.distinct()
    # "a" and "a\0" are different values; the missing entry is in no group
    assert first.tolist() == [0, 1, 4, 5, 7]
    assert group.tolist() == [0, 1, -1, 0, 2, 3, 1, 4]
    assert list(TextColumn.of([])) == [] and TextColumn.of([]).distinct()[0].tolist() == []


def test_sha_column_set_take_overlay():
    a, b = "ab" * 32, "cd" * 32
    col = ShaColumn.of([None, a, None])
    assert list(col) == [None, a, None]
    col.set(0, b)
    assert col[0] == b and list(col.take([2, 0])) == [None, b]
    src = ShaColumn.of([a, None])
    merged = col.overlaid(np.array([2, 1]), src, np.array([0, 1]))  # src's entry 1 is unknown: row 1 keeps a
    assert list(merged) == [b, a, a] and list(col) == [b, a, None]  # (a copy)


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "name", "price", "category", "aisle"])
        w.writerows(rows)


def test_catalog_rows_read_back_grouped_and_cut(tmp_path):
    _write(tmp_path / "c.csv", [["milk", "m1.jpg", "Milk", "1.5", "dairy", ""],
                                ["tea", "t.jpg", "Tea", "", "", "4"],
                                ["milk", "m2.jpg", "", "", "dairy", ""]])
    cat = read_catalog(tmp_path / "c.csv", read_images=False)
    assert isinstance(cat.rows, CatalogRows)
    assert cat.rows[0] == CatalogRow(line=2, id="milk", image=str(tmp_path / "m1.jpg"), name="Milk", price=1.5,
                                     category="dairy")
    assert cat.rows[1].meta == {"aisle": "4"} and cat.rows[1].price is None and cat.rows[-1].line == 4
    assert cat.positions() == {"milk": [0, 2], "tea": [1]}
    cut = cat.rows.take(np.array([1, 2]))
    assert [r.id for r in cut] == ["tea", "milk"] and cut[0].meta == {"aisle": "4"} and cut[1].meta == {}
    # rows given as objects are held as columns too, and read back equal
    again = Catalog(source=cat.source, rows=tuple(cat.rows))
    assert isinstance(again.rows, CatalogRows) and list(again.rows) == list(cat.rows)
    changed = replace(cat, rows=(replace(cat.rows[0], sha256="f" * 64), *cat.rows[1:]))
    assert changed.rows[0].sha256 == "f" * 64 and changed.rows[1].sha256 is None


def test_conflicting_rows_still_refused_with_both_lines(tmp_path):
    from edge_search.errors import CatalogError

    _write(tmp_path / "c.csv", [["milk", "m1.jpg", "Milk", "1.5", "", ""], ["milk", "m2.jpg", "Milk", "2", "", ""]])
    with pytest.raises(CatalogError, match=r"line 3: id 'milk' repeats with another price 2.0 \(line 2 says 1.5\)"):
        read_catalog(tmp_path / "c.csv", read_images=False)
    kept = read_catalog(tmp_path / "c.csv", read_images=False, skip_bad=True)
    assert [r.line for r in kept.rows] == [2]


def test_a_large_catalog_costs_its_text_not_objects(tmp_path):
    """20 000 rows held by the build: each costs its text's bytes plus ~135 in fixed-width columns (offsets,
    price, codes, two digests); as CatalogRow objects with their strings it was ~400 bytes a row."""
    n = 20_000
    _write(tmp_path / "c.csv", [[f"p{i:06d}", f"/images/{i:06d}.jpg", f"Product {i}", "1.00", "dairy", ""]
                                for i in range(n)])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cat = read_catalog(tmp_path / "c.csv", read_images=False)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cat.rows) == n and cat.rows[n - 1].id == f"p{n - 1:06d}"
    text = sum(len(s) for s in (f"p{n - 1:06d}", "/images/000000.jpg", f"Product {n - 1}"))
    assert held / n < text + 160, f"{held / n:.0f} bytes a row"


def test_spilled_columns_read_the_same_from_files_that_may_be_removed(tmp_path):
    """A build moves its finished columns to files (issue #15): the same values, read through mappings
    that outlive the files' names, no longer held in memory; a digest column can still be filled in."""
    n = 20_000
    _write(tmp_path / "c.csv", [[f"p{i // 2:06d}", f"/images/{i:06d}.jpg", f"Product {i // 2}", "1.00",
                                 "dairy" if i % 3 else "", "x" if i == 7 else ""] for i in range(n)])
    folder = tmp_path / "spill"
    folder.mkdir()
    spill = Spill(folder)
    gc.collect()
    tracemalloc.start()  # (before the columns are made: only what it saw allocated counts as freed)
    try:
        cat = read_catalog(tmp_path / "c.csv", read_images=False)
        digests = ShaColumn.of([None] * n)
        before = list(cat.rows)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        cat.rows.spill(spill)
        digests.spill(spill)
        gc.collect()
        freed = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert isinstance(cat.rows.image._data, np.memmap) and isinstance(cat.rows.line, np.memmap)
    assert isinstance(cat.rows.sha256._digests, np.memmap) and isinstance(digests._digests, np.memmap)
    # the builder's buffers the columns were views of went with them (the bytes of text, offsets and digests)
    assert freed > 150 * n, f"{freed / n:.0f} bytes a row freed"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    assert list(cat.rows) == before and cat.positions()["p000003"] == [6, 7] and cat.rows[7].meta == {"aisle": "x"}
    digests.set(n - 1, "ab" * 32)
    assert digests[n - 1] == "ab" * 32 and digests[0] is None
    # a small column stays in memory, and spilling twice moves nothing again
    small = TextColumn.of(["a", None])
    small.spill(spill)
    assert not isinstance(small._data, np.memmap) and list(small) == ["a", None]
    kept = cat.rows.line
    cat.rows.spill(Spill(tmp_path / "nowhere"))  # (every column is mapped already: no file is written)
    assert cat.rows.line is kept


def test_a_digest_set_of_distinct_sorted_digests_finds_each():
    hexes = ["00" * 32, "0f" * 32, "f0" * 32]
    voids = np.frombuffer(bytes.fromhex("".join(hexes)), np.uint8).reshape(3, 32).view(np.dtype((np.void, 32)))[:, 0]
    found = DigestSet.of_distinct(voids)
    assert len(found) == 3 and [found.position(h) for h in hexes] == [0, 1, 2]
    assert "ff" * 32 not in found and found.position("not hex") is None


def test_a_spill_that_cannot_write_is_one_error_naming_its_file(tmp_path):
    from edge_search.errors import FileError

    with pytest.raises(FileError, match=r"missing/column-0.npy: cannot hold the build's columns"):
        Spill(tmp_path / "missing").array(np.zeros(1 << 16, np.uint8))


def test_spilled_rows_travel_by_pickle_as_their_values(tmp_path):
    """A spilled catalog still goes to the Ray pass's process and to store tasks by pickle: its values go,
    not its files (which that process may not see, and which the build removes)."""
    import pickle

    n = 10_000
    _write(tmp_path / "c.csv", [[f"p{i:05d}", f"/images/{i:05d}.jpg", "", "", "", ""] for i in range(n)])
    cat = read_catalog(tmp_path / "c.csv", read_images=False)
    (tmp_path / "spill").mkdir()
    cat.rows.spill(Spill(tmp_path / "spill"))
    data = pickle.dumps(cat)
    for f in (tmp_path / "spill").iterdir():
        f.unlink()
    back = pickle.loads(data)
    assert back.rows[n - 1] == cat.rows[n - 1] and list(back.rows.image) == list(cat.rows.image)
    # in memory there (a memmap by type, with no file): a build there moves it to its own files again
    (tmp_path / "there").mkdir()
    back.rows.spill(Spill(tmp_path / "there"))
    assert back.rows.line.filename is not None and back.rows.line.filename.startswith(str(tmp_path / "there"))
