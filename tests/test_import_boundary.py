"""The device runtime never imports torch, torchvision, open_clip or onnx, and
our package always imports onnxruntime before usearch. Checked in fresh
interpreters, because sys.modules in this test process is already polluted."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import edge_search

HEAVY = ("torch", "torchvision", "open_clip", "onnx", "timm")


def runtime_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(edge_search.__path__, "edge_search.")
                  if m.name != "edge_search.__main__")


def fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_runtime_modules_are_found():
    mods = runtime_modules()
    assert "edge_search.core.search" in mods and "edge_search.cli" in mods and "edge_search.core.index" in mods


def test_no_heavy_imports_in_runtime():
    code = (
        "import importlib, json, sys\n"
        f"for m in {runtime_modules()!r}: importlib.import_module(m)\n"
        "import edge_search.cli as c; c.build_parser()\n"
        f"print(json.dumps(sorted(x for x in {HEAVY!r} if x in sys.modules)))\n"
    )
    proc = fresh(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_every_module_imports_onnxruntime_before_usearch():
    for mod in runtime_modules():
        code = (f"import sys, {mod}\n"
                "names = list(sys.modules)\n"
                "print(names.index('onnxruntime') < names.index('usearch') if 'usearch' in names else True)\n")
        proc = fresh(code)
        assert proc.returncode == 0, f"{mod}: exit {proc.returncode} {proc.stderr[-500:]}"
        assert proc.stdout.strip() == "True", mod


def test_usearch_first_is_the_crash_we_guard_against():
    # If this ever stops crashing, the guard in edge_search/__init__.py can go.
    crash = fresh("import usearch.index, onnxruntime")
    safe = fresh("import edge_search.core.index, usearch.index, onnxruntime; print('ok')")
    assert safe.returncode == 0 and safe.stdout.strip() == "ok"
    assert crash.returncode != 0
