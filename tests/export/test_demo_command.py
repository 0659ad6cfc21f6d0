"""The README's main command, `edge-search demo`, end to end as a newcomer runs it: the installed
console script in a fresh process, a sample catalog, a ViT-B-32 export, searches. With a network it
uses the pretrained teacher, offline it says it falls back to random weights: either way it must
finish, leave a bundle that `edge-search search` answers from, and report every photo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.export


def _console_script(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    assert found, f"{name} is not installed beside {sys.executable}"
    return found


def test_edge_search_demo_runs_end_to_end(tmp_path):
    from edge_search_export.sample_catalog import PRODUCTS

    exe = _console_script("edge-search")
    work = tmp_path / "demo"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.run([exe, "demo", "--workdir", str(work), "--quiet"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout + run.stderr
    lines = [ln for ln in out.splitlines() if ln.startswith("  ") and "->" in ln]
    assert len(lines) == len(PRODUCTS) and f"bundle: {work / 'bundle'}" in run.stdout
    assert {ln.split()[0] for ln in lines} <= {"ok", "wrong", "no"}
    # the top-1 it prints is the share of photos it marked ok
    top1 = re.search(rf"top-1 on {len(PRODUCTS)} photos: (\d+)%", out)
    assert top1 and int(top1.group(1)) == round(100 * sum(ln.split()[0] == "ok" for ln in lines) / len(PRODUCTS))
    assert ("PIPELINE CHECK" in run.stdout) == ("note: " in run.stdout)
    # offline or not, the run says which teacher it had: a random one is named as a pipeline check
    teacher = json.loads((work / "bundle" / "manifest.json").read_text())["teacher"]
    assert ("PIPELINE CHECK" in out) == (teacher["pretrained"] == "random")
    assert teacher["model"] == "ViT-B-32"

    query = sorted((work / "queries").glob("*.jpg"))[0]
    found = subprocess.run([exe, "search", "--bundle", str(work / "bundle"), "--json", str(query)], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr[-2000:]
    answer = json.loads(found.stdout)
    assert answer["query"] == str(query)
    # the demo's own report for this photo names the same top product (or no match)
    mine = next(ln for ln in lines if f" {query.name} " in ln)
    if answer["no_match"]:
        assert mine.split()[0] == "no" and not answer["results"]
    else:
        assert f"-> {answer['results'][0]['id']} (" in mine
    verified = subprocess.run([exe, "inspect", str(work / "bundle")], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
    assert verified.returncode == 0 and "files verified" in verified.stdout
