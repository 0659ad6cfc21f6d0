"""Make tests/data/tiny-bundle: the committed bundle the runtime tests search
without torch (tests/run.sh runs them in the runtime-only environment).

    python tests/make_tiny_bundle.py [OUT]      (needs the [export] extra; ~10 s)

The sample catalog (12 drawn products) exported by `edge-search export` with
the tiny open_clip config models/teachers/tiny-vit-test.json, random weights
(seed 0) saved to a checkpoint file and loaded back through --pretrained, and
`--student none`: the teacher's own tower ships (int8, ~250 KB; a distilled
MobileNet student would be ~900 KB). A random-weight teacher tells products
apart by chance, so two fidelity gates are relaxed as in tests/conftest.py.

The export runs in a scratch folder with relative paths, so the manifest names
no machine path; `created` is then set to a fixed time (the export stamps the
clock). tests/export/test_tiny_bundle.py regenerates the bundle and checks it
equals the committed one file by file; the only manifest fields it does not
compare are in VOLATILE (the producing versions, measured timings and the one
choice made from them, exact search or HNSW).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY_TEACHER = REPO / "models" / "teachers" / "tiny-vit-test.json"
COMMITTED = REPO / "tests" / "data" / "tiny-bundle"
NAME = "tiny-bundle"
CREATED = "2026-01-01T00:00:00Z"
SEED = 0
# What differs between two runs of this script on the same inputs: the versions of torch, onnx,
# ... that made it (a new version is a reason to regenerate), wall-clock timings, and what the
# export decides from them: it times exact search against HNSW and keeps HNSW only when it is
# faster, which on 12 vectors a loaded machine flips either way (the index file is the same).
VOLATILE = (("producer",), ("fidelity", "index", "exact_search_ms"), ("fidelity", "index", "hnsw_search_ms"),
            ("fidelity", "index", "search"), ("index", "exact"),
            # the unshipped build record repeats that choice (the index settings a --base build reuses)
            ("lineage", "build_files", "build/record.json"))
TIMED_FILES = {"build/record.json"}
EXPORT_ARGS = ["--student", "none", "--views-per-image", "4", "--seed", str(SEED), "--quiet",
               "--gate", "int8_top1_agreement=0.5", "--gate", "catalog_views_top1=0"]


def make_checkpoint(config: Path, out: Path, seed: int = SEED) -> Path:
    """Random weights for an open_clip config, saved the way a user's checkpoint is."""
    import open_clip
    import torch

    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(config.stem)
    torch.save({"state_dict": model.state_dict()}, out)
    return out


def build(out: Path) -> Path:
    """Export the tiny bundle into `out` (which must not exist yet)."""
    from edge_search_export.sample_catalog import write_sample_catalog

    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="tiny-bundle-") as tmp:
        work = Path(tmp)
        write_sample_catalog(work / "catalog")
        shutil.copyfile(TINY_TEACHER, work / TINY_TEACHER.name)
        checkpoint = make_checkpoint(work / TINY_TEACHER.name, work / "tiny-vit-test.pt")
        cmd = [sys.executable, "-m", "edge_search", "export", "--catalog", "catalog/catalog.csv",
               "--out", str(out), "--name", NAME, "--teacher", TINY_TEACHER.name, "--pretrained", checkpoint.name,
               "--embedding-cache", str(work / "cache"), *EXPORT_ARGS]  # an empty cache: the same record every time
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"edge-search export failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["created"] = CREATED
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def comparable(manifest: dict) -> dict:
    """The manifest without its VOLATILE fields."""
    m = json.loads(json.dumps(manifest))
    for path in VOLATILE:
        parent = m
        for key in path[:-1]:
            parent = parent.get(key, {})
        parent.pop(path[-1], None)
    return m


def digests(bundle: Path) -> dict[str, str]:
    """sha256 of every file but manifest.json, by path relative to the bundle."""
    return {p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(bundle.rglob("*")) if p.is_file() and p.name != "manifest.json"
            and p.relative_to(bundle).as_posix() not in TIMED_FILES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=COMMITTED, help=f"default: {COMMITTED.relative_to(REPO)}")
    args = ap.parse_args()
    staging = args.out.with_name(f".{args.out.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    build(staging)
    shutil.rmtree(args.out, ignore_errors=True)
    staging.rename(args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
