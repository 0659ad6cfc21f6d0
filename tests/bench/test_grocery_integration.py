"""Integration on real data: the Grocery Store catalog (81 products, studio
images) from ../shared/datasets/grocery-store, read in place."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import GROCERY, REPO, export_args, read_manifest, run_cli

pytestmark = [pytest.mark.export, pytest.mark.dataset]


@pytest.fixture(scope="module")
def grocery_catalog(tmp_path_factory):
    if not (GROCERY / "classes.csv").is_file():
        pytest.skip(f"grocery dataset not found at {GROCERY} (set EDGE_SEARCH_GROCERY)")
    import sys

    sys.path.insert(0, str(REPO))
    from bench.grocery_data import write_catalog

    return write_catalog(GROCERY, tmp_path_factory.mktemp("grocery"))


def test_every_catalog_image_retrieves_its_own_product(tmp_path, grocery_catalog, tiny_checkpoint):
    out = tmp_path / "grocery"
    run_cli(*export_args(grocery_catalog, out, tiny_checkpoint))
    m = read_manifest(out)
    from edge_search_export.catalog_build import vectors_per_image

    # which encoder embeds the catalog is the export's choice (near-ties with a random tiny teacher)
    assert m["products"]["count"] == 81 and m["index"]["count"] == 81 * vectors_per_image(m["index"]["catalog_encoder"])
    with open(grocery_catalog, newline="") as f:
        rows = list(csv.DictReader(f))
    images = [str(grocery_catalog.parent / r["image"]) for r in rows]
    proc = run_cli("search", "--bundle", out, "--json", "-k", "1", *images)
    got = [json.loads(line)["results"][0]["id"] for line in proc.stdout.splitlines()]
    wrong = [(r["id"], g) for r, g in zip(rows, got) if r["id"] != g]
    assert len(got) == 81 and not wrong, wrong
    # names, categories and descriptions travel into the bundle's product table
    products = [json.loads(line) for line in (out / "products.jsonl").read_text().splitlines()]
    granny = next(p for p in products if p["id"] == "Granny-Smith")
    assert granny["name"] == "Granny Smith" and granny["category"] == "Apple" and "green apple" in granny["description"]
