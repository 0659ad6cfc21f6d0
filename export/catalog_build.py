"""The catalog build: a catalog + built models -> a bundle.

Embeds the catalog's images with the chosen catalog encoder, builds the index,
the product table and thumbnails, checks the catalog self-retrieval gates,
fits the no-match rule and writes, signs and publishes the bundle. Shared by
the full export (`run_export` hands over the models it has just built) and by
`edge-search export --base B`, which reuses bundle B's models: no fine-tuning,
no distillation, no quantization.

Images are streamed in batches: read, hashed, and decoded and embedded only
when the embedding cache lacks them; thumbnails of unchanged images are copied
from the base. Must not import torch: where the catalog encoder is the teacher
the caller hands in a function that embeds with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import io
import json
import logging
import operator
import os
import platform
import shutil
import tempfile
from array import array
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import onnxruntime
import usearch

import edge_search
from edge_search.core.bundle import Bundle
from edge_search.core.catalog import Catalog, CatalogRow, CatalogRows
from edge_search.core.columns import DigestSet, ShaColumn, Spill, TextColumn
from edge_search.core.encoder import OnnxEncoder
from edge_search.core.images import decode_image, encode_jpeg, thumbnail
from edge_search.core.index import SegmentedIndex, VectorIndex, load_projection
from edge_search.core.manifest import (MANIFEST_NAME, IndexDelta, IndexInfo,
                                       Manifest, ModelInfo, PreprocessCfg, TextInfo)
from edge_search.core.preprocess import preprocess_batch
from edge_search.core.products import PRODUCT_KEYS_FILE, Product, each_product, ProductTable, key_file_bytes, product_words
from edge_search.core.search import Searcher
from edge_search.core.signing import sign_bundle
from edge_search.core.thumbnails import FOLDER as THUMBS_FOLDER, ThumbnailsInfo, is_thumbnail_name, thumbnail_name
from edge_search.errors import ExportError, GateError, ImageError
from edge_search.files import (MAX_IMAGE_BYTES, MAX_MANIFEST_BYTES, MAX_TABLE_BYTES, atomic_write_bytes,
                               atomic_write_lines, atomic_write_text, default_cache_dir, open_regular_text,
                               read_regular, sha256_file)

from .calibrate import calibrate_no_match
from .catalog_products import catalog_table, rekeyed_table, spilled_table
from .config import Gates, NoMatchSettings
from .embed_cache import EmbeddingCache, sha256_bytes
from .engine import LOCAL_RECORD, open_engine
from .key_layout import BaseImages, KeyLayout, fresh_layout, layout_on_base
from .stores import store_catalog
from .vector_files import CHUNK_ROWS, VectorFile
from .views import views

log = logging.getLogger("edge_search.export")

BUILD_DIR = "build"  # beside the shipped files, never listed in the manifest's files: pack never ships it
RECORD_FILE = f"{BUILD_DIR}/record.json"  # what a catalog build needs from the model build
# held-out photo vectors and their product ids, no-product scene vectors (.npy and JSON: byte-reproducible)
CALIBRATION_FILE, CALIBRATION_IDS, NEGATIVES_BUILD = (f"{BUILD_DIR}/calibration.npy", f"{BUILD_DIR}/calibration.json",
                                                      f"{BUILD_DIR}/negatives.npy")
IMAGES_FILE = f"{BUILD_DIR}/images.jsonl"  # catalog row -> product id, image sha256 and index keys
# a segmented index's own files (the base segment keeps its base's name: the same bytes, never shipped twice)
DELTA_INDEX, DELTA_RESCORE, REMOVED_KEYS = "index-delta.usearch", "index-delta.f16.npy", "index-removed.npy"
PROJECTION_FILE = "index-projection.npy"  # a projected graph's dim x D matrix (--index-projection)
RECORD_VERSION = 1
BATCH = 32
# "mild views" of a catalog image for its self-retrieval gate: a shopper holding the very packaging
# (a crop keeping >= ~80 % of the area, a few degrees of rotation, a little light and blur)
MILD_VIEWS, MILD_VIEW_STRENGTH = 2, 0.3
INDEX_VIEWS = 2  # mild views per catalog image in a "teacher+student+views" index
NEGATIVES_FILE = "negatives.npy"  # the no-product scenes' embeddings, when the calibrated rule uses them
CATALOG_ENCODERS = ("teacher", "student", "teacher+student", "teacher+student+views")


def encoder_key(model_sha256: str, pp: PreprocessCfg) -> str:
    """The embedding cache's name for an encoder: its weights and how images are prepared for it."""
    return sha256_bytes(f"{model_sha256}:{json.dumps(asdict(pp), sort_keys=True)}".encode())


def view_seed(image_sha: str, salt: int) -> int:
    """Augmentations seeded by the image's content: the same image gets the same views in
    every build, whatever its row, so their vectors can be cached."""
    return int(image_sha[:12], 16) * 31 + salt


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    manifest: Manifest
    skipped: tuple[str, ...]
    seconds: float
    embedded: dict[str, int] | None = None  # images run through each encoder (the rest came from the cache)
    stores: tuple[str, ...] = ()  # --stores: the store bundles written under `out`


@dataclass(frozen=True)
class Calibration:
    """What the no-match rule is fitted on, in the shipped model's space."""

    vectors: np.ndarray  # held-out labeled photos
    product_ids: tuple[str, ...]  # each photo's product
    source: str
    negatives: np.ndarray | None = None  # no-product scenes
    negatives_source: str = ""
    negatives_dir: str | None = None  # the --negatives folder they came from, recorded with the rule


@dataclass(frozen=True)
class ModelSet:
    """The models a catalog build embeds with and ships, and how they were made."""

    folder: Path  # holds model_info.file (and the text files, when text is set)
    model_info: ModelInfo
    preprocess: PreprocessCfg
    catalog_encoder: str
    teacher: dict
    student: dict | None
    fidelity: dict  # the model build's own figures (interpolation, onnx, int8, quantization)
    producer: dict
    teacher_sha256: str | None = None  # the teacher's image tower weights (Teacher.weights_sha256)
    teacher_preprocess: PreprocessCfg | None = None  # how the export prepared images for the teacher
    index: dict | None = None  # dtype / exact / rescore to reuse; None: chosen by measurement
    calibration: Calibration | None = None
    text: TextInfo | None = None
    seed: int = 0

    @property
    def model_path(self) -> Path:
        return self.folder / self.model_info.file

    @property
    def encoder_sha256(self) -> str:
        return sha256_file(self.model_path)

    def encoder(self, threads: int) -> OnnxEncoder:
        return OnnxEncoder(self.model_path, input_name=self.model_info.input, output_name=self.model_info.output,
                           threads=threads)


@dataclass(frozen=True)
class CatalogSettings:
    """What a catalog build is told (the export's options that concern the catalog)."""

    out: Path
    name: str
    gates: Gates
    no_match: NoMatchSettings
    force: bool = False
    threads: int = 2
    sign_key: Path | None = None
    index_dtype: str | None = None
    build: dict | None = None  # the manifest's `build` record (engine.RayEngine.record, engine.LOCAL_RECORD)
    progress: bool = True  # bars on the long steps (the index of a large catalog)


@dataclass
class Stream:
    """One pass over the catalog's images: hashes, vectors by who embedded them, counts. Per-row facts are
    columns (a million images as str objects and dicts cost ~0.5 KB each; as digests, 64 bytes)."""

    shas: ShaColumn = field(default_factory=lambda: ShaColumn.empty(0))  # each row's image sha256
    thumbs: ShaColumn = field(default_factory=lambda: ShaColumn.empty(0))  # each row's thumbnail's (its name)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    embedded: dict[str, int] = field(default_factory=dict)  # images actually run through each encoder
    new_rows: array = field(default_factory=lambda: array("q"))  # rows whose image the shipped model embedded now
    # where the thumbnail files are: the base's (image sha -> file) where it has the image's, else the build's
    # folder under their names (not a path per image: a million images would hold a million of them)
    base_thumbs: dict[str, str] = field(default_factory=dict)
    thumbs_dir: Path | None = None

    def thumb_name(self, row: int) -> str:
        return f"{THUMBS_FOLDER}/{self.thumbs[row]}.jpg"

    def thumb_file(self, row: int) -> str:
        source = self.base_thumbs.get(self.shas[row])
        return source if source is not None else os.path.join(self.thumbs_dir, f"{self.thumbs[row]}.jpg")

    def spill(self, to: Spill) -> None:
        """The per-row columns mapped from files in `to`, in place (see columns.Spill)."""
        self.shas.spill(to)
        self.thumbs.spill(to)
        self.new_rows = to.array(np.frombuffer(self.new_rows, dtype=np.int64)) if len(self.new_rows) else self.new_rows


