"""`edge-search search` from an environment where only the runtime is
installed (no torch, no open_clip, no onnx). tests/run.sh builds that
environment and passes its interpreter in EDGE_SEARCH_RUNTIME_PYTHON."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import run_cli

RUNTIME_PY = os.environ.get("EDGE_SEARCH_RUNTIME_PYTHON")


@pytest.mark.skipif(not RUNTIME_PY, reason="set EDGE_SEARCH_RUNTIME_PYTHON to a runtime-only venv's python "
                                           "(tests/run.sh does)")
def test_search_runs_without_export_dependencies(tiny_bundle, sample_catalog):
    probe = subprocess.run([RUNTIME_PY, "-c", "import importlib.util as u, json; print(json.dumps("
                            "[m for m in ('torch', 'torchvision', 'open_clip', 'onnx', 'timm') if u.find_spec(m)]))"],
                           capture_output=True, text=True, check=True)
    assert json.loads(probe.stdout) == [], "the runtime-only environment has export packages installed"
    img = sample_catalog.parent / "images" / "honey.jpg"
    proc = run_cli("search", "--bundle", tiny_bundle, "--json", img, python=RUNTIME_PY)
    assert json.loads(proc.stdout)["results"][0]["id"] == "honey"
    proc = run_cli("export", "--catalog", sample_catalog, "--out", tiny_bundle.parent / "x", python=RUNTIME_PY,
                   check=False)
    assert proc.returncode == 2 and "pip install 'edge-search[export]'" in proc.stderr


@pytest.mark.skipif(not RUNTIME_PY, reason="set EDGE_SEARCH_RUNTIME_PYTHON to a runtime-only venv's python "
                                           "(tests/run.sh does)")
def test_a_device_signs_verifies_and_installs_without_export_dependencies(tiny_bundle, sample_catalog, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    run_cli("keygen", "--out", tmp_path / "keys", python=RUNTIME_PY)
    pub = tmp_path / "keys" / "edge-search.pub.pem"
    run_cli("sign", bundle, "--key", tmp_path / "keys" / "edge-search.key.pem", python=RUNTIME_PY)
    run_cli("verify", bundle, "--trusted-key", pub, python=RUNTIME_PY)
    run_cli("pack", bundle, "--out", tmp_path / "b.tar.gz", python=RUNTIME_PY)
    run_cli("install", tmp_path / "b.tar.gz", "--into", tmp_path / "kiosk", "--trusted-key", pub, python=RUNTIME_PY)
    img = sample_catalog.parent / "images" / "honey.jpg"
    proc = run_cli("search", "--bundle", tmp_path / "kiosk" / "current", "--trusted-key", pub, "--json", img,
                   python=RUNTIME_PY)
    assert json.loads(proc.stdout)["results"][0]["id"] == "honey"
