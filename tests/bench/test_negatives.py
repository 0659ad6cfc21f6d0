"""The benchmark's dev split and its negatives folders (bench/grocery_data.py,
bench/negatives.py) on a tiny fake dataset: which photos dev takes, and what
build_negatives writes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")


def _rows(counts: dict[str, int]) -> list[tuple[str, str]]:
    # listed out of order, as nothing promises the listing is sorted
    return [(f"train/{p}/{p}_{n:03d}.jpg", p) for p, c in counts.items() for n in reversed(range(1, c + 1))]


def test_dev_is_the_end_of_each_products_photo_sequence():
    from bench.grocery_data import dev_split

    rows = _rows({"Apple": 20, "Milk": 7, "Solo": 1})
    fit, dev = dev_split(rows)
    # 15 % of 20 -> the last 3 by number; of 7 -> 1 (round(1.05)); a single photo stays in fit
    assert sorted(r[0].rsplit("/", 1)[1] for r in dev) == ["Apple_018.jpg", "Apple_019.jpg", "Apple_020.jpg",
                                                           "Milk_007.jpg"]
    assert len(fit) + len(dev) == len(rows) and not set(fit) & set(dev)
    assert [r for r in rows if r in set(dev)] == dev  # input order kept
    # another seed: still one contiguous block per product, not the last one for every seed
    blocks = []
    for seed in range(1, 6):
        _, d = dev_split(rows, seed=seed)
        nums = sorted(int(r[0][-7:-4]) for r in d if r[1] == "Apple")
        assert nums == list(range(nums[0], nums[0] + 3))
        blocks.append(nums[0])
    assert len(set(blocks)) > 1


@pytest.fixture
def fake_data(tmp_path):
    """Two products, 8 noisy 'photos' each, listed in train.txt and val.txt."""
    rng = np.random.default_rng(0)
    lines = {"train": [], "val": []}
    for split in lines:
        for cid, name in enumerate(("Apple", "Milk")):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for n in range(1, 9):
                img = np.clip(rng.normal(60 + 120 * cid, 30, (96, 128, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{name}_{n:03d}.jpg"), img)
                lines[split].append(f"{split}/{name}/{name}_{n:03d}.jpg, {cid}, 0")
    for split, rows in lines.items():
        (tmp_path / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return tmp_path


def _digest(paths) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_negatives_are_written_once_deterministically_and_differ_by_split(fake_data, tmp_path):
    from bench.negatives import SIDE, NegativesError, build_negatives, split_photos

    # dev photos are the dev split's (the last of 8 -> Name_008), train the rest; val its own listing
    assert sorted(p.name for p in split_photos(fake_data, "dev")) == ["Apple_008.jpg", "Milk_008.jpg"]
    assert len(split_photos(fake_data, "train")) == 14 and len(split_photos(fake_data, "val")) == 16

    out = tmp_path / "neg" / "dev"
    paths = build_negatives(fake_data, out, split="dev", count=20, seed=3)
    assert len(paths) == 20 and all(p.parent == out for p in paths)
    kinds = [p.stem.split("-")[2] for p in paths]
    assert kinds.count("border") == 7 and kinds.count("blur") == 5  # 35 % and 25 % of 20; textures the rest
    assert all(cv2.imread(str(p)).shape == (SIDE, SIDE, 3) for p in paths)
    assert not [p for p in out.parent.iterdir() if p.name != "dev"]  # no temp folder left behind
    again = build_negatives(fake_data, out, split="dev", count=20, seed=3)  # reused as written
    assert again == paths
    rebuilt = build_negatives(fake_data, tmp_path / "neg" / "dev2", split="dev", count=20, seed=3)
    assert _digest(rebuilt) == _digest(paths)
    val = build_negatives(fake_data, tmp_path / "neg" / "val", split="val", count=20, seed=3)
    assert len(set(_digest(val)) & set(_digest(paths))) == 0
    with pytest.raises(NegativesError, match="holds other negatives"):
        build_negatives(fake_data, out, split="dev", count=21, seed=3)
    with pytest.raises(NegativesError, match="split must be one of"):
        build_negatives(fake_data, tmp_path / "x", split="test", count=5, seed=0)
