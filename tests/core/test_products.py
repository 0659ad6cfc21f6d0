"""The product table read with its key file (products.keys.npy): lines parsed when asked for, the
key lookup read from the file, and a checked open comparing the two."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest

import edge_search  # noqa: F401  (onnxruntime before usearch)
from edge_search.core.bundle import Bundle
from edge_search.core.products import PRODUCT_KEYS_FILE, Product, ProductLines, ProductTable, read_key_file
from edge_search.errors import BundleError
from edge_search.files import sha256_file
from make_tiny_bundle import COMMITTED


def _table_bytes(products: list[Product]) -> bytes:
    return "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in products).encode()


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def _refresh_checksum(bundle, name: str) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"][name] = {"sha256": sha256_file(bundle / name), "bytes": (bundle / name).stat().st_size}
    (bundle / "manifest.json").write_text(json.dumps(m, indent=2))


def test_the_committed_bundle_has_a_key_file_that_reads_as_the_whole_table(tmp_path):
    m = Bundle.open(COMMITTED).manifest
    assert m.products_keys == PRODUCT_KEYS_FILE
    lazy = Bundle.open(COMMITTED).product_table()
    eager = ProductTable.load(COMMITTED / "products.jsonl", m.index.key_space)
    assert isinstance(lazy.products, ProductLines) and isinstance(eager.products, tuple)
    assert list(lazy.products) == list(eager.products) and len(lazy) == 12
    assert np.array_equal(lazy.key_to_product, eager.key_to_product)
    assert lazy.max_images == eager.max_images == max(len(p.keys) for p in eager.products)
    assert lazy.products[-1] == eager.products[11] and lazy.products[1:3] == list(eager.products[1:3])


def test_lines_are_split_only_at_newlines_and_blank_lines_skipped():
    a = Product(id="a", name="line\u2028separator\u0085next", keys=(1,))
    b = Product(id="b", name="B", keys=(0, 2), price=2.5, meta={"aisle": "4"})
    data = b"\n" + _table_bytes([a]) + b"  \r\n" + _table_bytes([b]).rstrip(b"\n")  # no final newline
    lines = ProductLines(data, "t.jsonl")
    assert len(lines) == 2 and list(lines) == [a, b]


def test_a_bad_line_is_named_when_it_is_read(tmp_path):
    good = Product(id="a", name="A", keys=(0,))
    lines = ProductLines(_table_bytes([good]) + b"\n{not json\n" + b'{"id": "c", "keys": ["x"]}\n', "t.jsonl")
    assert lines[0] == good  # the bad lines cost nothing until they are read
    with pytest.raises(BundleError, match=r"t.jsonl: line 3 is not a valid product \(JSONDecodeError"):
        lines[1]
    with pytest.raises(BundleError, match=r"t.jsonl: line 4 is not a valid product \(ValueError"):
        lines[2]


@pytest.mark.parametrize("array, fragment", [
    (np.array([0, 1, 1], np.int32), "must be 4 integers"),
    (np.array([0.0, 1, 1, 2]), "must be 4 integers, got float64"),
    (np.array([0, 1, 1, 3], np.int32), "must name lines 0 .. 2"),
    (np.array([0, -2, 1, 2], np.int64), "must name lines 0 .. 2"),
    (np.array([0, -1, 1, 2], np.int32), "key 1 belongs to no product"),
    (np.array([0, 1, 1, 2], np.int32), "key 3 is removed but names a product"),
])
def test_a_key_file_that_does_not_fit_is_refused_naming_it(tmp_path, array, fragment):
    path = tmp_path / "k.npy"
    path.write_bytes(_npy(array))
    removed = np.array([3]) if fragment.startswith("key 3") else None
    with pytest.raises(BundleError, match=f"{path}: .*{fragment}"):
        read_key_file(path, 4, 3, removed)


def test_a_key_file_that_is_not_an_array_is_refused(tmp_path):
    path = tmp_path / "k.npy"
    path.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(BundleError, match=f"{path}: cannot read the product keys"):
        read_key_file(path, 4, 3)
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # a pickle is never loaded
    with pytest.raises(BundleError, match=f"{path}: cannot read the product keys"):
        read_key_file(path, 1, 1)


def test_an_unchecked_open_reads_only_the_lines_it_shows_and_a_checked_one_reads_all(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(COMMITTED, bundle)
    lines = (bundle / "products.jsonl").read_bytes().split(b"\n")
    lines[7] = b'{"id": "broken", "keys": [7], "price": "free"}'  # a line the first answers never show
    (bundle / "products.jsonl").write_bytes(b"\n".join(lines))
    _refresh_checksum(bundle, "products.jsonl")
    table = Bundle.open(bundle, verify=False).product_table()
    assert table.products[0].id == "oat-milk" and len(table) == 12
    with pytest.raises(BundleError, match=r"products.jsonl: line 8 is not a valid product"):
        table.products[7]
    with pytest.raises(BundleError, match=r"products.jsonl: line 8 is not a valid product"):
        Bundle.open(bundle)


def test_a_checked_open_refuses_a_key_file_that_disagrees_with_the_table(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(COMMITTED, bundle)
    keys = np.load(bundle / PRODUCT_KEYS_FILE)
    keys[[0, 5]] = keys[[5, 0]]  # two images swapped between products: a plausible file, a wrong answer
    (bundle / PRODUCT_KEYS_FILE).write_bytes(_npy(keys))
    _refresh_checksum(bundle, PRODUCT_KEYS_FILE)
    assert Bundle.open(bundle, verify=False).product_table().key_to_product[0] == keys[0]
    with pytest.raises(BundleError, match=rf"{PRODUCT_KEYS_FILE}: key 0 belongs to product line {keys[0] + 1}, "
                                          rf"products.jsonl gives it to line 1"):
        Bundle.open(bundle)


def test_a_table_longer_or_shorter_than_the_manifest_says_is_refused(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(COMMITTED, bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    m["products"]["count"] = 13
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"products.jsonl: 12 products, manifest says 13"):
        Bundle.open(bundle, verify=False).product_table()
