"""Reading catalogs: CSV, JSONL and folders; every bad row reported at once."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_search.core.catalog import read_catalog
from edge_search.core.products import NO_META, Product, ProductTable
from edge_search.errors import BundleError, CatalogError


def jpg(path, colour=(10, 200, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((40, 60, 3), colour, np.uint8))
    return path


def test_csv_groups_images_and_keeps_extra_columns(tmp_path):
    jpg(tmp_path / "a1.jpg"), jpg(tmp_path / "a2.jpg"), jpg(tmp_path / "b.jpg")
    (tmp_path / "c.csv").write_text(
        "id,image,name,price,aisle\n"
        'apple,a1.jpg,"Apple, red",0.5,3\n'
        "apple,a2.jpg,,,\n"
        "banana,b.jpg,Banana,1.25,4\n", encoding="utf-8")
    cat = read_catalog(tmp_path / "c.csv")
    groups = dict(cat.grouped())
    assert list(groups) == ["apple", "banana"]
    assert [Path(r.image).name for r in groups["apple"]] == ["a1.jpg", "a2.jpg"]
    assert groups["apple"][0].name == "Apple, red" and groups["apple"][0].price == 0.5
    assert groups["banana"][0].meta == {"aisle": "4"}



def test_rows_hold_their_image_path_as_text_and_share_what_repeats(tmp_path):
    # a catalog of millions of rows is held while it is built: no Path object, no empty dict, no copy of a
    # category per row
    jpg(tmp_path / "imgs" / "a.jpg"), jpg(tmp_path / "b.jpg")
    (tmp_path / "c.csv").write_text(
        "id,image,category,aisle\n"
        "a,imgs/a.jpg,dairy,\n"
        f"b,{tmp_path / 'b.jpg'},dairy,7\n", encoding="utf-8")
    a, b = read_catalog(tmp_path / "c.csv").rows
    assert a.image == str(tmp_path / "imgs" / "a.jpg") and b.image == str(tmp_path / "b.jpg")
    assert a.meta is NO_META and b.meta == {"aisle": "7"}
    assert a.category == "dairy" and a.category is b.category


def test_product_table_lines_read_back_as_the_same_table(tmp_path):
    # U+2028 and U+0085 are written as they are (ensure_ascii=False) and end no line of the table
    products = [Product(id="a", name="Apple\u2028red", keys=(1, 2), price=0.5, thumbnail="thumbs/a.jpg"),
                Product(id="b", name="Bé\x85", keys=(0,), meta={"aisle": "4"})]
    table = ProductTable.from_products(products, 3)
    (tmp_path / "products.jsonl").write_text("".join(table.lines()), encoding="utf-8")
    back = ProductTable.load(tmp_path / "products.jsonl", 3)
    assert back.products == table.products
    assert back.key_to_product.tolist() == [1, 0, 0]
    assert back.products[0].meta is NO_META and back.products[1].meta == {"aisle": "4"}

def test_jsonl_and_folder_layouts(tmp_path):
    jpg(tmp_path / "imgs" / "x.png")
    (tmp_path / "c.jsonl").write_text(json.dumps({"id": "x", "image": "imgs/x.png", "price": 2}) + "\n\n")
    assert read_catalog(tmp_path / "c.jsonl").rows[0].price == 2.0
    jpg(tmp_path / "folder" / "milk" / "1.jpg"), jpg(tmp_path / "folder" / "milk" / "2.jpg")
    jpg(tmp_path / "folder" / "tea" / "1.jpg")
    cat = read_catalog(tmp_path / "folder")
    assert [(pid, len(rows)) for pid, rows in cat.grouped()] == [("milk", 2), ("tea", 1)]


def test_all_bad_rows_reported_with_line_numbers(tmp_path):
    jpg(tmp_path / "ok.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "c.csv").write_text(
        "id,image,price\n"
        "good,ok.jpg,1\n"
        ",ok.jpg,1\n"
        "gone,missing.jpg,1\n"
        "bad,broken.jpg,1\n"
        "cheap,ok.jpg,free\n", encoding="utf-8")
    with pytest.raises(CatalogError) as e:
        read_catalog(tmp_path / "c.csv")
    msg = str(e.value)
    assert "\n" not in msg and "4 bad row(s)" in msg
    for fragment in ("line 3: missing id", "line 4: image missing.jpg: no such file",
                     "line 5: image broken.jpg", "line 6: price 'free' is not a number"):
        assert fragment in msg
    cat = read_catalog(tmp_path / "c.csv", skip_bad=True)
    assert [r.id for r in cat.rows] == ["good"] and len(cat.skipped) == 4


@pytest.mark.parametrize("content,expected", [
    ("name,image\nx,y.jpg\n", r"lacks required column\(s\) id"),
    ("", "empty file"),
])
def test_header_problems(tmp_path, content, expected):
    (tmp_path / "c.csv").write_text(content)
    with pytest.raises(CatalogError, match=expected):
        read_catalog(tmp_path / "c.csv")


def test_unreadable_catalogs(tmp_path):
    with pytest.raises(CatalogError, match="no such catalog"):
        read_catalog(tmp_path / "nope.csv")
    (tmp_path / "c.txt").write_text("id,image\n")
    with pytest.raises(CatalogError, match="unknown catalog format"):
        read_catalog(tmp_path / "c.txt")
    (tmp_path / "latin.csv").write_bytes("id,image\ncaf\xe9,x.jpg\n".encode("latin-1"))
    with pytest.raises(CatalogError, match="not UTF-8"):
        read_catalog(tmp_path / "latin.csv")
    (tmp_path / "c.jsonl").write_text("{not json}\n")
    with pytest.raises(CatalogError, match="line 1: not valid JSON"):
        read_catalog(tmp_path / "c.jsonl")


def test_images_a_base_decoded_are_not_decoded_again(tmp_path):
    """`decoded` holds the sha256 of bytes known to decode (a base bundle's images): those are only read."""
    import hashlib

    good = jpg(tmp_path / "good.jpg")
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"not an image, but bytes a base decoded before (as far as this reader knows)")
    (tmp_path / "c.csv").write_text("id,image\na,good.jpg\nb,fake.jpg\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="line 3: image fake.jpg: not a readable image"):
        read_catalog(tmp_path / "c.csv")
    known = {hashlib.sha256(fake.read_bytes()).hexdigest()}
    assert [r.id for r in read_catalog(tmp_path / "c.csv", decoded=known).rows] == ["a", "b"]
    good.write_bytes(b"changed since")  # not in `decoded`: decoded, and refused
    with pytest.raises(CatalogError, match="line 2: image good.jpg"):
        read_catalog(tmp_path / "c.csv", decoded=known)


def test_a_product_table_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    (tmp_path / "products.jsonl").write_bytes(b'{"id": "a", "name": "ok", "keys": [0]}\n{"id": "\xff"}\n')
    with pytest.raises(BundleError) as e:
        ProductTable.load(tmp_path / "products.jsonl", 1)
    assert str(e.value).startswith(f"{tmp_path / 'products.jsonl'}: cannot read") and "\n" not in str(e.value)
