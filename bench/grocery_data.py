"""Catalog and query CSVs for the Grocery Store dataset (Klasson et al., WACV 2019).

Reads `../shared/datasets/grocery-store` in place; writes only CSVs whose
image paths point back into it (the dataset is never copied).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

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
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "name", "description", "category"])
        for c in read_classes(data):
            if classes is not None and c["id"] not in classes:
                continue
            desc_path = data / c["description"]
            desc = desc_path.read_text(encoding="utf-8", errors="replace").strip() if desc_path.is_file() else ""
            image = os.path.relpath(data / c["iconic"], out_dir)
            w.writerow([c["id"], image, c["id"].replace("-", " "), desc, c["coarse"]])
    return path


def write_queries(data: Path, out_dir: Path, split: str, classes: list[str] | None = None) -> Path:
    """<split>.csv with image,id rows from train.txt / val.txt."""
    data, out_dir = Path(data).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {c["class_id"]: c["id"] for c in read_classes(data)}
    path = out_dir / f"{split}.csv"
    with open(data / f"{split}.txt", encoding="utf-8") as src, open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "id"])
        for line in src:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 2 or not parts[0]:
                continue
            pid = names[int(parts[1])]
            if classes is None or pid in classes:
                w.writerow([os.path.relpath(data / parts[0], out_dir), pid])
    return path
