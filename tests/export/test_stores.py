"""Per-store bundles: `export --stores STORES.csv` writes OUT/<store>/ with only that store's products, its
prices and aisles; the models and the embeddings are computed once for the chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import csv_rows as catalog_rows, export_args, read_manifest, run_cli, write_csv

pytestmark = pytest.mark.export


def write_stores(path: Path, rows: list[tuple]) -> Path:
    return write_csv(path, [dict(zip(("store", "id", "price", "aisle", "in_stock"), r)) for r in rows])


def products(bundle: Path) -> dict[str, dict]:
    return {p["id"]: p for p in map(json.loads, (bundle / "products.jsonl").read_text().splitlines())}


def test_one_bundle_per_store_with_its_products_prices_and_aisles(tmp_path, sample_catalog, tiny_checkpoint):
    ids = [r["id"] for r in catalog_rows(sample_catalog)]
    stores = write_stores(tmp_path / "stores.csv", [
        ("north", ids[0], "0.99", "4", "yes"), ("north", ids[1], "", "7B", "no"), ("north", ids[2], "", "", ""),
        ("south", ids[0], "1.25", "1", ""), ("south", ids[5], "", "", "")])
    out = tmp_path / "chain"
    proc = run_cli(*export_args(sample_catalog, out, tiny_checkpoint, "--stores", stores))
    assert "wrote 2 store bundles" in proc.stdout
    # the chain's models were built once, into _chain; the stores embedded nothing of their own
    assert "embedded 0 catalog images for all stores" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["_chain", "north", "south"]
    north, south = products(out / "north"), products(out / "south")
    assert list(north) == ids[:3] and list(south) == [ids[0], ids[5]]
    assert north[ids[0]]["price"] == 0.99 and south[ids[0]]["price"] == 1.25
    assert north[ids[0]]["meta"]["aisle"] == "4" and north[ids[0]]["meta"]["in_stock"] is True
    assert north[ids[1]]["meta"] == {**north[ids[1]].get("meta", {}), "aisle": "7B", "in_stock": False}
    chain = read_manifest(out / "_chain")
    for store in ("north", "south"):
        m = read_manifest(out / store)
        assert m["lineage"]["store"] == store and m["name"] == store
        assert m["lineage"]["base"]["name"] == chain["name"]
        assert (out / store / "model.onnx").read_bytes() == (out / "_chain" / "model.onnx").read_bytes()
    # where it is: in JSON and in the text table
    image = sample_catalog.parent / catalog_rows(sample_catalog)[1]["image"]
    hit = json.loads(run_cli("search", "--bundle", out / "north", "--min-score", "-1", "--json", image)
                     .stdout)["results"][0]
    assert (hit["id"], hit["aisle"], hit["in_stock"]) == (ids[1], "7B", False)
    text = run_cli("search", "--bundle", out / "north", "--min-score", "-1", image).stdout
    assert "where" in text and "aisle 7B, out of stock" in text


def test_bad_store_rows_are_named_with_their_lines(tmp_path, sample_catalog, tiny_checkpoint):
    ids = [r["id"] for r in catalog_rows(sample_catalog)]
    stores = write_stores(tmp_path / "stores.csv", [
        ("north", ids[0], "1", "", ""), ("../up", ids[1], "", "", ""), ("north", "no-such-id", "", "", ""),
        ("north", ids[2], "cheap", "", "maybe"), ("north", ids[0], "", "", "")])
    out = tmp_path / "chain"
    proc = run_cli(*export_args(sample_catalog, out, tiny_checkpoint, "--stores", stores), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = proc.stderr
    assert "4 bad row(s)" in err
    assert "line 3: store '../up' is not a safe folder name" in err
    assert "line 4: id 'no-such-id' is not in the catalog" in err
    assert "line 5: price 'cheap' is not a number" in err and "in_stock 'maybe'" in err
    assert "line 6: store 'north' lists id" in err and "first on line 2" in err
    assert not out.exists()
