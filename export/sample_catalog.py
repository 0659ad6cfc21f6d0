"""A small synthetic catalog for the demo and for tests that must not depend
on shared data: drawn packages with distinct colours, shapes and labels."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from edge_search.core.images import encode_jpeg

PRODUCTS = [
    ("oat-milk", "Oat Milk 1L", 1.89, "Dairy alternatives", (230, 200, 120), "circle"),
    ("red-apple", "Red Apple", 0.45, "Fruit", (200, 30, 40), "disc"),
    ("green-apple", "Green Apple", 0.45, "Fruit", (90, 180, 60), "disc"),
    ("orange-juice", "Orange Juice 1L", 2.49, "Juice", (250, 150, 20), "stripes"),
    ("blue-yoghurt", "Blueberry Yoghurt", 0.99, "Dairy", (60, 80, 200), "triangle"),
    ("coffee-beans", "Coffee Beans 500g", 6.90, "Coffee", (90, 55, 30), "diamond"),
    ("green-tea", "Green Tea 20 bags", 2.20, "Tea", (40, 140, 90), "stripes"),
    ("tomato-sauce", "Tomato Sauce", 1.30, "Pantry", (190, 20, 20), "square"),
    ("pasta", "Fusilli 500g", 1.10, "Pantry", (240, 220, 60), "triangle"),
    ("sparkling-water", "Sparkling Water", 0.79, "Drinks", (120, 200, 240), "circle"),
    ("dark-chocolate", "Dark Chocolate 70%", 2.75, "Sweets", (60, 30, 40), "square"),
    ("honey", "Wildflower Honey", 5.40, "Pantry", (220, 170, 40), "diamond"),
]


def draw_product(index: int, size: int = 320) -> np.ndarray:
    pid, name, _, _, colour, shape = PRODUCTS[index]
    img = np.full((size, size, 3), 245, np.uint8)  # studio-white background
    c = tuple(int(v) for v in colour)
    accent = tuple(int(255 - v) for v in colour)
    cv2.rectangle(img, (60, 30), (size - 60, size - 30), c, -1)
    mid = size // 2
    if shape in ("circle", "disc"):
        cv2.circle(img, (mid, mid - 20), 55, accent, -1 if shape == "disc" else 12)
    elif shape == "triangle":
        pts = np.array([[mid, mid - 90], [mid - 70, mid + 30], [mid + 70, mid + 30]], np.int32)
        cv2.fillPoly(img, [pts], accent)
    elif shape == "stripes":
        for y in range(70, size - 90, 28):
            cv2.rectangle(img, (60, y), (size - 60, y + 12), accent, -1)
    elif shape == "diamond":
        pts = np.array([[mid, mid - 90], [mid - 60, mid - 20], [mid, mid + 50], [mid + 60, mid - 20]], np.int32)
        cv2.fillPoly(img, [pts], accent)
    else:
        cv2.rectangle(img, (mid - 55, mid - 75), (mid + 55, mid + 35), accent, -1)
    cv2.putText(img, name[:14], (70, size - 50), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.putText(img, f"#{index:02d}", (70, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.6, accent, 2, cv2.LINE_AA)
    return img


def write_sample_catalog(folder: Path, count: int = len(PRODUCTS)) -> Path:
    """Write images and catalog.csv into `folder`; returns the CSV path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    csv_path = folder / "catalog.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "name", "price", "category", "description"])
        for i in range(min(count, len(PRODUCTS))):
            pid, name, price, category, _, _ = PRODUCTS[i]
            rel = f"images/{pid}.jpg"
            (folder / rel).write_bytes(encode_jpeg(draw_product(i), quality=92))
            w.writerow([pid, rel, name, price, category, f"{name}, sample product {i}"])
    return csv_path