def _read(row: CatalogRow) -> bytes:
    return read_regular(row.image, limit=MAX_IMAGE_BYTES, what="image", error=ImageError)


def _progress(items, desc: str, progress: bool, total: int | None = None, unit: str = "img"):
    if not progress:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # the runtime-only install has no tqdm: no bar, the work is the same
        return items
    return tqdm(items, desc=desc, unit=unit, total=total)


def _batches(rows: CatalogRows, size: int) -> Iterator[tuple[int, CatalogRows]]:
    for start in range(0, len(rows), size):
        yield start, rows[start:start + size]


def stream_needs(models: ModelSet) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """The vectors a catalog build needs of each image under `models` ("student", "mild", and "teacher",
    "views" where the catalog encoder uses them), and each one's embedding-cache key (encoder, view)."""
    enc_sha = encoder_key(models.encoder_sha256, models.preprocess)
    needs = ["student", "mild"]
    if models.catalog_encoder.startswith("teacher"):
        if models.teacher_sha256 is None:
            raise ExportError("this catalog is embedded by the teacher: the build needs the teacher's weights")
        needs.append("teacher")
    if models.catalog_encoder == "teacher+student+views":
        needs.append("views")
    keys = {"student": (enc_sha, ""), "mild": (enc_sha, f"mild:{MILD_VIEWS}:{MILD_VIEW_STRENGTH}"),
            "teacher": (encoder_key(models.teacher_sha256 or "", models.teacher_preprocess or models.preprocess), ""),
            "views": (enc_sha, f"index:{INDEX_VIEWS}:{MILD_VIEW_STRENGTH}")}
    return needs, keys


