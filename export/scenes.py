"""No-product scenes (`--negatives DIR`): reading them, and joining a store's own to a base's.

The no-match rule refuses a query that looks more like an empty counter than like any product. A
bundle built on a base (`export --base B`) keeps B's calibration; a store whose shelves, floor and
light B never saw gives its own scenes with `--negatives`, and they join B's, so the rule is fitted
on both (docs/benchmarks/README.md, "site photos": shelf photos in the index without the store's
scenes took the non-product scenes refused from 98 to 33 %). Torch-free: catalog builds run without it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_search.core.catalog import IMAGE_SUFFIXES
from edge_search.core.images import load_image
from edge_search.core.preprocess import preprocess_batch
from edge_search.errors import ExportError, ImageError

log = logging.getLogger("edge_search.export")
MAX_NEGATIVES = 512  # a larger --negatives folder is sampled (seeded): the runtime scores every one per query


def read_negatives(folder: Path, seed: int, progress: bool) -> list[np.ndarray]:
    """--negatives: photos of what the camera sees when no product is shown (sampled to MAX_NEGATIVES)."""
    if not Path(folder).is_dir():
        raise ExportError(f"{folder}: --negatives needs a folder of photos")
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ExportError(f"{folder}: --negatives holds no photos ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(paths) > MAX_NEGATIVES:
        paths = [paths[i] for i in sorted(np.random.default_rng([seed, 9]).choice(len(paths), MAX_NEGATIVES,
                                                                                   replace=False))]
    out = []
    for p in tqdm(paths, desc="reading negatives", unit="img", disable=not progress):
        try:
            out.append(load_image(p))
        except ImageError as e:
            log.warning("negative skipped: %s", e)
    return out


def with_store_scenes(models, folder: Path, *, seed: int, threads: int, progress: bool):
    """`models` (a base's ModelSet) with `folder`'s scenes, embedded by its shipped model, joined to its
    calibration's negatives. All of the store's scenes are kept; the base's fill what MAX_NEGATIVES
    leaves (a seeded sample). The base must carry calibration photos: scenes alone fit no rule."""
    cal = models.calibration
    if cal is None or not len(cal.vectors):
        raise ExportError(f"--negatives {folder}: the base bundle carries no calibration photos to fit the "
                          "'no match' rule on (export it with --finetune-labeled photos, then build on it)")
    images = read_negatives(folder, seed, progress)
    if not images:
        raise ExportError(f"{folder}: --negatives holds no readable photos")
    enc = models.encoder(threads)
    own = np.concatenate([enc.embed(preprocess_batch(images[i:i + 32], models.preprocess))
                          for i in range(0, len(images), 32)]).astype(np.float32)
    joined = join_scenes(own, cal.negatives, seed)
    kept = len(joined) - len(own)
    source = f"{len(own)} store scenes ({Path(folder).name})" + \
        (f" + {kept} of the base's ({cal.negatives_source})" if kept else "")
    return replace(models, calibration=replace(cal, negatives=joined, negatives_source=source,
                                               negatives_dir=str(folder)))


def join_scenes(own: np.ndarray, base: np.ndarray | None, seed: int) -> np.ndarray:
    """A store's scene vectors, all of them, then as many of the base's as MAX_NEGATIVES leaves room for
    (a seeded sample, in the base's order)."""
    if base is None or not len(base):
        return own
    room = max(0, MAX_NEGATIVES - len(own))
    if len(base) > room:
        base = base[np.sort(np.random.default_rng([seed, 10]).choice(len(base), room, replace=False))]
    return np.concatenate([own, base])
