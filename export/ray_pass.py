"""The Ray embedding pass of a catalog build, in a process of its own.

`export --base B --engine ray` (no --stores) sends the catalog's new images to Ray workers, and the driver
streams their results into the embedding cache (catalog_build.prefill_on_ray). What that leaves in the
driver's memory is Ray's and pyarrow's, native, and stays until the process exits (neither malloc_trim nor
ray.shutdown() gives it back), beside the index the build then makes: with the pass apart, a 100 000-image
512-d build's driver peaked at 230 MB of RssAnon instead of 341 (docs/scale-out.md). So the pass runs
in a child process that starts (or joins) Ray, fills the cache and the thumbnail folder, hands back the
image and thumbnail digests of every row, and exits; the build goes on in a driver that never
started Ray. A --stores build keeps Ray in the driver: each store is a Ray task.

    python -m edge_search_export.ray_pass JOB.pickle RESULT.pickle     (run by prefill_apart, not by hand)
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge_search.core.catalog import Catalog
from edge_search.core.columns import ShaColumn
from edge_search.errors import EdgeSearchError, ExportError
from edge_search.files import atomic_write_bytes


@dataclass(frozen=True)
class PassJob:
    cfg: object  # the export's ExportConfig
    base: Path  # the base bundle's folder
    catalog: Catalog
    cache: Path  # the embedding cache's folder
    thumbs_dir: Path
    progress: bool


@dataclass(frozen=True)
class PassResult:
    """What the pass changed, not the catalog again: the driver's own columns stay shared."""
    kept: np.ndarray | None  # the catalog positions of the rows kept (None: all; --skip-bad drops bad ones)
    sha256: ShaColumn  # the kept rows' image digests
    thumb: ShaColumn  # ... and their thumbnails', where a worker made one
    skipped: tuple[str, ...]  # the catalog's skipped lines, with the bad images now
    embedded: dict[str, int]
    record: dict  # the manifest's `build` record (engine, workers, Ray version)

    def applied(self, catalog: Catalog) -> Catalog:
        rows = catalog.rows if self.kept is None else catalog.rows.take(self.kept)
        return replace(catalog, rows=rows.changed(sha256=self.sha256, thumb=self.thumb), skipped=self.skipped)


def prefill_apart(job: PassJob) -> tuple[Catalog, dict[str, int], dict]:
    """prefill_on_ray in a child process -> the catalog as it returns it, the images embedded, the build
    record; its errors are raised here as they were raised there."""
    with tempfile.TemporaryDirectory(prefix="edge-search-ray-pass-") as tmp:
        job_file, result_file = Path(tmp) / "job.pickle", Path(tmp) / "result.pickle"
        with open(job_file, "wb") as f:
            pickle.dump(job, f)
        # stdout and stderr are the export's own: the pass's progress bar shows as the in-process one did
        code = subprocess.run([sys.executable, "-m", __name__, str(job_file), str(result_file)]).returncode
        if not result_file.is_file():
            raise ExportError(f"the Ray embedding pass stopped (exit {code}) before it reported")
        with open(result_file, "rb") as f:
            result = pickle.load(f)
    if isinstance(result, BaseException):
        raise result
    return result.applied(job.catalog), result.embedded, result.record


def _run(job: PassJob) -> PassResult:
    from .catalog_build import _teacher_of, load_base, prefill_on_ray
    from .embed_cache import EmbeddingCache
    from .engine import RayEngine
    from .heap import return_large_blocks

    return_large_blocks()
    base = load_base(job.base)
    teacher, _ = _teacher_of(job.cfg, base)
    with EmbeddingCache(job.cache) as cache, RayEngine(job.cfg.engine) as engine:
        catalog, embedded, _ = prefill_on_ray(
            engine, job.catalog, replace(base.models, folder=base.bundle.root), cache, teacher=teacher,
            thumbs_dir=job.thumbs_dir, known_thumbs=base.thumbs, skip_bad=job.cfg.skip_bad, progress=job.progress)
        record = engine.record()
    rows, sent = catalog.rows, job.catalog.rows
    kept = None if len(rows) == len(sent) else np.flatnonzero(np.isin(sent.line, rows.line))
    return PassResult(kept=kept, sha256=rows.sha256, thumb=rows.thumb, skipped=catalog.skipped, embedded=embedded,
                      record=record)


def main(argv: list[str]) -> int:
    job_file, result_file = Path(argv[0]), Path(argv[1])
    try:
        result: object = _run(pickle.loads(job_file.read_bytes()))
    except EdgeSearchError as e:  # one line at the CLI edge, as in the driver
        result = e
    except Exception as e:  # noqa: BLE001  (a bug of ours: still one line there, not this process's traceback)
        result = ExportError(f"the Ray embedding pass failed: {type(e).__name__}: {e}")
    try:
        data = pickle.dumps(result)
    except (pickle.PicklingError, TypeError, AttributeError):
        data = pickle.dumps(ExportError(str(result)))
    atomic_write_bytes(result_file, data)
    return 0


if __name__ == "__main__":
    # by its package name, so that what it pickles names classes the driver can find
    from edge_search_export import ray_pass

    sys.exit(ray_pass.main(sys.argv[1:]))