def stream_catalog(catalog: Catalog, models: ModelSet, *, cache: EmbeddingCache, threads: int,
                   teacher_embed: Callable[[list[np.ndarray]], np.ndarray] | None,
                   thumbs_dir: Path, base_thumbs: dict[str, str] | None = None, progress: bool = True,
                   vectors_dir: Path | None = None) -> Stream:
    """Every catalog image's vectors under each encoder the catalog encoder and the gates need:
    "student" (the shipped model), "mild" (the shipped model on mild views, the gates),
    "teacher" and "views" (index blocks) where the catalog encoder uses them.
    Only what the cache lacks is decoded and embedded. Thumbnails are written into `thumbs_dir`
    (named by their bytes) as they are made, so no more than a batch of images is ever in memory;
    those the base has are its files, never decoded or encoded again. With `vectors_dir`, the vectors go
    to files there (vector_files.VectorFile) batch by batch instead of staying in memory."""
    enc = models.encoder(threads)
    needs, keys = stream_needs(models)
    if "teacher" in needs and teacher_embed is None:
        raise ExportError("this catalog is embedded by the teacher: the build needs the teacher's weights")
    pp = models.preprocess
    count = len(catalog.rows)
    out = Stream(shas=ShaColumn.empty(count), thumbs=ShaColumn.empty(count), embedded={n: 0 for n in needs},
                 base_thumbs=base_thumbs or {}, thumbs_dir=thumbs_dir)
    per: dict[str, VectorFile | np.ndarray] = {}

    def store(name: str, start: int, block: np.ndarray) -> None:
        if name not in per:
            shape = (count, block.shape[1])
            per[name] = VectorFile(vectors_dir / f"{name}.npy", *shape) if vectors_dir is not None else \
                np.empty(shape, np.float32)
        if vectors_dir is not None:
            per[name].write(block)
        else:
            per[name][start:start + len(block)] = block
    batches = _progress(_batches(catalog.rows, BATCH), "embedding catalog", progress, total=-(-count // BATCH),
                        unit="batch")
    for start, rows in batches:
        # an image read when the catalog was (its sha256 taken then) is read again only if it must be decoded
        data: list[bytes | None] = [None if r.sha256 else _read(r) for r in rows]
        shas = [r.sha256 or sha256_bytes(d) for r, d in zip(rows, data)]
        for i, s in enumerate(shas):
            out.shas.set(start + i, s)
        decoded: dict[str, np.ndarray] = {}

        def image(i: int) -> np.ndarray:
            if shas[i] not in decoded:
                if data[i] is None:
                    data[i] = _read(rows[i])
                    if sha256_bytes(data[i]) != shas[i]:
                        raise ExportError(f"{rows[i].image}: changed while the catalog was being built")
                decoded[shas[i]] = decode_image(data[i], str(rows[i].image))
            return decoded[shas[i]]

        for name in needs:
            enc_key, view = keys[name]
            have = cache.get(enc_key, list(dict.fromkeys(shas)), view)
            missing = [i for i, s in enumerate(shas) if s not in have and s not in {shas[j] for j in range(i)}]
            if missing:
                fresh = embed_images(name, [image(i) for i in missing], [shas[i] for i in missing], enc, pp,
                                       teacher_embed)
                cache.put(enc_key, fresh, view)
                have.update(fresh)
                out.embedded[name] += len(missing)
                if name == "student":
                    out.new_rows.extend(start + i for i in missing)
            store(name, start, np.stack([have[s] for s in shas]))
        made: dict[str, str] = {}  # image sha -> its thumbnail's, in this batch (an image twice: once)
        for i, s in enumerate(shas):
            digest = rows.thumb[i] or made.get(s)
            if digest is None and s in out.base_thumbs:
                name = f"{THUMBS_FOLDER}/{os.path.basename(out.base_thumbs[s])}"
                if not is_thumbnail_name(name):  # a base from before thumbnails were named by their bytes
                    name = thumbnail_name(Path(out.base_thumbs[s]).read_bytes())
                digest = name[len(THUMBS_FOLDER) + 1:-len(".jpg")]
            elif digest is None:
                data_ = encode_jpeg(thumbnail(image(i)))
                digest = sha256_bytes(data_)
                path = os.path.join(thumbs_dir, f"{digest}.jpg")  # (a str: pathlib interns each name)
                if not os.path.exists(path):
                    atomic_write_bytes(path, data_)
            made[s] = digest
            out.thumbs.set(start + i, digest)
    out.vectors = {n: per[n].close() if isinstance(per.get(n), VectorFile) else
                   per.get(n, np.zeros((0, models.model_info.embed_dim), np.float32)) for n in needs}
    return out


def embed_images(name: str, images: list[np.ndarray], shas: list[str], enc: OnnxEncoder, pp: PreprocessCfg,
                   teacher_embed) -> dict[str, np.ndarray]:
    """Vectors of these images under one encoder; a view set is stored as one row of its views."""
    if name == "teacher":
        vecs = teacher_embed(images)
    elif name == "student":
        vecs = enc.embed(preprocess_batch(images, pp))
    else:
        count = MILD_VIEWS if name == "mild" else INDEX_VIEWS
        salt = 1 if name == "mild" else 2
        imgs = [v for img, s in zip(images, shas) for v in views(img, count + 1, seed=view_seed(s, salt),
                                                                   strength=MILD_VIEW_STRENGTH)[1:]]
        vecs = enc.embed(preprocess_batch(imgs, pp)).reshape(len(images), -1)
    return {s: np.asarray(v, np.float32) for s, v in zip(shas, vecs)}


def prefill_on_ray(engine, catalog: Catalog, models: ModelSet, cache: EmbeddingCache, *, teacher=None,
                   thumbs_dir: Path | None, known_thumbs: dict[str, str] | None = None, needs: list[str] | None = None,
                   skip_bad: bool = False, threads: int = 1, progress: bool = True
                   ) -> tuple[Catalog, dict[str, int], int]:
    """`--engine ray`: the catalog images the embedding cache lacks (under each of `needs`, default all a build
    of `models` needs), or whose sha256 is not known yet, or, with `thumbs_dir`, whose thumbnail is not in
    `known_thumbs`, read, embedded and thumbnailed on Ray workers (ray_jobs.embed_catalog), the results
    put in the cache and `thumbs_dir` as they stream in. Returns the catalog with every row's sha256 and,
    where a worker made it, its thumbnail's (bad images reported like read_catalog's bad rows, or skipped
    with `skip_bad`), the images embedded under each need, and the thumbnails made. stream_catalog then
    finds everything it needs."""
    from edge_search.errors import CatalogError

    from .ray_jobs import CatalogJob, embed_catalog

    all_needs, keys = stream_needs(models)
    needs = list(needs or all_needs)
    known_thumbs = known_thumbs or {}
    # images whose vectors the cache held under every need; and those the workers' results added
    cached = functools.reduce(operator.and_, (cache.images(*keys[n]) for n in needs))
    rows = catalog.rows
    todo = np.zeros(len(rows), dtype=bool)
    for i, sha in enumerate(rows.sha256):
        todo[i] = sha is None or sha not in cached or (thumbs_dir is not None and sha not in known_thumbs)
    # each distinct image file once (rows sharing a path share its results)
    first, image_of_row = rows.image.distinct()
    sent = np.unique(image_of_row[todo])
    send_of_image = np.full(len(first), -1, dtype=np.int64)
    send_of_image[sent] = np.arange(len(sent))
    send = rows.image.take(first[sent])
    job = CatalogJob(model=models.model_path.read_bytes(), model_info=models.model_info, preprocess=models.preprocess,
                     needs=tuple(needs), teacher=teacher if "teacher" in needs else None,
                     teacher_preprocess=models.teacher_preprocess or models.preprocess, threads=threads,
                     cached=cached, thumbed=known_thumbs if thumbs_dir is not None else None)
    if "teacher" in needs and teacher is None:
        raise ExportError("this catalog is embedded by the teacher: the build needs the teacher's weights")
    found, thumbs = ShaColumn.empty(len(send)), ShaColumn.empty(len(send))  # by position in `send`
    errors: dict[int, str] = {}
    fresh_at = np.zeros(len(send), dtype=bool)  # by position in `send`: embedded by this pass
    made = 0

    def take(batch: dict) -> None:
        nonlocal made
        ok = [i for i, e in enumerate(batch["error"]) if not e]
        for i, e in enumerate(batch["error"]):
            if e:
                errors[int(batch["row"][i])] = str(e)
        shas = [str(x) for x in batch["sha"]]
        # an image embedded now (the same bytes under two paths arrive twice: the cache keeps one, and they
        # are counted once below)
        fresh = {shas[i]: i for i in ok if batch["embedded"][i] and shas[i] not in cached}
        for n in needs:
            cache.put(keys[n][0], {sha: batch[n][i] for sha, i in fresh.items()}, keys[n][1])
        for i in ok:
            at = int(batch["row"][i])
            found.set(at, shas[i])
            fresh_at[at] = shas[i] in fresh
            if thumbs_dir is not None and len(batch["thumb"][i]):
                data = bytes(batch["thumb"][i])
                digest = sha256_bytes(data)
                path = os.path.join(thumbs_dir, f"{digest}.jpg")  # (a str: pathlib interns each name)
                if not os.path.exists(path):
                    atomic_write_bytes(path, data)
                    made += 1
                thumbs.set(at, digest)

    embed_catalog(engine, send, job, take, progress=progress)
    distinct = len(np.unique(found.digests(np.flatnonzero(fresh_at)), axis=0))
    embedded = {n: distinct for n in needs}
    at = send_of_image[image_of_row]
    failed = np.zeros(len(rows), dtype=bool)
    if errors:
        failed = np.isin(at, np.fromiter(errors, dtype=np.int64))
    problems = [f"{catalog.source} line {int(rows.line[r])}: image {rows.image[r]}: {errors[int(at[r])]}"
                for r in np.flatnonzero(failed)]
    if problems and not skip_bad:
        listing = "; ".join(problems[:20]) + (f"; … and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise CatalogError(f"{catalog.source}: {len(problems)} bad row(s), nothing written (use --skip-bad to go "
                           f"on): {listing}")
    sent_rows = np.flatnonzero((at >= 0) & ~failed)
    rows = rows.changed(sha256=rows.sha256.overlaid(sent_rows, found, at[sent_rows]),
                        thumb=rows.thumb.overlaid(sent_rows, thumbs, at[sent_rows]))
    if failed.any():
        rows = rows.take(np.flatnonzero(~failed))
    if not len(rows):
        raise CatalogError(f"{catalog.source}: no usable product images")
    return replace(catalog, rows=rows, skipped=catalog.skipped + tuple(problems)), embedded, made


def product_table(catalog: Catalog, thumbs: ShaColumn | None = None) -> ProductTable:
    """Products in catalog order; index key i is catalog row i, whatever order a product's rows come in.
    Each product's thumbnail is its first image's (by digest in `thumbs`; none without)."""
    return catalog_table(catalog, thumbs)


def vectors_per_image(encoder: str) -> int:
    """How many index vectors each catalog image gets under a catalog encoder."""
    return {"teacher": 1, "student": 1, "teacher+student": 2, "teacher+student+views": 2 + INDEX_VIEWS}[encoder]


@dataclass(frozen=True)
class IndexVectors:
    """The index's vectors for a catalog encoder, block-major (block b's row r is vector b * rows + r), read
    by position from the stream's vectors (in memory, or files a catalog build wrote), a chunk at a time."""

    parts: tuple[tuple[Any, int | None], ...]  # (the stream's vectors, which of its views, or None: all of a row)
    rows: int
    dim: int

    @classmethod
    def of(cls, stream: Stream, encoder: str) -> "IndexVectors":
        v = stream.vectors
        names = {"student": ["student"], "teacher": ["teacher"], "teacher+student": ["teacher", "student"],
                 "teacher+student+views": ["teacher", "student"]}[encoder]
        parts = [(v[n], None) for n in names]
        if encoder == "teacher+student+views":
            parts += [(v["views"], j) for j in range(INDEX_VIEWS)]
        return cls(parts=tuple(parts), rows=len(stream.shas), dim=int(v["student"].shape[1]))

    @property
    def blocks(self) -> int:
        return len(self.parts)

    def __len__(self) -> int:
        return self.rows * self.blocks

    def _cut(self, block: np.ndarray, view: int | None) -> np.ndarray:
        return block if view is None else block.reshape(len(block), INDEX_VIEWS, self.dim)[:, view]

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The vectors at these (sorted) positions."""
        out = np.empty((len(positions), self.dim), np.float32)
        for b, (src, view) in enumerate(self.parts):
            here = (positions >= b * self.rows) & (positions < (b + 1) * self.rows)
            if here.any():
                out[here] = self._cut(np.asarray(src[positions[here] - b * self.rows]), view)
        return out

    def array(self) -> np.ndarray:
        """All of them in memory (a model build's catalog, whose encoder choice compares them whole)."""
        return self.take(np.arange(len(self)))


def index_vectors(stream: Stream, encoder: str) -> tuple[np.ndarray, int]:
    """The index's vectors for a catalog encoder in memory, in blocks of one vector per catalog image."""
    v = IndexVectors.of(stream, encoder)
    return v.array(), v.blocks


def keyed_table(table: ProductTable, layout: KeyLayout) -> ProductTable:
    """The shipped product table: `table` (keys = catalog rows) with each image's index keys, block by block."""
    keys = layout.row_keys
    if keys.shape[1] == 1 and not len(layout.removed) and np.array_equal(keys[:, 0], np.arange(len(keys))):
        return table  # one vector per image, keyed by its row: the same table
    return rekeyed_table(table, keys, layout.key_space, layout.removed)


def blocked_table(table: ProductTable, blocks: int, images: int) -> ProductTable:
    """Image i's vectors have keys i, N + i, 2N + i, ... (one per block)."""
    if blocks == 1:
        return table
    return rekeyed_table(table, np.arange(images)[:, None] + images * np.arange(blocks)[None, :], blocks * images)


class GateBook:
    """Checks each gate: raises when enforced, records the figure either way."""

    def __init__(self, enforce: bool, results: list | None = None):
        self.enforce, self.results = enforce, list(results or [])

    def check(self, gate: str, measured: float, threshold: float) -> None:
        passed = bool(measured >= threshold)
        self.results.append({"gate": gate, "measured": round(float(measured), 5), "threshold": threshold,
                             "passed": passed})
        if passed:
            return
        if self.enforce:
            raise GateError(gate, measured, threshold)
        log.warning("gate '%s' missed (%.4f < %.4f), not enforced for a random-weight teacher",
                    gate, measured, threshold)


MAX_GATE_IMAGES = 2000  # the self-retrieval gates search the whole index per query: a larger catalog is sampled


def gate_rows(count: int, seed: int, first: Sequence[int] = ()) -> np.ndarray:
    """The catalog rows the self-retrieval gates query: all of them up to MAX_GATE_IMAGES, else `first`
    (e.g. the images a catalog build embedded for the first time) and a seeded sample of the rest."""
    if count <= MAX_GATE_IMAGES:
        return np.arange(count)
    must = np.unique(np.asarray(first, dtype=np.int64))[:MAX_GATE_IMAGES]
    rest = np.setdiff1d(np.arange(count), must)
    pick = np.random.default_rng([seed, 31]).choice(rest, MAX_GATE_IMAGES - len(must), replace=False)
    return np.sort(np.concatenate([must, pick]))


def self_retrieval(searcher: Searcher, table: ProductTable, stream: Stream, rows: np.ndarray) -> tuple[float, float]:
    """Share of the catalog's own images (those in `rows`), and of mild views of them, the shipped model
    names right: the top key of the index the runtime searches, as its product (the best image decides)."""
    truth = table.key_to_product[:len(stream.shas)]
    student = stream.vectors["student"][rows]
    mild = stream.vectors["mild"][rows].reshape(len(rows) * MILD_VIEWS, -1)
    key_product = searcher.products.key_to_product

    def named(vecs: np.ndarray, src: np.ndarray) -> float:
        if not len(vecs):
            return 1.0
        keys = np.concatenate([searcher.index.search(vecs[i:i + 1024], 1)[0][:, 0] for i in range(0, len(vecs), 1024)])
        found = np.where(keys >= 0, key_product[np.maximum(keys, 0)], -1)
        return float(np.mean(found == truth[src]))

    return named(student, rows), named(mild, np.repeat(rows, MILD_VIEWS))


def write_build_record(stage: Path, models: ModelSet, catalog: Catalog, table: ProductTable, shas: list[str],
                       layout: KeyLayout) -> dict:
    """The unshipped build/ folder: what a later `--base` catalog build needs. Returns its checksums."""
    (stage / BUILD_DIR).mkdir(exist_ok=True)
    record = {"version": RECORD_VERSION, "catalog_encoder": models.catalog_encoder,
              "teacher_sha256": models.teacher_sha256, "index": models.index, "seed": models.seed,
              "teacher_preprocess": asdict(models.teacher_preprocess) if models.teacher_preprocess else None,
              "calibration_source": models.calibration.source if models.calibration else None,
              "negatives_source": models.calibration.negatives_source if models.calibration else ""}
    atomic_write_text(stage / RECORD_FILE, json.dumps(record, indent=2) + "\n")
    atomic_write_lines(stage / IMAGES_FILE, (
        json.dumps({"id": catalog.rows.id(i), "sha256": s, "keys": layout.row_keys[i].tolist()}) + "\n"
        for i, s in enumerate(shas)))
    if models.calibration is not None:
        c = models.calibration
        for name, vectors in ((CALIBRATION_FILE, c.vectors), (NEGATIVES_BUILD, c.negatives)):
            if vectors is not None:
                write_npy(stage / name, np.asarray(vectors, np.float32))
        atomic_write_text(stage / CALIBRATION_IDS, json.dumps(list(c.product_ids)) + "\n")
    return {p.relative_to(stage).as_posix(): sha256_file(p) for p in sorted((stage / BUILD_DIR).iterdir())}


def write_npy(path: Path, array: np.ndarray) -> None:
    """An .npy file (no pickles), written whole or not at all."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _listed_files(stage: Path) -> list[str]:
    """The files the manifest lists, sorted: all but build/ and the thumbnails (counted, named by their bytes),
    which are not even listed (a Path per thumbnail of a million-image catalog)."""
    names = []
    for root, dirs, files in os.walk(stage):
        if root == str(stage):
            dirs[:] = [d for d in dirs if d not in (BUILD_DIR, THUMBS_FOLDER)]
        rel = Path(root).relative_to(stage)
        names += [(rel / n).as_posix() for n in files if os.path.isfile(os.path.join(root, n))]
    return sorted(names)


def _link(source: str | Path, target: Path) -> None:
    try:  # bundles are never changed once written: the base's (or the build's) file can be shared
        os.link(source, target)
    except OSError:  # another file system: copy
        shutil.copyfile(source, target)


def write_index(stage: Path, layout: KeyLayout, vectors: IndexVectors, *, dtype: str, exact: bool, rescore: bool,
                base: Bundle | None, catalog_encoder: str, progress: bool = False,
                expansion_search: int | None = None,
                projection: np.ndarray | None = None) -> tuple[VectorIndex | SegmentedIndex, IndexInfo]:
    """The index files in `stage`, opened for the gates, and their manifest entry, built chunk by chunk as
    the vectors are read. A segmented layout links its base's index file(s) unchanged and writes the delta
    segment and the removed keys beside them. `projection`: the graph holds the vectors times it (a delta
    segment's is its base's), and every segment keeps the full vectors to rescore with."""
    rescore = rescore or projection is not None

    def keyed(positions: Sequence[int]):  # (keys, vectors) of these block-major positions, CHUNK_ROWS at a time
        bar = progress and len(positions) > 4 * CHUNK_ROWS  # (a small index is done in a moment)
        for start in _progress(range(0, len(positions), CHUNK_ROWS), "indexing", bar, unit="chunk"):
            pick = np.asarray(positions[start:start + CHUNK_ROWS], dtype=np.int64)
            yield layout.keys_at(pick), vectors.take(pick)

    if not layout.segmented:
        index = VectorIndex.build_keyed(keyed(range(len(vectors))), count=len(vectors), dim=vectors.dim, dtype=dtype,
                                        exact=exact, rescore=rescore, projection=projection)
        rescore_name = "vectors.f16.npy" if rescore else None
        index.save(stage / "index.usearch", stage / rescore_name if rescore_name else None)
        if projection is not None:
            write_npy(stage / PROJECTION_FILE, projection.astype(np.float32))
        if expansion_search is not None:  # the gates measure the search that ships
            index.index.expansion_search = expansion_search
        return index, IndexInfo(file="index.usearch", dtype=dtype, metric="cos", count=len(vectors), exact=exact,
                                rescore_file=rescore_name, catalog_encoder=catalog_encoder,
                                expansion_search=expansion_search,
                                projection_file=PROJECTION_FILE if projection is not None else None)
    info = base.manifest.index
    for name in (info.file, info.rescore_file, info.projection_file):
        if name:
            _link(base.path(name), stage / name)
    base_index = VectorIndex.open(stage / info.file, info, stage / info.rescore_file if info.rescore_file else None,
                                  projection=projection)
    fresh = layout.delta_positions()  # only the delta's vectors are read
    added = len(fresh)
    delta = VectorIndex.build_keyed(keyed(fresh), count=added, dim=vectors.dim, dtype=dtype, exact=exact,
                                    rescore=rescore, first_key=layout.base_count, projection=projection)
    if added:
        delta.save(stage / DELTA_INDEX, stage / DELTA_RESCORE if rescore else None)
    if len(layout.removed):
        write_npy(stage / REMOVED_KEYS, layout.removed.astype(np.uint64))
    delta_info = IndexDelta(file=DELTA_INDEX if added else None, count=added, removed=len(layout.removed),
                            removed_file=REMOVED_KEYS if len(layout.removed) else None,
                            rescore_file=DELTA_RESCORE if rescore and added else None)
    return (SegmentedIndex(base=base_index, delta=delta, removed=layout.removed),
            replace(info, catalog_encoder=catalog_encoder, delta=delta_info))


@dataclass(frozen=True)
class ShownThumbnails:
    """The thumbnails a bundle ships (each product's first image's), as digests, not a name each."""
    digests: DigestSet
    info: ThumbnailsInfo

    def check_named(self, bundle: Bundle, stage: Path) -> None:
        """The runtime's reader, a product line at a time, names exactly these thumbnails."""
        seen = np.zeros(len(self.digests), dtype=bool)
        for p in each_product(bundle.product_table().products):
            name = p.thumbnail
            i = self.digests.position(name[len(THUMBS_FOLDER) + 1:-len(".jpg")]) \
                if name and is_thumbnail_name(name) else None
            if i is None:
                raise ExportError(f"{stage}: product '{p.id}' names a thumbnail that was not written")
            seen[i] = True
        if not seen.all():
            raise ExportError(f"{stage}: {int((~seen).sum())} thumbnail(s) written that no product names")


def shown_thumbnails(stage: Path, table: ProductTable, stream: Stream) -> ShownThumbnails:
    """Each product's thumbnail (its first image's) linked into the stage, and no other."""
    rows = len(stream.shas)
    owner = table.key_to_product[:rows]
    first = np.full(len(table), rows, dtype=np.int64)
    for start in range(0, rows, CHUNK_ROWS):  # (the index is in memory by now: no row-long array beside it)
        np.minimum.at(first, owner[start:start + CHUNK_ROWS], np.arange(start, min(start + CHUNK_ROWS, rows)))
    voids = np.ascontiguousarray(stream.thumbs.digests(first)).view(np.dtype((np.void, 32)))[:, 0]
    distinct, where = np.unique(voids, return_index=True)
    rows_shown = first[where]
    del voids, first, where
    sizes = np.zeros(len(distinct), dtype=np.int64)
    for i, row in enumerate(rows_shown):
        name = stream.thumb_name(int(row))
        target = os.path.join(stage, name)  # (a str: pathlib interns each name)
        if not os.path.exists(target):  # (the build may have made it right here)
            _link(stream.thumb_file(int(row)), target)
        sizes[i] = os.stat(target).st_size
    shown = ShownThumbnails(DigestSet.of_distinct(distinct),
                            ThumbnailsInfo(count=len(sizes), bytes=int(sizes.sum()), max_bytes=int(sizes.max(initial=0))))
    # a product's other images' thumbnails: not shown, not shipped (listed as str: a Path per file interns
    # its name in a table that never shrinks)
    with os.scandir(os.path.join(stage, THUMBS_FOLDER)) as listing:
        for f in listing:
            if not is_thumbnail_name(f"{THUMBS_FOLDER}/{f.name}") or shown.digests.position(f.name[:-len(".jpg")]) is None:
                os.unlink(f.path)
    return shown


def finish_bundle(stage: Path, settings: CatalogSettings, models: ModelSet, catalog: Catalog, stream: Stream, *,
                  index_choice: Callable[[IndexVectors, ProductTable], IndexPlan] | None,
                  gates: GateBook, fidelity: dict, text_step=None, lineage: dict | None = None,
                  layout: KeyLayout | None = None, base: Bundle | None = None,
                  table: ProductTable | None = None) -> Manifest:
    """Index, products, thumbnails, gates, no-match rule, manifest and signature, written into `stage`.
    With a segmented `layout` (a build on `base`), the index is the base's file plus a delta segment."""
    if table is None:  # (a catalog build on a base made it already, for its lineage)
        table = product_table(catalog, stream.thumbs)
    vectors = IndexVectors.of(stream, models.catalog_encoder)
    blocks = vectors.blocks
    layout = layout or fresh_layout(len(catalog.rows), blocks)
    index_table = keyed_table(table, layout)
    projection = None
    if layout.segmented:  # the base's storage and search, as its file was built with them
        base_index = base.manifest.index
        dtype, exact, rescore = base_index.dtype, base_index.exact, base_index.rescore_file is not None
        width = base_index.expansion_search
        projection = base_projection(base)
        fidelity["index"] = {**(base.manifest.fidelity.get("index") or {}), "search_from_base": True}
    elif index_choice is not None:
        plan = index_choice(vectors, blocked_table(table, blocks, len(catalog.rows)))
        dtype, exact, rescore, projection = plan.dtype, plan.exact, plan.rescore, plan.projection
        width = None if exact else plan.report.get("expansion_search")
        fidelity["index"] = plan.report
    else:
        dtype, exact, rescore = models.index["dtype"], models.index["exact"], models.index["rescore"]
        width = None if exact else models.index.get("expansion_search")  # (absent from older build records)
    models = replace(models, index={"dtype": dtype, "exact": exact, "rescore": rescore, "expansion_search": width,
                                    "projected_dims": None if projection is None else int(projection.shape[1])})
    index, index_info = write_index(stage, layout, vectors, dtype=dtype, exact=exact, rescore=rescore, base=base,
                                    progress=settings.progress, catalog_encoder=models.catalog_encoder,
                                    expansion_search=width, projection=projection)
    if layout.reason:
        fidelity["index"] = {**fidelity.get("index", {}), "rebased": layout.reason}
    (stage / THUMBS_FOLDER).mkdir(exist_ok=True)
    shown = shown_thumbnails(stage, table, stream)
    atomic_write_lines(stage / "products.jsonl", index_table.lines())
    atomic_write_bytes(stage / PRODUCT_KEYS_FILE, key_file_bytes(index_table))

    enc = models.encoder(settings.threads)
    searcher = Searcher(encoder=enc, index=index, products=index_table, preprocess_cfg=models.preprocess)
    rows = gate_rows(len(catalog.rows), models.seed, stream.new_rows)
    self_top1, mild_top1 = self_retrieval(searcher, table, stream, rows)
    fidelity["catalog_self_top1"] = {"value": round(self_top1, 5), "images": int(len(rows)),
                                     "catalog_images": len(catalog.rows),
                                     "threshold": settings.gates.catalog_self_top1,
                                     "catalog_encoder": models.catalog_encoder, "mild_views": round(mild_top1, 5),
                                     "mild_view_count": int(len(rows)) * MILD_VIEWS,
                                     "mild_views_threshold": settings.gates.catalog_views_top1}
    gates.check("catalog self-retrieval top-1", self_top1, settings.gates.catalog_self_top1)
    gates.check("catalog mild views top-1", mild_top1, settings.gates.catalog_views_top1)
    fidelity["gates"] = {"enforced": gates.enforce, "results": gates.results}

    calibration, min_score = None, 0.0
    cal = models.calibration
    if cal is not None and len(cal.vectors):
        wanted = set(cal.product_ids)
        position = {p.id: i for i, p in enumerate(table.products) if p.id in wanted}
        # photos of products this catalog no longer holds are left out (not unknowns: they may be in the store)
        keep = np.array([pid in position for pid in cal.product_ids], dtype=bool)
        truth = np.array([position[pid] for pid in np.asarray(cal.product_ids)[keep]], dtype=np.int64)
        source = cal.source + (f" + {cal.negatives_source}" if cal.negatives is not None else "")
        calibration, min_score, fidelity["no_match"] = calibrate_no_match(
            searcher, cal.vectors[keep], truth, settings.no_match, source=source, seed=models.seed,
            negatives=cal.negatives, negatives_file=NEGATIVES_FILE)
        if cal.negatives_dir is not None:
            fidelity["no_match"]["negatives_dir"] = cal.negatives_dir
        if calibration is not None and calibration.negatives:
            write_npy(stage / NEGATIVES_FILE, cal.negatives.astype(np.float32))

    text_info = None
    if text_step is not None:
        text_info, fidelity["text"] = text_step(stage, table, stream, gates,
                                                (vectors, blocked_table(table, blocks, len(catalog.rows))))
        fidelity["gates"] = {"enforced": gates.enforce, "results": gates.results}

    del searcher, index  # (the gates are done: the index is not held while the bundle is read back below)
    build_files = write_build_record(stage, models, catalog, table, stream.shas, layout)
    files = {}
    for rel in _listed_files(stage):
        f = stage / rel
        files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    lineage = {**(lineage or {}), "build_files": build_files}
    manifest = Manifest(
        schema_version=index_info.schema_version, name=settings.name,
        created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        preprocess=models.preprocess, model=models.model_info,
        index=index_info,
        products_file="products.jsonl", product_count=len(table), products_keys=PRODUCT_KEYS_FILE,
        min_score=min_score, calibration=calibration,
        text=text_info, files=files,
        producer={**models.producer, "edge_search": edge_search.__version__, "onnxruntime": onnxruntime.__version__,
                  "usearch": usearch.__version__, "python": platform.python_version()},
        teacher=models.teacher, student=models.student,
        fidelity={**models.fidelity, **fidelity, "seed": models.seed,
                  "catalog": {"source": str(catalog.source), "images": len(catalog.rows), "products": len(table),
                              "skipped": list(catalog.skipped), "embedded": dict(stream.embedded)}},
        lineage=lineage, thumbnails=shown.info, build=settings.build,
    )
    atomic_write_text(stage / MANIFEST_NAME, manifest.to_json())
    if settings.sign_key is not None:  # signed inside the stage: the published bundle is signed from its first moment
        sign_bundle(stage, settings.sign_key)
    # the runtime's own reader accepts what we wrote; the checksums it would check were taken from these very
    # files a moment ago (and a base's linked thumbnails verified when it was loaded): not hashed twice
    shown.check_named(Bundle.open(stage, verify=False), stage)
    return manifest


# --- a base bundle's models ---------------------------------------------------------------------------
class BaseThumbs:
    """Image sha256 -> the base's thumbnail file (its path), for the images whose thumbnail it ships: sorted
    digests, not a dict of str (a million-image base). Read-only, like a Mapping; picklable (Ray ships it)."""

    def __init__(self, root: Path, images: DigestSet, thumbs: np.ndarray, named: dict[str, str]):
        self._root, self._images, self._thumbs, self._named = str(root), images, thumbs, named

    @classmethod
    def of(cls, root: Path, pairs: Iterable[tuple[str, str]]) -> "BaseThumbs":
        """From (image sha256, thumbnail name) pairs; a name that is not thumbs/<sha256>.jpg (a base from
        before thumbnails were named by their bytes) is kept as it is."""
        shas, digests, named = bytearray(), bytearray(), {}
        for sha, name in pairs:
            if is_thumbnail_name(name):
                shas += bytes.fromhex(sha)
                digests += bytes.fromhex(name[len(THUMBS_FOLDER) + 1:-len(".jpg")])
            else:
                named[sha] = os.path.join(root, name)
        keys = np.frombuffer(shas, dtype=np.uint8).reshape(-1, 32)
        images = DigestSet(keys)  # (sorted, distinct)
        # each distinct image's thumbnail, in that order (an image twice: the first product's stands)
        _, first = np.unique(keys.view(np.dtype((np.void, 32)))[:, 0], return_index=True)
        thumbs = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 32)[first]
        return cls(root, images, thumbs, named)

    def get(self, sha: str, default=None) -> str | None:
        at = self._images.position(sha) if isinstance(sha, str) else None
        if at is None:
            return self._named.get(sha, default)
        return os.path.join(self._root, THUMBS_FOLDER, f"{self._thumbs[at].tobytes().hex()}.jpg")

    def __getitem__(self, sha: str) -> str:
        path = self.get(sha)
        if path is None:
            raise KeyError(sha)
        return path

    def __contains__(self, sha) -> bool:
        return self.get(sha) is not None

    def __len__(self) -> int:
        return len(self._images) + len(self._named)


@dataclass(frozen=True)
class Base:
    bundle: Bundle
    models: ModelSet
    manifest_sha256: str
    images: BaseImages  # build/images.jsonl: each image's id, sha256 and keys
    products: ProductTable  # its product table (lines parsed when read)
    thumbs: BaseThumbs  # image sha -> the base's thumbnail file (its path), for images whose thumbnail it ships


def load_base(path: Path, *, trusted_key: Path | None = None) -> Base:
    """Bundle B's models and build record, verified (checksums, and the build files against B's manifest)."""
    bundle = Bundle.open(path, verify=True, trusted_key=trusted_key)
    m = bundle.manifest
    where = f"--base {path}"
    build = (m.lineage or {}).get("build_files")
    if not build or RECORD_FILE not in build:
        raise ExportError(f"{where}: this bundle has no build record ({RECORD_FILE}); it was exported before "
                          "catalog builds existed: export it again once, then build catalogs on it")
    for rel, digest in build.items():
        p = bundle.root / rel
        if not p.is_file() or sha256_file(p) != digest:
            raise ExportError(f"{where}: {rel} is missing or does not match the manifest's checksum")
    record = json.loads(read_regular(bundle.root / RECORD_FILE, limit=MAX_MANIFEST_BYTES, what="build record",
                                     error=ExportError))
    if record.get("version") != RECORD_VERSION:
        raise ExportError(f"{where}: build record version {record.get('version')}, this edge-search reads "
                          f"{RECORD_VERSION}")
    calibration = None
    if CALIBRATION_FILE in build and CALIBRATION_IDS in build:
        ids = json.loads(read_regular(bundle.root / CALIBRATION_IDS, limit=MAX_MANIFEST_BYTES, what="build record",
                                      error=ExportError))
        vectors = np.load(bundle.root / CALIBRATION_FILE, allow_pickle=False)
        if not isinstance(ids, list) or len(ids) != len(vectors):
            raise ExportError(f"{where}: {CALIBRATION_IDS} does not match {CALIBRATION_FILE}")
        negatives = np.load(bundle.root / NEGATIVES_BUILD, allow_pickle=False) if NEGATIVES_BUILD in build else None
        calibration = Calibration(vectors=vectors, product_ids=tuple(str(x) for x in ids),
                                  source=record.get("calibration_source") or "held-out photos",
                                  negatives=negatives, negatives_source=record.get("negatives_source") or "")
    fid = {k: m.fidelity[k] for k in ("preprocess_interpolation", "onnx_vs_torch", "int8_vs_fp32", "fp16_vs_fp32",
                                      "precision", "quantization") if k in m.fidelity}
    models = ModelSet(folder=bundle.root, model_info=m.model, preprocess=m.preprocess,
                      catalog_encoder=record["catalog_encoder"], teacher=m.teacher, student=m.student,
                      fidelity=fid, producer={k: v for k, v in m.producer.items()
                                              if k in ("torch", "open_clip", "onnx")},
                      teacher_sha256=record.get("teacher_sha256"), index=record["index"],
                      teacher_preprocess=_preprocess(record.get("teacher_preprocess")),
                      calibration=calibration, text=m.text, seed=int(record.get("seed", 0)))
    blocks = vectors_per_image(record["catalog_encoder"])
    try:
        with open_regular_text(bundle.root / IMAGES_FILE, limit=MAX_TABLE_BYTES, what="build record",
                               error=ExportError) as f:
            images = BaseImages.of((json.loads(line) for line in f if line.strip()), blocks)
    except (ValueError, KeyError, TypeError) as e:  # (a checksum matched: written by a build, or by hand)
        raise ExportError(f"{where}: {IMAGES_FILE} is not a build record ({type(e).__name__}: {e})") from None
    table = bundle.product_table()
    thumbs = BaseThumbs.of(bundle.root, _base_thumbnails(table, images))
    manifest_sha = sha256_file(bundle.root / MANIFEST_NAME)
    return Base(bundle=bundle, models=models, manifest_sha256=manifest_sha, images=images, products=table,
                thumbs=thumbs)


def _products(table: ProductTable) -> Iterator[Product]:
    """Every product, not kept once read (a base's table of a million lines)."""
    return each_product(table.products)


def _base_thumbnails(table: ProductTable, images: BaseImages) -> Iterator[tuple[str, str]]:
    """(image sha256, thumbnail name) of each base product's thumbnail: its first key's image's."""
    if images.keys is None or not len(images):
        return
    first_keys = images.keys[:, 0]
    order = np.argsort(first_keys)
    for p in _products(table):
        if p.thumbnail and p.keys:
            at = int(np.searchsorted(first_keys[order], p.keys[0]))
            if at < len(order) and first_keys[order[at]] == p.keys[0]:
                yield images.shas[int(order[at])], p.thumbnail


def _preprocess(d: dict | None) -> PreprocessCfg | None:
    if d is None:
        return None
    return PreprocessCfg(**{**d, "size": tuple(d["size"]), "mean": tuple(d["mean"]), "std": tuple(d["std"])})


# ids listed per kind of change in a manifest's lineage (its counts are always whole): a fresh build of a
# million products listed a million ids, ~15 MB of JSON that the build held and every device parses
CHANGES_LISTED = 100


def catalog_changes(base: Base, table: ProductTable, shas: Sequence[str]) -> tuple[dict, dict]:
    """Products added, removed, and changed (metadata only, or images), by id: the first CHANGES_LISTED of
    each kind in table order, and how many of each. One pass over each table, matched by id through
    columns (not a dict of a million products)."""
    new_ids = TextColumn.of(p.id for p in _products(table))
    old_ids = TextColumn.of(p.id for p in _products(base.products))
    # one code per id, over the new table's, the base's and the base images' ids
    code = TextColumn.concat([new_ids, old_ids, base.images.ids]).distinct()[1]
    n_new, n_old = len(new_ids), len(old_ids)
    new_code, old_code, image_code = code[:n_new], code[n_new:n_new + n_old], code[n_new + n_old:]
    old_at = np.full(len(code), -1, dtype=np.int64)
    old_at[old_code] = np.arange(n_old)
    match = old_at[new_code]  # each new product's line in the base's table, or -1
    # each base product's images (their sha256, in order), as one digest per product

    def digest(values: Iterable[str]) -> bytes:
        return hashlib.sha256("\x1f".join(values).encode()).digest()

    order = np.argsort(image_code, kind="stable")
    bounds = np.searchsorted(image_code[order], np.arange(len(code) + 1))
    old_digest = np.zeros((len(old_ids), 32), dtype=np.uint8)
    for j, c in enumerate(old_code):
        rows = order[bounds[c]:bounds[c + 1]]
        old_digest[j] = np.frombuffer(digest(base.images.shas[int(r)] for r in rows), dtype=np.uint8)
    kind = np.zeros(n_new, dtype=np.int8)  # 0 kept, 1 added, 2 changed images, 3 changed metadata only
    same_images = np.zeros(len(old_ids), dtype=bool)  # base lines whose product kept its images
    same_of = np.full(len(old_ids), -1, dtype=np.int64)
    for i, p in enumerate(_products(table)):
        j = int(match[i])
        if j < 0:
            kind[i] = 1
        elif digest(shas[k] for k in p.keys) != old_digest[j].tobytes():
            kind[i] = 2
        else:
            same_images[j], same_of[j] = True, i
    for j, old in enumerate(_products(base.products)):
        if same_images[j]:
            p = table.products[int(same_of[j])]
            if (p.name, p.price, p.category, p.description, p.meta) != \
                    (old.name, old.price, old.category, old.description, old.meta):
                kind[int(same_of[j])] = 3
    kept = np.zeros(len(old_ids), dtype=bool)
    kept[match[match >= 0]] = True
    removed = np.flatnonzero(~kept)
    picked = {"added": np.flatnonzero(kind == 1), "removed": removed, "changed_metadata": np.flatnonzero(kind == 3),
              "changed_images": np.flatnonzero(kind == 2)}
    changes = {k: [(old_ids if k == "removed" else new_ids)[int(i)] for i in v[:CHANGES_LISTED]]
               for k, v in picked.items()}
    return changes, {k: int(len(v)) for k, v in picked.items()}


CHOICE_VECTORS = 50_000


@dataclass(frozen=True)
class IndexPlan:
    """How a catalog build stores and searches its index (finish_bundle's index_choice returns it)."""
    dtype: str
    exact: bool
    rescore: bool
    report: dict  # fidelity.index
    projection: np.ndarray | None = None  # dim x D: the graph is built on projected vectors


def base_projection(base: Bundle) -> np.ndarray | None:
    """A base bundle's index projection (its builds keep it: the keys of its file and a delta's must be
    searched in one space), or None."""
    name = base.manifest.index.projection_file
    return load_projection(base.path(name)) if name else None


def base_index_choice(base: Base, stream: Stream, threshold: float):
    """A catalog build's index on a base: the base's storage (dtype, rescore: measured on real queries when
    its model was built), and its exact-or-HNSW choice while the catalog is within twice the base's size
    either way; beyond that, decided again by timing both on mild views of this catalog (a base of 12
    products searched exactly would have 100 000 searched exactly too)."""
    from .index_choice import RowSource, choose_search

    index = base.models.index
    base_count = base.bundle.manifest.index.count
    report = dict(base.bundle.manifest.fidelity.get("index") or {})

    projection = base_projection(base.bundle)

    def choice(vectors: IndexVectors, index_table: ProductTable) -> IndexPlan:
        if base_count / 2 <= len(vectors) <= 2 * base_count:
            return IndexPlan(index["dtype"], index["exact"], index["rescore"], {
                **report, "search_from_base": True, "expansion_search": base.bundle.manifest.index.expansion_search},
                projection)
        rng = np.random.default_rng([base.models.seed, 41])
        rows = np.sort(rng.choice(vectors.rows, min(250, vectors.rows), replace=False))
        mild = np.asarray(stream.vectors["mild"][rows]).reshape(-1, vectors.dim)
        # timed on at most CHOICE_VECTORS of the index (a seeded sample): beyond that, exact search only
        # gets slower while HNSW barely does, so a sample that picks HNSW speaks for the whole index
        keep = np.arange(len(vectors)) if len(vectors) <= CHOICE_VECTORS else \
            np.sort(rng.choice(len(vectors), CHOICE_VECTORS, replace=False))
        key_product = index_table.key_to_product[keep]  # (its keys are block-major positions)
        exact, timing = choose_search(RowSource.of(vectors).subset(keep), key_product, mild, dtype=index["dtype"],
                                      rescore=index["rescore"], threshold=threshold, projection=projection)
        return IndexPlan(index["dtype"], exact, index["rescore"], {**report, **timing, "search_from_base": False,
                                                                   "timed_on_vectors": int(len(keep))}, projection)

    return choice


def text_from_base(base: Base, threads: int):
    """A --base build of a bundle with words: its text tower and tokenizer as they are, the product-text
    index embedded again for this catalog (no torch: the tower is ONNX)."""
    from edge_search.core.text import TextEncoder

    info = base.models.text

    def step(stage: Path, table: ProductTable, stream: Stream, gates: GateBook, shipped):
        for name in (info.file, info.tokenizer):
            (stage / name).write_bytes(base.bundle.path(name).read_bytes())
        enc = TextEncoder(stage / info.file, stage / info.tokenizer, input_name=info.input, output_name=info.output,
                          context_length=info.context_length, threads=threads, trim=info.trim_padding)
        vecs = enc.embed([product_words(p.name, p.description) for p in table.products])
        VectorIndex.build(vecs, dtype="f32", exact=True).save(stage / info.index)
        fid = {k: v for k, v in base.bundle.manifest.fidelity.get("text", {}).items()
               if k in ("tokenizer", "onnx_vs_torch", "quantization", "int8_vs_fp32")}
        fid["product_text_weight"] = {"chosen": info.product_text_weight, "from_base": True}
        return info, fid

    return step


# --- `export --base B` and `--stores`: catalog builds on a base's models --------------------------------
def run_catalog_build(cfg, progress: bool = True) -> ExportSummary:
    """`edge-search export --catalog C --out B2 --base B`: C embedded with B's models (the embedding cache
    saves every image it has seen), indexed with B's index settings, calibrated on B's held-out photos
    (and B's no-product scenes, joined by --negatives' own: export/scenes.py).
    With --stores, one such bundle per store under --out; without --base the chain's models are built
    first, once, into --out/_chain (the base of later nightly --base runs)."""
    import time

    from edge_search.core.catalog import read_catalog
    from edge_search.core.signing import check_private_key
    from edge_search.files import check_new_folder

    from .heap import return_large_blocks

    t0, start_ns = time.perf_counter(), time.time_ns()
    return_large_blocks()  # (the driver's memory as the catalog grows: see heap.py)
    out = Path(cfg.out)
    if out.exists() and not cfg.force:
        raise ExportError(f"{out}: already exists (pass --force to replace it)")
    check_new_folder(out, "--out", ExportError)
    if cfg.sign_key is not None:
        check_private_key(cfg.sign_key)
    if cfg.previous is not None and not Path(cfg.previous).is_dir():
        raise ExportError(f"{cfg.previous}: --previous is not a folder of store bundles")
    base = load_base(Path(cfg.base)) if cfg.base is not None else None
    if base is not None and cfg.negatives is not None:  # the store's own scenes join the base's calibration
        from .scenes import with_store_scenes

        base = replace(base, models=with_store_scenes(base.models, Path(cfg.negatives), seed=cfg.seed,
                                                      threads=cfg.threads, progress=progress))
    with EmbeddingCache(cfg.embedding_cache or default_cache_dir()) as cache, \
            tempfile.TemporaryDirectory(prefix=".columns-", dir=out.parent) as columns:
        # the base's images decoded when it was built: the same bytes are not decoded again to check them,
        # nor read again when the cache vouches for an unchanged file; on Ray the workers read and decode
        catalog = read_catalog(cfg.catalog, skip_bad=cfg.skip_bad, known=cache.file_sha, read_images=not cfg.engine.ray,
                               decoded=base.images.digests() if base is not None else frozenset())
        # on files before anything copies a column, so that the catalogs made from this one share them
        catalog.rows.spill(Spill(columns))
        for line in catalog.skipped:
            log.warning("skipped %s", line)
        stores = None
        if cfg.stores is not None:
            from .stores import read_stores

            stores, skipped = read_stores(cfg.stores, catalog, skip_bad=cfg.skip_bad)
            catalog = replace(catalog, skipped=catalog.skipped + skipped)
        # one build on Ray embeds in a process of its own (ray_pass.py) and Ray never starts here; a --stores
        # build keeps Ray here for its per-store tasks
        apart = cfg.engine.ray and stores is None and base is not None
        with contextlib.nullcontext() if apart else open_engine(cfg.engine) as engine:
            manifest, embedded, catalog = _build_into(cfg, out, base, catalog, stores, cache, progress, engine,
                                                      apart=apart)
        rows = catalog.rows  # (those the cache vouched for are recorded already)
        cache.remember_files(((rows.image[i], rows.sha256[i]) for i in np.flatnonzero(~rows.vouched)
                              if rows.sha256[i]), start_ns)
    return ExportSummary(out=out, manifest=manifest, skipped=catalog.skipped, seconds=time.perf_counter() - t0,
                         embedded=embedded, stores=tuple(stores) if stores is not None else ())


def _build_into(cfg, out: Path, base: "Base | None", catalog: Catalog, stores: dict | None, cache: EmbeddingCache,
                progress: bool, engine=None, apart: bool = False) -> tuple[Manifest, dict[str, int], Catalog]:
    """The catalog build(s) into a staged --out, published whole. With a Ray `engine`, the catalog's new
    images are embedded on Ray first (bad ones dropped or reported), and each store is a Ray task; with
    `apart`, that embedding runs on Ray from a child process (ray_pass.py) and the build here.
    -> the last manifest, the images embedded, and the catalog as built."""
    from edge_search.files import staged_directory

    with staged_directory(out, force=cfg.force) as stage:
        if base is None:  # --stores without --base: the chain's models, once
            from .pipeline import run_export

            run_export(replace(cfg, out=stage / CHAIN, stores=None, force=False, name=CHAIN), progress=progress)
            base = load_base(stage / CHAIN)
        embedded: dict[str, int] = {}
        known_thumbs = base.thumbs
        record = None
        with tempfile.TemporaryDirectory(prefix=".thumbs-", dir=stage.parent) as thumbs_dir:
            if apart:  # the catalog's every image is in the cache afterwards: the teacher is not loaded here
                from .ray_pass import PassJob, prefill_apart

                catalog, embedded, record = prefill_apart(PassJob(
                    cfg=cfg, base=base.bundle.root, catalog=catalog, cache=cache.path.parent,
                    thumbs_dir=Path(thumbs_dir), progress=progress))
                teacher_embed = _prefilled if base.models.catalog_encoder.startswith("teacher") else None
            else:
                teacher, teacher_embed = _teacher_of(cfg, base)
            if engine is not None:
                catalog, embedded, _ = prefill_on_ray(
                    engine, catalog, replace(base.models, folder=base.bundle.root), cache, teacher=teacher,
                    thumbs_dir=Path(thumbs_dir), known_thumbs=known_thumbs, skip_bad=cfg.skip_bad, progress=progress)
                teacher_embed = _prefilled if teacher_embed is not None else None
            if stores is None:
                jobs = [(stage, catalog, cfg.name or out.name)]
            else:
                jobs = [(stage / store, store_catalog(catalog, items), store) for store, items in stores.items()]
            manifest, more = build_on_base(cfg, base, jobs, cache, thumbs_dir=Path(thumbs_dir), progress=progress,
                                           stores=stores, engine=engine, teacher_embed=teacher_embed,
                                           known_thumbs=known_thumbs, record=record)
        for k, v in more.items():
            embedded[k] = embedded.get(k, 0) + v
        return manifest, embedded, catalog


def _teacher_of(cfg, base: "Base"):
    """The base's teacher and a function embedding with it, where its catalog is embedded by it; else None, None."""
    if not base.models.catalog_encoder.startswith("teacher"):
        return None, None
    from .commands import need_export_extra

    need_export_extra(f"--base {cfg.base} (its catalog is embedded by its teacher)")
    from .pipeline import base_teacher  # torch: only where the base's catalog was embedded by its teacher

    return base_teacher(cfg, base)


CHAIN = "_chain"  # --stores without --base: the chain-wide bundle (store ids never start with "_")


def previous_store(previous: Path | None, store: str, base: Base) -> Base | None:
    """The store's bundle in the previous release (`--previous DIR`: DIR/<store>), when it was built on
    the same model as `base`: its index keys are kept. None without one (a new store), or with another model."""
    if previous is None or not (previous / store / MANIFEST_NAME).is_file():
        return None
    old = load_base(previous / store)
    if old.bundle.manifest.files.get(old.models.model_info.file, {}).get("sha256") != \
            base.bundle.manifest.files.get(base.models.model_info.file, {}).get("sha256"):
        log.warning("%s: built on another model than --base; this store's index starts afresh", previous / store)
        return None
    return old


def build_on_base(cfg, base: "Base", jobs: list[tuple[Path, Catalog, str]], cache: EmbeddingCache, *,
                  thumbs_dir: Path, progress: bool, stores: dict | None = None, engine=None, teacher_embed=None,
                  known_thumbs: dict[str, str] | None = None, record: dict | None = None
                  ) -> tuple[Manifest, dict[str, int]]:
    """Catalog builds on the base's models, each into its (staged) folder; -> the last manifest and the
    images embedded in all (each image at most once: the cache serves the next store, and a thumbnail
    made for one store is linked into the next from `thumbs_dir`). With a Ray `engine` and several
    jobs, each store is built by a Ray task."""
    build = record or (engine.record() if engine is not None else LOCAL_RECORD)
    args = (cfg, base, cache.path.parent, thumbs_dir, teacher_embed, stores,
            known_thumbs if known_thumbs is not None else base.thumbs, build)
    if engine is not None and len(jobs) > 1:
        from .ray_jobs import build_stores

        results = build_stores(engine, build_one, jobs, args + (False,), progress=progress)
    else:
        results = [build_one(job, *args, progress, cache=cache) for job in jobs]
    embedded: dict[str, int] = {}
    for _, counts in results:
        for k, v in counts.items():
            embedded[k] = embedded.get(k, 0) + v
    return results[-1][0], embedded


def _prefilled(images):
    raise ExportError("internal: the teacher was needed after the Ray engine embedded the catalog")


def build_one(job: tuple[Path, Catalog, str], cfg, base: "Base", cache_dir: Path, thumbs_dir: Path, teacher_embed,
              stores: dict | None, known_thumbs: dict[str, str], build: dict, progress: bool,
              cache: EmbeddingCache | None = None) -> tuple[Manifest, dict[str, int]]:
    """One catalog build on the base's models into `job`'s folder (a Ray task's unit: it opens the cache
    itself when not given one). -> its manifest and the images it embedded."""
    if cache is None:
        with EmbeddingCache(cache_dir) as own:
            return build_one(job, cfg, base, cache_dir, thumbs_dir, teacher_embed, stores, known_thumbs, build,
                             progress, cache=own)
    folder, cat, name = job
    folder.mkdir(exist_ok=True)
    (folder / base.models.model_info.file).write_bytes(base.models.model_path.read_bytes())
    models = replace(base.models, folder=folder)
    # the catalog's vectors wait on disk (for the index, read chunk by chunk), not in memory
    with tempfile.TemporaryDirectory(prefix=".vectors-", dir=thumbs_dir.parent) as vectors_dir:
        stream = stream_catalog(cat, models, cache=cache, threads=cfg.threads, teacher_embed=teacher_embed,
                                thumbs_dir=thumbs_dir, base_thumbs=known_thumbs, progress=progress,
                                vectors_dir=Path(vectors_dir))
        # what the index is built beside goes to files too: the columns this build made (a store's rows,
        # the digests the Ray pass found, the stream's) and, in _finish_one, the product table and the keys
        spill = Spill(vectors_dir)
        cat.rows.spill(spill)
        stream.spill(spill)
        return _finish_one(folder, cfg, base, cat, name, models, stream, stores, build, progress, spill)


def _finish_one(folder: Path, cfg, base: "Base", cat: Catalog, name: str, models: ModelSet, stream: Stream,
                stores: dict | None, build: dict, progress: bool, spill: Spill) -> tuple[Manifest, dict[str, int]]:
    random_teacher = bool(base.models.teacher.get("random_weights"))
    table = spilled_table(product_table(cat, stream.thumbs), spill)
    changes, counts = catalog_changes(base, table, stream.shas)
    lineage = {"base": {"name": base.bundle.manifest.name, "manifest_sha256": base.manifest_sha256},
               "changes": changes, "change_counts": counts}
    if stores is not None or name != (cfg.name or Path(cfg.out).name):
        lineage["store"] = name
    settings = CatalogSettings(out=folder, name=name, gates=cfg.gates, no_match=cfg.no_match,
                               force=cfg.force, threads=cfg.threads, sign_key=cfg.sign_key,
                               build=build, progress=progress)
    text_step = text_from_base(base, cfg.threads) if base.models.text is not None else None
    fidelity = {k: base.bundle.manifest.fidelity[k] for k in ("catalog_encoder", "index")
                if k in base.bundle.manifest.fidelity}
    keys_from = base if stores is None else previous_store(cfg.previous, name, base)
    if keys_from is not None and keys_from is not base:
        lineage["keys_from"] = {"name": keys_from.bundle.manifest.name, "manifest_sha256": keys_from.manifest_sha256}
    layout = fresh_layout(len(cat.rows), vectors_per_image(models.catalog_encoder),
                          f"no bundle of store {name} in --previous" if cfg.previous is not None else "") \
        if keys_from is None else \
        layout_on_base(cat.rows.row_ids(), stream.shas, vectors_per_image(models.catalog_encoder),
                       base_images=keys_from.images, base_count=keys_from.bundle.manifest.index.count,
                       force_rebase=cfg.rebase)
    layout = replace(layout, row_keys=spill.array(layout.row_keys), removed=spill.array(layout.removed))
    manifest = finish_bundle(folder, settings, models, cat, stream,
                             index_choice=base_index_choice(base, stream, cfg.gates.index_top1_agreement),
                             gates=GateBook(cfg.gates.enforce and not random_teacher), fidelity=fidelity,
                             text_step=text_step, lineage=lineage, layout=layout,
                             base=keys_from.bundle if keys_from is not None else None, table=table)
    return manifest, dict(stream.embedded)
