"""The export's jobs on Ray (`--engine ray`): batch inference on Ray Data, store bundles as Ray tasks.

- `embed_catalog`: the catalog images the embedding cache lacks go to a Ray Data `map_batches` over a
  pool of actors; each actor loads the encoders once (the shipped ONNX model, and the teacher where the
  catalog needs it) and, per batch, reads each image file itself, hashes, decodes, embeds it exactly as
  the local engine does (catalog_build.embed_images) and makes its thumbnail. The driver streams the
  results into the embedding cache and the thumbnail folder batch by batch: it never holds more than
  the batches in flight. A bad image comes back as its row's error, reported like a bad catalog row.
- `embed_views`: the teacher's targets for the distillation views (distill.view_bank_item per image).
- `build_stores`: one Ray task per store bundle (catalog_build.build_one), on files every node sees.

Workers need the same edge-search installed (`pip install 'edge-search[export,scale]'`) and the
catalog's image paths readable; see docs/scale-out.md.
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edge_search.core.columns import TextColumn
from edge_search.core.manifest import ModelInfo, PreprocessCfg
from edge_search.errors import EdgeSearchError, ExportError

from .engine import RayEngine

MAX_TASK_RETRIES = 3  # a batch whose actor died runs again on a restarted one


@dataclass(frozen=True)
class CatalogJob:
    """What each catalog actor loads once: the shipped model (bytes in the object store) and the teacher."""

    model: Any  # ray.ObjectRef of the ONNX file's bytes
    model_info: ModelInfo
    preprocess: PreprocessCfg
    needs: tuple[str, ...]  # catalog_build.stream_needs names
    teacher: Any = None  # ray.ObjectRef of a teacher.Teacher, where "teacher" is needed
    teacher_preprocess: PreprocessCfg | None = None
    threads: int = 1
    # ray.ObjectRefs of frozensets of image sha256: images the cache holds under every need (not embedded
    # again: a worker hashes a file the driver could not vouch for, then skips it), and images whose
    # thumbnail the build has
    cached: Any = None
    thumbed: Any = None
    # ray.ObjectRef of the images' paths (a TextColumn, one object for the whole pass): a batch is only the
    # positions in it, so the driver holds no per-image input while the pass runs
    paths: Any = None


class CatalogEmbedder:
    """A Ray Data actor: a batch of rows (positions in the job's paths) -> sha256, error, a vector column per
    need, thumbnail."""

    def __init__(self, job: CatalogJob):
        import onnxruntime  # noqa: F401  (before usearch, which catalog_build imports: see README)
        import ray

        from edge_search.core.encoder import OnnxEncoder

        self.job = job
        fd, path = tempfile.mkstemp(suffix=".onnx")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(ray.get(job.model))
            self.encoder = OnnxEncoder(path, input_name=job.model_info.input, output_name=job.model_info.output,
                                       threads=job.threads)
        finally:
            os.unlink(path)
        self.paths = ray.get(job.paths)
        self.cached = ray.get(job.cached) if job.cached is not None else frozenset()
        self.thumbed = ray.get(job.thumbed) if job.thumbed is not None else frozenset()
        self.teacher_embed = None
        if job.teacher is not None:
            import torch

            from edge_search.core.preprocess import preprocess_batch

            torch.set_num_threads(job.threads)
            teacher, pp = ray.get(job.teacher), job.teacher_preprocess
            self.teacher_embed = lambda imgs: teacher.encode(preprocess_batch(imgs, pp))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from edge_search.core.images import decode_image, encode_jpeg, thumbnail
        from edge_search.errors import ImageError
        from edge_search.files import MAX_IMAGE_BYTES, read_regular

        from .catalog_build import embed_images
        from .embed_cache import sha256_bytes

        rows = np.asarray(batch["id"], np.int64)
        n = len(rows)
        shas, errors, images, thumbs = [""] * n, [""] * n, {}, [b""] * n
        for i, row in enumerate(rows):
            path = self.paths[int(row)]
            try:
                data = read_regular(Path(path), limit=MAX_IMAGE_BYTES, what="image", error=ImageError)
                shas[i] = sha256_bytes(data)
                if shas[i] in self.cached and shas[i] in self.thumbed:
                    continue  # a file of known bytes: decoded when they were first embedded
                images[i] = decode_image(data, str(path))
                if shas[i] not in self.thumbed:
                    thumbs[i] = encode_jpeg(thumbnail(images[i]))
            except EdgeSearchError as e:
                errors[i] = str(e).split(": ", 1)[-1]
        ok = [i for i in sorted(images) if shas[i] not in self.cached]
        out: dict[str, np.ndarray] = {"row": rows, "sha": np.asarray(shas, dtype=object),
                                      "error": np.asarray(errors, dtype=object),
                                      "thumb": np.asarray(thumbs, dtype=object),
                                      "embedded": np.isin(np.arange(n), ok)}
        for name in self.job.needs:
            fresh = embed_images(name, [images[i] for i in ok], [shas[i] for i in ok], self.encoder,
                                 self.job.preprocess, self.teacher_embed) if ok else {}
            width = len(next(iter(fresh.values()))) if fresh else self.job.model_info.embed_dim
            col = np.zeros((n, width), np.float32)
            for i in ok:
                col[i] = fresh[shas[i]]
            out[name] = col
        return out


def _blocks(n: int, engine: RayEngine) -> int:
    """Rows per input block: small enough that every actor gets work, never below one batch."""
    batch = engine.settings.batch
    return max(batch, min(batch * 8, math.ceil(n / (engine.workers * 4))))


def _positions(engine: RayEngine, n: int):
    """Rows 0 .. n - 1 as a Ray dataset (column `id`) of int64 blocks: 8 bytes per image on the driver, where
    a column of paths was ~200; and its number of blocks. (Ray's own `range` dataset, made by read tasks,
    hung in tests/export/test_ray_engine.py's killed-worker test: the re-run batch never came back.)"""
    import pyarrow as pa
    import ray.data

    size = _blocks(n, engine)
    tables = [pa.table({"id": pa.array(np.arange(i, min(i + size, n), dtype=np.int64))}) for i in range(0, n, size)]
    return ray.data.from_arrow(tables), len(tables)


def _pool(ds, actor, job, batch: int, threads: int, size: int):
    """`ds` through a pool of `size` actors. A batch whose actor died runs again on a restarted one, at most
    MAX_TASK_RETRIES times (Ray Data's default is forever: an image that crashes its decoder would loop)."""
    import warnings

    import ray.data

    with warnings.catch_warnings():  # Ray 2.60 deprecates ray_remote_args and names no successor for retries
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(actor, fn_constructor_args=(job,), batch_size=batch, batch_format="numpy",
                              num_cpus=threads, compute=ray.data.ActorPoolStrategy(size=size),
                              max_restarts=MAX_TASK_RETRIES, max_task_retries=MAX_TASK_RETRIES)


def _bar(total: int, desc: str, progress: bool, unit: str = "img", file=None):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not progress, file=file)


# Ray's C++ core writes to the driver's stderr (fd 2), below Python: one error-level line each time an
# actor pool starts ("constructor arguments in the object store and max_restarts > 0": Ray Data keeps
# them there itself, and retrying dead actors is what we want). It would break the CLI's one-line errors.
KNOWN_NATIVE_LINES = ("has constructor arguments in the object store and max_restarts > 0",)


@contextmanager
def native_stderr() -> Iterator[Any]:
    """While Ray runs a pipeline: fd 2 goes to a temporary file, and a stream to the real stderr is yielded
    (for progress bars). Afterwards every captured line but Ray's KNOWN_NATIVE_LINES is written to stderr."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    real = os.fdopen(os.dup(saved), "w", buffering=1)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield real
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(k in line for k in KNOWN_NATIVE_LINES):
                    sys.stderr.write(line)
            real.close()


def embed_catalog(engine: RayEngine, paths: TextColumn, job: CatalogJob, on_batch: Callable[[dict], None], *,
                  progress: bool, desc: str = "embedding catalog on Ray") -> None:
    """Every path through a CatalogEmbedder pool; `on_batch` gets each result batch (columns `row`: the
    position in `paths`, `sha`, `error`, `thumb`, one per need) as it arrives, in no set order."""
    import ray

    if not len(paths):
        return
    def put(x):
        return x if x is None or isinstance(x, ray.ObjectRef) else ray.put(x)

    job = replace(job, model=put(job.model), teacher=put(job.teacher), cached=put(job.cached),
                  thumbed=put(job.thumbed), paths=put(paths))
    ds, blocks = _positions(engine, len(paths))
    ds = _pool(ds, CatalogEmbedder, job, engine.settings.batch, job.threads, min(engine.workers, blocks))
    with native_stderr() as stderr, _bar(len(paths), desc, progress, file=stderr) as bar:
        for batch in _iterate(ds):
            on_batch(batch)
            bar.update(len(batch["row"]))


def _iterate(ds) -> Iterator[dict]:
    """The dataset's batches; a failure inside Ray becomes one line (our own errors keep their text)."""
    from ray.exceptions import RayError

    try:
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")
    except RayError as e:
        raise _cause(e, "a Ray worker") from None


def _cause(e: Exception, where: str) -> Exception:
    cause = getattr(e, "cause", None)
    if isinstance(cause, EdgeSearchError):
        return cause
    text = str(cause or e).strip().splitlines()
    line = text[-1] if text else ""
    if len(line) > 200:  # Ray's own messages run to a paragraph: its first sentence says what happened
        line = line[:line.find(". ", 40) + 1 or 200]
    return ExportError(f"{where} failed: {type(cause or e).__name__}: {line} (Ray's session logs have the rest)")


@dataclass(frozen=True)
class ViewsJob:
    teacher: Any  # ray.ObjectRef of a teacher.Teacher
    student_preprocess: PreprocessCfg
    seed: int
    threads: int = 1
    colour_cast: float = 0.0


class ViewEmbedder:
    """A Ray Data actor: images -> their augmented views' student-sized crops and teacher targets."""

    def __init__(self, job: ViewsJob):
        import ray
        import torch

        torch.set_num_threads(job.threads)
        self.job, self.teacher = job, ray.get(job.teacher)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .distill import view_bank_item

        index, view, crops, targets = [], [], [], []
        for i, count, image in zip(batch["i"], batch["count"], batch["image"]):
            c, t = view_bank_item(self.teacher, np.asarray(image), int(count), self.job.student_preprocess,
                                  self.job.seed, int(i), self.job.colour_cast)
            index += [int(i)] * len(c)
            view += list(range(len(c)))
            crops.append(c)
            targets.append(t)
        return {"i": np.asarray(index), "view": np.asarray(view), "crop": np.concatenate(crops),
                "target": np.concatenate(targets)}


def embed_views(engine: RayEngine, teacher, images: list[np.ndarray], counts: list[int], student_pp: PreprocessCfg,
                seed: int, progress: bool, colour_cast: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """distill.build_view_bank's views on Ray: (crops, targets, source image), in the local engine's order."""
    import ray

    import ray.data

    job = ViewsJob(teacher=ray.put(teacher), student_preprocess=student_pp, seed=seed, colour_cast=colour_cast)
    # images differ in shape: blocks of Python items (each block a few images), not fixed-width Arrow columns
    size = max(1, min(engine.settings.batch, math.ceil(len(images) / (engine.workers * 4))))
    items = [{"i": i, "count": int(counts[i]), "image": images[i]} for i in range(len(images))]
    blocks = max(1, math.ceil(len(items) / size))
    ds = _pool(ray.data.from_items(items, override_num_blocks=blocks), ViewEmbedder, job, size, job.threads,
               min(engine.workers, blocks))
    parts: list[dict] = []
    with native_stderr() as stderr, \
            _bar(int(sum(counts)), "teacher embeds augmented views on Ray", progress, unit="view", file=stderr) as bar:
        for batch in _iterate(ds):
            parts.append(batch)
            bar.update(len(batch["i"]))
    if not parts:
        return np.zeros((0,), np.uint8), np.zeros((0, teacher.embed_dim), np.float32), np.zeros((0,), np.int64)
    index = np.concatenate([p["i"] for p in parts])
    view = np.concatenate([p["view"] for p in parts])
    order = np.lexsort((view, index))
    return (np.concatenate([p["crop"] for p in parts])[order], np.concatenate([p["target"] for p in parts])[order],
            index[order])


def build_stores(engine: RayEngine, build_one: Callable, jobs: list[tuple], args: tuple, *,
                 progress: bool) -> list:
    """`build_one(job, *args)` for every store job as a Ray task (retried where a worker dies); results in
    job order. Each writes its store's folder: the stage must be on a file system every node sees."""
    import ray
    from ray.exceptions import RayError

    remote = ray.remote(num_cpus=1, max_retries=MAX_TASK_RETRIES)(build_one)
    shared = [ray.put(a) for a in args]
    refs = [remote.remote(job, *shared) for job in jobs]
    pending, names = list(refs), {ref: job[2] for ref, job in zip(refs, jobs)}
    with _bar(len(refs), "store bundles on Ray", progress, unit="store") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except RayError as e:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise _cause(e, f"store {names[done[0]]}") from None
            bar.update(1)
    return ray.get(refs)
