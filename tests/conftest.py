"""Shared fixtures: tiny open_clip teachers with random weights saved to a
checkpoint file, the synthetic sample catalog, and bundles exported through
the real CLI. Fixed seeds, tmp paths, never the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edge_search  # noqa: F401  (onnxruntime before anything imports usearch)

REPO = Path(__file__).resolve().parent.parent
TINY_TEACHER = REPO / "models" / "teachers" / "tiny-vit-test.json"
GROCERY = Path(os.environ.get("EDGE_SEARCH_GROCERY", REPO.parent / "shared" / "datasets" / "grocery-store"))
# Small, fast student settings for the tiny teacher's 64 px input. A random-
# weight teacher maps every image to nearly the same vector (mean pairwise
# cosine ~0.98 on the grocery catalog), so which product wins an augmented
# photo is noise and int8 flips it often: the top-1 agreement gate is relaxed
# here, explicitly, and so is the catalog's mild-views gate (two epochs of distilling noise do
# not name rotated crops). Gate enforcement itself is tested in test_export.py.
TINY_STUDENT = ["--student", "mobilenetv3_small_050", "--epochs", "2", "--views-per-image", "4",
                "--gate", "int8_top1_agreement=0.5", "--gate", "catalog_views_top1=0"]


@pytest.fixture(autouse=True, scope="session")
def _embedding_cache_of_our_own(tmp_path_factory):
    """Exports keep catalog embeddings between builds (export/embed_cache.py): the suite uses a cache of its
    own, never the developer's, set for the subprocesses the CLI tests start too."""
    old = os.environ.get("EDGE_SEARCH_CACHE_DIR")
    os.environ["EDGE_SEARCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("embedding-cache"))
    yield
    if old is None:
        os.environ.pop("EDGE_SEARCH_CACHE_DIR", None)
    else:
        os.environ["EDGE_SEARCH_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _no_trusted_key_from_the_developer(tmp_path_factory, monkeypatch):
    """A developer's own trusted key (env or ~/.config) must not change results."""
    monkeypatch.delenv("EDGE_SEARCH_TRUSTED_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))


def run_cli(*args: str, check: bool = True, timeout: int = 600, env: dict | None = None,
            python: str | None = None) -> subprocess.CompletedProcess:
    """Run `edge-search` as a user would: a fresh process, real arguments."""
    proc = subprocess.run([python or sys.executable, "-m", "edge_search", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"edge-search {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def make_checkpoint(config: Path, out: Path, seed: int = 0) -> Path:
    """Random weights for an open_clip config, saved the way a user's checkpoint is."""
    import open_clip
    import torch

    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(config.stem)
    torch.save({"state_dict": model.state_dict()}, out)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("open_clip", reason="export tests need the [export] extra")
    return make_checkpoint(TINY_TEACHER, tmp_path_factory.mktemp("teacher") / "tiny-vit-test.pt")


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory) -> Path:
    from edge_search_export.sample_catalog import write_sample_catalog

    return write_sample_catalog(tmp_path_factory.mktemp("catalog"))


def export_args(catalog: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return ["export", "--catalog", catalog, "--out", out, "--teacher", TINY_TEACHER,
            "--pretrained", checkpoint, *TINY_STUDENT, "--quiet", *extra]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, sample_catalog, tiny_checkpoint) -> Path:
    """A complete bundle of the sample catalog, exported through the CLI."""
    out = tmp_path_factory.mktemp("bundles") / "sample"
    run_cli(*export_args(sample_catalog, out, tiny_checkpoint))
    return out


def read_manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory, sample_catalog, tiny_checkpoint) -> Path:
    """The sample catalog exported --with-text: the tiny teacher's text tower, tokenizer and product-text index."""
    out = tmp_path_factory.mktemp("bundles") / "with-text"
    run_cli(*export_args(sample_catalog, out, tiny_checkpoint, "--with-text"))
    return out
