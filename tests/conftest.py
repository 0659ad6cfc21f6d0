"""Shared fixtures: the committed tiny bundle the runtime tests search
(tests/data/tiny-bundle, made by tests/make_tiny_bundle.py), tiny open_clip
teachers with random weights saved to a checkpoint file, the synthetic sample
catalog, and bundles exported through the real CLI for the export tests.
Fixed seeds, tmp paths, never the network.

The folders mirror the packages (core, kiosk, shipping, evaluation, cli,
export, bench). Where the [export] extra is not installed (tests/run.sh's
.venv-runtime), tests/export is not collected and the tests marked `export`
elsewhere are deselected: everything else runs without torch.
"""

from __future__ import annotations

import importlib.util
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edge_search  # noqa: F401  (onnxruntime before anything imports usearch)
from make_tiny_bundle import COMMITTED, TINY_TEACHER, make_checkpoint  # noqa: F401  (shared with the tests)

# a tiny timm CNN teacher (open_clip config): unlike the tiny ViT it runs at any input side
TINY_CNN = {"embed_dim": 32,
            "vision_cfg": {"timm_model_name": "test_resnet", "timm_model_pretrained": False, "timm_pool": "avg",
                           "timm_proj": "linear", "image_size": 64},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}

REPO = Path(__file__).resolve().parent.parent
EXPORT_DIR = Path(__file__).resolve().parent / "export"
EXPORT_INSTALLED = all(importlib.util.find_spec(m) is not None for m in ("torch", "open_clip"))
collect_ignore = [] if EXPORT_INSTALLED else ["export"]
GROCERY = Path(os.environ.get("EDGE_SEARCH_GROCERY", REPO.parent / "shared" / "datasets" / "grocery-store"))
# Small, fast student settings for the tiny teacher's 64 px input. A random-
# weight teacher maps every image to nearly the same vector (mean pairwise
# cosine ~0.98 on the grocery catalog), so which product wins an augmented
# photo is noise and int8 flips it often: the top-1 agreement gate is relaxed
# here, explicitly, and so is the catalog's mild-views gate (two epochs of distilling noise do
# not name rotated crops). Gate enforcement itself is tested in test_export.py.
# int8 named: the default (auto) ships whichever of int8 and fp16 times faster on the machine at
# hand, so two runs could differ; test_precision.py tests that choice.
TINY_STUDENT = ["--student", "mobilenetv3_small_050", "--epochs", "2", "--views-per-image", "4", "--quantize", "int8",
                "--gate", "int8_top1_agreement=0.5", "--gate", "catalog_views_top1=0"]


def pytest_collection_modifyitems(config, items):
    """Every test under tests/export is an export test; without the extra, export tests are deselected."""
    for item in items:
        if EXPORT_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.export)
    if not EXPORT_INSTALLED:
        deselected = [item for item in items if item.get_closest_marker("export")]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if not item.get_closest_marker("export")]


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


def one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stdout
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for f in fragments:
        assert f in err, err


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
def tiny_bundle(tmp_path_factory) -> Path:
    """The committed bundle of the sample catalog (no torch needed), copied so that no test can change it."""
    out = tmp_path_factory.mktemp("bundles") / COMMITTED.name
    shutil.copytree(COMMITTED, out)
    return out


@pytest.fixture(scope="session")
def exported_bundle(tmp_path_factory, sample_catalog, tiny_checkpoint) -> Path:
    """A bundle of the sample catalog with a distilled student, exported through the CLI."""
    out = tmp_path_factory.mktemp("bundles") / "sample"
    run_cli(*export_args(sample_catalog, out, tiny_checkpoint))
    return out


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def read_manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory, sample_catalog, tiny_checkpoint) -> Path:
    """The sample catalog exported --with-text: the tiny teacher's text tower, tokenizer and product-text index."""
    out = tmp_path_factory.mktemp("bundles") / "with-text"
    run_cli(*export_args(sample_catalog, out, tiny_checkpoint, "--with-text"))
    return out
