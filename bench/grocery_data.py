"""Catalog and query CSVs for the Grocery Store dataset (Klasson et al., WACV 2019).

Reads `../shared/datasets/grocery-store` in place; writes only CSVs whose
image paths point back into it (the dataset is never copied).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from edge_search.files import atomic_write_text

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "grocery-store"


def read_classes(data: Path) -> list[dict]:
    with open(Path(data) / "classes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    out = []
    for r in rows[1:]:
        name, cid, coarse, _, iconic, desc = (c.strip() for c in r[:6])
        out.append({"id": name, "class_id": int(cid), "coarse": coarse,
                    "iconic": iconic.lstrip("/"), "description": desc.lstrip("/")})
    return out


def write_catalog(data: Path, out_dir: Path, classes: list[str] | None = None) -> Path:
    """catalog.csv: one studio image per product; id = class name."""
    data, out_dir = Path(data).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "catalog.csv"
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["id", "image", "name", "description", "category"])
    for c in read_classes(data):
        if classes is not None and c["id"] not in classes:
            continue
        desc_path = data / c["description"]
        desc = desc_path.read_text(encoding="utf-8", errors="replace").strip() if desc_path.is_file() else ""
        image = os.path.relpath(data / c["iconic"], out_dir)
        w.writerow([c["id"], image, c["id"].replace("-", " "), desc, c["coarse"]])
    atomic_write_text(path, text.getvalue())
    return path


def write_queries(data: Path, out_dir: Path, split: str, classes: list[str] | None = None) -> Path:
    """<split>.csv with image,id rows from train.txt / val.txt."""
    data, out_dir = Path(data).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {c["class_id"]: c["id"] for c in read_classes(data)}
    path = out_dir / f"{split}.csv"
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["image", "id"])
    with open(data / f"{split}.txt", encoding="utf-8") as src:
        for line in src:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 2 or not parts[0]:
                continue
            pid = names[int(parts[1])]
            if classes is None or pid in classes:
                w.writerow([os.path.relpath(data / parts[0], out_dir), pid])
    atomic_write_text(path, text.getvalue())
    return path


DEV_SHARE = 0.15


def _photo_number(path) -> tuple[int, str]:
    """`Name_012.jpg` -> (12, name): the photo's place in its shooting sequence."""
    stem = Path(path).stem
    tail = stem.rsplit("_", 1)[-1]
    return (int(tail) if tail.isdigit() else -1, stem)


def dev_split(train_rows: list, seed: int = 0, share: float = DEV_SHARE) -> tuple[list, list]:
    """The dev split every benchmark choice is made on -> (fit_rows, dev_rows).

    Rows are `edge_search.evaluation.evaluate.Query`-like (`.image`, `.id`) or `(image, id)`
    pairs. A product's train photos were shot in one sequence, so neighbours
    (Name_011.jpg, Name_012.jpg) are near-duplicates and a random holdout leaks;
    dev is one contiguous block of each product's photos by number (`share` of
    them, at least one; a product with a single photo keeps it for fitting).
    Seed 0 takes the last block; another seed slides the block to a start drawn
    from it, so different seeds give different, still contiguous, dev blocks.
    Order within each output follows the input."""
    def image_id(r):
        return (r.image, r.id) if hasattr(r, "image") else (r[0], r[1])

    by_product: dict[str, list[int]] = {}
    for i, r in enumerate(train_rows):
        by_product.setdefault(str(image_id(r)[1]), []).append(i)
    rng = np.random.default_rng([seed, 7331])
    dev = set()
    for pid in sorted(by_product):
        idx = sorted(by_product[pid], key=lambda i: _photo_number(image_id(train_rows[i])[0]))
        n = max(1, int(round(share * len(idx)))) if len(idx) > 1 else 0
        start = len(idx) - n if seed == 0 else int(rng.integers(0, len(idx) - n + 1))
        dev.update(idx[start:start + n])
    return ([r for i, r in enumerate(train_rows) if i not in dev],
            [r for i, r in enumerate(train_rows) if i in dev])
