"""A bundle measured on the DEV split with products left out of its index: what bench/separators.py and
bench/retries.py share. Their options, the bundle's own catalog vectors, the dev photos, no-product scenes
cut from dev photos (bench/negatives.py, split dev), and the seeded draws of products to leave out."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import edge_search  # noqa: F401  (onnxruntime before usearch)
import numpy as np

from bench.grocery_data import DEFAULT_DATA
from bench.negatives import build_negatives
from edge_search.core.images import load_image
from edge_search.core.search import Searcher
from edge_search.evaluation.evaluate import Query, read_queries


def add_arguments(ap: argparse.ArgumentParser, out: str) -> None:
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--queries", type=Path, required=True, help="a query CSV (image,id) of dev photos")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the dataset, for the dev negatives")
    ap.add_argument("--negatives", type=int, default=300, help="no-product scenes cut from dev photos")
    ap.add_argument("--leave-out", type=int, default=10)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(out))


@dataclass
class DevSetup:
    bundle: Searcher
    products: list  # the bundle's, in key order
    vectors: np.ndarray  # one row per catalog key: the bundle's own index
    queries: list[Query]
    scenes: list[np.ndarray]  # no-product scenes, RGB
    draws: list[set[int]]  # each draw: positions of the products left out

    @property
    def preprocess(self):
        return self.bundle.manifest.preprocess


def open_setup(a: argparse.Namespace, ap: argparse.ArgumentParser) -> DevSetup:
    """The setup add_arguments' options describe; bad options end through `ap.error`."""
    if a.draws < 1 or a.negatives < 1:
        ap.error("--draws and --negatives must be 1 or more")
    bundle = Searcher.from_bundle(a.bundle, threads=2)
    products = list(bundle.products.products)
    if not 1 <= a.leave_out < len(products) - 1:
        ap.error(f"--leave-out must be 1 to {len(products) - 2}: the bundle has {len(products)} products")
    if not hasattr(bundle.index, "index"):
        raise SystemExit(f"{a.bundle}: a bundle with a delta segment; rebuild it whole first")
    n_keys = sum(len(p.keys) for p in products)
    vectors = np.asarray(bundle.index.index.get(np.arange(n_keys, dtype=np.uint64)), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        scenes = [load_image(p) for p in
                  build_negatives(a.data, Path(tmp) / "dev", split="dev", count=a.negatives, seed=a.seed)]
    rng = np.random.default_rng([a.seed, 10])
    draws = [set(rng.choice(len(products), a.leave_out, replace=False).tolist()) for _ in range(a.draws)]
    return DevSetup(bundle=bundle, products=products, vectors=vectors, queries=read_queries(a.queries),
                    scenes=scenes, draws=draws)
