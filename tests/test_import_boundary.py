"""The device runtime never imports torch, torchvision, open_clip or onnx, and
our package always imports onnxruntime before usearch. Checked in fresh
interpreters, because sys.modules in this test process is already polluted.
The layers of docs/architecture.md are checked on the source: which package
may import which, nothing in the runtime names the export stage, and only
the TUI imports textual."""

from __future__ import annotations

import argparse
import ast
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import edge_search

HEAVY = ("torch", "torchvision", "open_clip", "onnx", "timm")
RUNTIME_PY = os.environ.get("EDGE_SEARCH_RUNTIME_PYTHON")


def runtime_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(edge_search.__path__, "edge_search.")
                  if m.name != "edge_search.__main__")


def fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_runtime_modules_are_found():
    mods = runtime_modules()
    assert {"edge_search.core.search", "edge_search.cli", "edge_search.core.index", "edge_search.kiosk.tui.app",
            "edge_search.core.signing", "edge_search.evaluation.evaluate"} <= set(mods)


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


# --- the layers (docs/architecture.md) ------------------------------------------------------------
# Read from the source, so a lazy import inside a function counts as much as one at the top.

ROOT = Path(edge_search.__file__).parent
SHARED = {"edge_search", "edge_search.errors", "edge_search.files", "edge_search.display"}
# which of our packages each layer may import, besides the shared modules and itself
MAY_IMPORT = {
    "shared": set(),
    "core": set(),
    "kiosk": {"core"},
    "shipping": {"core"},
    "evaluation": {"core"},
    "cli": {"core", "kiosk", "shipping", "evaluation"},
}
GUI = ("textual", "rich")


def layer(module: str) -> str:
    if module == "edge_search.__main__":  # `python -m edge_search` is the CLI
        return "cli"
    return "shared" if module in SHARED else module.split(".")[1]


def imports_of(path: Path, module: str) -> set[str]:
    """Every module a source file names in an import statement, anywhere in the file, as absolute names."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)  # `from edge_search.core import search`
    return found


def sources() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def test_the_layers_are_found():
    layers = {layer(m) for m in sources()}
    assert layers == set(MAY_IMPORT), layers


def test_each_layer_imports_only_what_it_may():
    wrong = []
    for module, path in sources().items():
        allowed = MAY_IMPORT[layer(module)] | {layer(module)}
        for name in imports_of(path, module):
            if name.startswith("edge_search.") and name not in SHARED and name.split(".")[1] in MAY_IMPORT \
                    and name.split(".")[1] not in allowed:
                wrong.append(f"{module} imports {name}")
    assert wrong == []


def test_no_runtime_module_names_the_export_stage():
    # not even lazily or through importlib: the export commands are found through entry points
    named = [m for m, p in sources().items() if "edge_search_export" in p.read_text()]
    assert named == []


def test_only_the_tui_imports_textual():
    outside = sorted(f"{m} imports {n}" for m, p in sources().items() if not m.startswith("edge_search.kiosk.tui")
                     for n in imports_of(p, m) if n.split(".")[0] in GUI)
    inside = [m for m, p in sources().items() if m.startswith("edge_search.kiosk.tui")
              and any(n.split(".")[0] == "textual" for n in imports_of(p, m))]
    assert outside == [] and inside  # the check would pass vacuously if the TUI had moved


def test_importing_everything_but_the_tui_loads_neither_textual_nor_the_export_stage():
    mods = [m for m in runtime_modules() if not m.startswith("edge_search.kiosk.tui")]
    code = ("import importlib, json, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(x for x in ('textual', 'rich', 'edge_search_export') if x in sys.modules)))\n")
    proc = fresh(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


@pytest.mark.skipif(not RUNTIME_PY, reason="set EDGE_SEARCH_RUNTIME_PYTHON to a runtime-only venv's python "
                    "(tests/run.sh does)")
def test_every_module_imports_in_the_runtime_only_install():
    code = ("import importlib, json, pkgutil, sys, edge_search\n"
            "mods = sorted(m.name for m in pkgutil.walk_packages(edge_search.__path__, 'edge_search.') "
            "if m.name != 'edge_search.__main__')\n"
            "for m in mods: importlib.import_module(m)\n"
            "import edge_search.cli as c; c.build_parser()\n"
            f"print(json.dumps([len(mods), sorted(x for x in {HEAVY!r} if x in sys.modules)]))\n")
    proc = subprocess.run([RUNTIME_PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert count == len(runtime_modules()) and heavy == []


def test_export_commands_come_from_the_entry_point_group():
    # the runtime's parser knows `export` and `demo` only because the export stage registers them
    from edge_search.cli import PLUGIN_GROUP, build_parser
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group=PLUGIN_GROUP)}
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert names == {"export", "demo"} and names <= set(sub.choices)
