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
against the committed one file by file: byte for byte where no floating point
is involved (products, thumbnails, the image list), and value by value within
float rounding where it is (the int8 model's scales, the index vectors, the
calibration vectors, the manifest's figures), because the last bit of a float
sum depends on the CPU the export ran on (two AVX2 machines differed, with the
same versions). What passes through the int8 model is compared by what its
kernels allow, not by the last bit: onnxruntime picks its kernels by the CPU's
instruction set (AVX2, AVX-512, VNNI), a float rounded one way or the other
before a QuantizeLinear moves an activation by one int8 step, and the steps add
up through the layers. With the same versions, an AVX-512 VNNI machine and the
machine that made the committed bundle gave catalog vectors whose directions
agree to a cosine of 0.99986 (compared by direction, INT8_COSINE), and figures
counted over the 12-product catalog's 15-48 queries that differ by at most two
near-tied queries (MEASURED, compared within MEASURED_ATOL). The only manifest
fields it skips are in VOLATILE (the producing versions and measured timings). The test environments pin every version (tests/constraints.txt), so a
new release of OpenCV or numpy cannot change the bytes under the tests.
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
# ... that made it (a new version is a reason to regenerate) and wall-clock timings (the export
# times exact search against HNSW; on 12 vectors it searches exactly whatever they say).
VOLATILE = (("producer",), ("fidelity", "index", "exact_search_ms"), ("fidelity", "index", "hnsw_search_ms"))
# --quantize int8: the default (auto) ships whichever form times faster on the machine that runs it
EXPORT_ARGS = ["--student", "none", "--quantize", "int8", "--views-per-image", "4", "--seed", str(SEED), "--quiet",
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


def build(out: Path, embed_dim: int | None = None) -> Path:
    """Export the tiny bundle into `out` (which must not exist yet). `embed_dim` widens the tiny teacher's
    embedding (default: the config's 64) for benchmarks that need a real model's width (bench/scale.py)."""
    from edge_search_export.sample_catalog import write_sample_catalog

    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="tiny-bundle-") as tmp:
        work = Path(tmp)
        write_sample_catalog(work / "catalog")
        if embed_dim is None:
            shutil.copyfile(TINY_TEACHER, work / TINY_TEACHER.name)
        else:
            config = json.loads(TINY_TEACHER.read_text())
            (work / TINY_TEACHER.name).write_text(json.dumps({**config, "embed_dim": embed_dim}))
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


# Files made by floating-point arithmetic whose last bit may differ from one CPU to another:
# compared by value (FLOAT_FILES), not by bytes, and so are their checksums wherever they appear.
FLOAT_FILES = {"model.onnx", "index.usearch", "build/calibration.npy"}
RTOL = 1e-4  # a float's rounding, compounded through a few layers: far below any change that matters
# Unit vectors the int8 model made (the catalog's and the calibration views'): per row, the same
# length within RTOL and the same direction within INT8_COSINE (two CPUs measured 0.99986; a
# vector of another image or another preprocessing is far below).
INT8_COSINE = 0.999
# Manifest figures measured through the int8 model on the tiny catalog: a near-tied query that one
# CPU's kernels answer right and another's wrong moves a figure by 1/48 to 1/15 (the calibrated
# score floor moves with them); two CPUs differed by at most 2 of 15 (0.133). Decisions made from
# the figures (which encoder, which index, gates passed, the rule chosen) stay exact.
MEASURED = ("manifest.fidelity.int8_vs_fp32.", "manifest.fidelity.catalog_encoder.", "manifest.fidelity.index.candidates[",
            "manifest.fidelity.gates.results[", "manifest.fidelity.no_match.", "manifest.search.min_score")
MEASURED_ATOL = 0.15


def digests(bundle: Path) -> dict[str, str]:
    """sha256 of every file but manifest.json, by path relative to the bundle; FLOAT_FILES by name only."""
    out = {}
    for p in sorted(bundle.rglob("*")):
        rel = p.relative_to(bundle).as_posix()
        if p.is_file() and p.name != "manifest.json":
            out[rel] = "compared by value" if rel in FLOAT_FILES else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _close(a, b, where: str) -> list[str]:
    """Where two arrays differ by more than rounding: integers by at most one step (an int8 weight or
    vector rounds the other way when its float scale moves by one ulp), floats within RTOL."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return [f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"]
    if a.dtype.kind in "iub":
        worst = int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max(initial=0))
        return [] if worst <= 1 else [f"{where}: integers differ by {worst}"]
    ok = np.allclose(a, b, rtol=RTOL, atol=RTOL * float(np.abs(b).max(initial=0)))
    return [] if ok else [f"{where}: max difference {float(np.abs(a - b).max()):.3g}"]


def _same_directions(a, b, where: str) -> list[str]:
    """Where two stacks of vectors the int8 model made differ by more than its kernels allow: a row's
    length beyond RTOL, or its direction below INT8_COSINE."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype or a.ndim != 2:
        return [f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"]
    a, b = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    if not np.allclose(na, nb, rtol=RTOL, atol=RTOL):
        return [f"{where}: lengths differ by up to {float(np.abs(na - nb).max()):.3g}"]
    cosine = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)
    return [] if cosine.min(initial=1.0) >= INT8_COSINE else [f"{where}: min cosine {float(cosine.min()):.5f}"]


def float_file_differences(fresh: Path, committed: Path) -> list[str]:
    """FLOAT_FILES compared by value: the model's graph exactly and its initializers within rounding;
    the index's vectors and the calibration vectors by length and direction."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    problems = []
    a, b = (onnx.load(str(x / "model.onnx")) for x in (fresh, committed))
    if [n.SerializeToString() for n in a.graph.node] != [n.SerializeToString() for n in b.graph.node]:
        problems.append("model.onnx: the graph differs")
    ia, ib = ({t.name: numpy_helper.to_array(t) for t in m.graph.initializer} for m in (a, b))
    if set(ia) != set(ib):
        problems.append(f"model.onnx: initializers {sorted(set(ia) ^ set(ib))[:5]} differ")
    for name in sorted(set(ia) & set(ib)):
        problems += _close(ia[name], ib[name], f"model.onnx {name}")
    import edge_search  # noqa: F401  (onnxruntime before usearch: the other order crashes)
    from usearch.index import Index

    va, vb = (Index.restore(str(x / "index.usearch")) for x in (fresh, committed))
    if len(va) != len(vb) or va.dtype != vb.dtype:
        problems.append(f"index.usearch: {len(va)} {va.dtype} vs {len(vb)} {vb.dtype}")
    else:
        keys = np.arange(len(vb), dtype=np.uint64)
        problems += _same_directions(va.get(keys), vb.get(keys), "index.usearch vectors")
    problems += _same_directions(np.load(fresh / "build/calibration.npy"), np.load(committed / "build/calibration.npy"),
                                 "build/calibration.npy")
    return problems


def manifest_differences(ours, theirs, where: str = "manifest") -> list[str]:
    """Like ==, but floats within RTOL (MEASURED ones within MEASURED_ATOL) and sha256 strings
    skipped (the files themselves are compared)."""
    import math

    if isinstance(ours, dict) and isinstance(theirs, dict):
        if set(ours) != set(theirs):
            return [f"{where}: keys {sorted(set(ours) ^ set(theirs))}"]
        return [d for k in ours for d in manifest_differences(ours[k], theirs[k], f"{where}.{k}")]
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{where}: {len(ours)} vs {len(theirs)} items"]
        return [d for i, (x, y) in enumerate(zip(ours, theirs)) for d in manifest_differences(x, y, f"{where}[{i}]")]
    if isinstance(ours, float) or isinstance(theirs, float):
        atol = MEASURED_ATOL if where.startswith(MEASURED) else 1e-6
        if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and \
                math.isclose(ours, theirs, rel_tol=RTOL, abs_tol=atol):
            return []
        return [f"{where}: {ours!r} vs {theirs!r}"]
    if isinstance(ours, str) and isinstance(theirs, str) and len(ours) == len(theirs) == 64 and \
            all(c in "0123456789abcdef" for c in ours + theirs):
        return []
    return [] if ours == theirs else [f"{where}: {ours!r} vs {theirs!r}"]


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
