"""Index keys across catalog builds (export/key_layout.py): images the base holds keep their keys, the
delta segment is numbered densely after the base segment, removed base keys are listed, and a delta past
its share of the base re-bases. No torch: pure numbering."""

from __future__ import annotations

import numpy as np

from edge_search_export.key_layout import fresh_layout, layout_on_base


def images(keys_by_row, ids=None):
    return [{"id": (ids or {}).get(r, f"p{r}"), "sha256": f"s{r}", "keys": list(k)} for r, k in enumerate(keys_by_row)]


def test_a_fresh_layout_numbers_images_block_by_block():
    layout = fresh_layout(3, 2)
    assert layout.row_keys.tolist() == [[0, 3], [1, 4], [2, 5]]
    assert layout.key_space == 6 and not layout.segmented and layout.delta_count == 0
    # block-major rows (row r of block b at b * 3 + r) are the keys themselves
    assert layout.keys_at(np.arange(6)).tolist() == [0, 1, 2, 3, 4, 5]
    assert layout.keys_at(np.array([4, 1])).tolist() == [4, 1] and layout.delta_positions().tolist() == []


def test_kept_images_keep_their_keys_and_the_delta_follows_the_base_segment():
    base = images(fresh_layout(40, 2).row_keys.tolist())
    ids = [f"p{r}" for r in range(40) if r != 3] + ["new"]
    shas = [f"s{r}" for r in range(40) if r != 3] + ["s-new"]
    layout = layout_on_base(ids, shas, 2, base_images=base, base_count=80)
    assert layout.segmented and layout.removed.tolist() == [3, 43]
    assert layout.row_keys[0].tolist() == [0, 40] and layout.row_keys[3].tolist() == [4, 44]
    assert layout.row_keys[-1].tolist() == [80, 81]  # the new image, both blocks, after the base segment
    assert layout.key_space == 82 and layout.delta_count == 2
    # of the block-major vectors (block 0's rows, then block 1's), the delta holds the new image's two
    assert layout.delta_positions().tolist() == [39, 79]
    assert layout.keys_at(np.array([39, 79])).tolist() == [80, 81]


def test_a_delta_on_a_delta_carries_its_images_first_and_stays_dense():
    base = images([[k] for k in range(20)] + [[20], [21]], ids={20: "x", 21: "y"})  # x, y in B's delta
    ids = [f"p{r}" for r in range(20)] + ["y", "z"]  # x is gone, y carried, z new
    shas = [f"s{r}" for r in range(20)] + ["s21", "s-z"]
    layout = layout_on_base(ids, shas, 1, base_images=base, base_count=20)
    assert layout.row_keys[20:, 0].tolist() == [20, 21]  # y renumbered into x's place, z after it
    assert layout.removed.tolist() == [] and layout.delta_count == 2


def test_an_image_held_twice_keeps_both_keys_in_order():
    base = [{"id": "a", "sha256": "same", "keys": [0]}, {"id": "a", "sha256": "same", "keys": [1]},
            *images([[k] for k in range(30)])[2:]]
    ids = ["a", "a"] + [f"p{r}" for r in range(2, 30)]
    shas = ["same", "same"] + [f"s{r}" for r in range(2, 30)]
    layout = layout_on_base(ids, shas, 1, base_images=base, base_count=30)
    assert layout.segmented and layout.row_keys[:2, 0].tolist() == [0, 1] and layout.delta_count == 0


def test_a_delta_past_its_share_re_bases_and_says_why():
    base = images([[k] for k in range(20)])
    ids, shas = [f"p{r}" for r in range(17)], [f"s{r}" for r in range(17)]  # 3 of 20 removed: 15 %
    layout = layout_on_base(ids, shas, 1, base_images=base, base_count=20)
    assert not layout.segmented and "passed 10%" in layout.reason
    assert layout.row_keys[:, 0].tolist() == list(range(17))
    forced = layout_on_base(ids[:19], shas[:19], 1, base_images=base, base_count=20, force_rebase=True)
    assert not forced.segmented and forced.reason == "asked (--rebase)"
    # a build record from before keys were listed: an unsegmented base, keys by row
    old = [{"id": f"p{r}", "sha256": f"s{r}"} for r in range(20)]
    kept = layout_on_base([f"p{r}" for r in range(20)], [f"s{r}" for r in range(20)], 1, base_images=old,
                          base_count=20)
    assert kept.segmented and kept.row_keys[:, 0].tolist() == list(range(20)) and kept.delta_count == 0


def reference_layout(ids, shas, blocks, base, base_count):
    """The layout rule written the plain way (a pool of the base's keys per (id, sha256), taken in order)."""
    pool = {}
    for img in base:
        pool.setdefault((img["id"], img["sha256"]), []).append(img["keys"])
    row_keys = np.full((len(ids), blocks), -1)
    carried, new = [], []
    for r, key in enumerate(zip(ids, shas)):
        held = pool.get(key)
        if not held:
            new.append(r)
        elif held[0][0] < base_count:
            row_keys[r] = held.pop(0)
        else:
            carried.append((held.pop(0)[0], r))
    for j, r in enumerate([r for _, r in sorted(carried)] + new):
        row_keys[r] = base_count + j * blocks + np.arange(blocks)
    return row_keys


def test_the_columnar_layout_matches_the_plain_rule_on_shuffled_catalogs():
    rng = np.random.default_rng(5)
    for trial in range(30):
        n, blocks = int(rng.integers(20, 60)), int(rng.integers(1, 3))
        # some products hold an image twice, some images are shared by two products; the base has a delta
        ids = [f"p{int(i)}" for i in rng.integers(0, n // 2, n)]
        shas = [f"{int(s):064x}" for s in rng.integers(0, n // 2, n)]
        base_count = (n - 4) * blocks
        keys = np.arange(n)[:, None] + (n - 4) * np.arange(blocks)[None, :]
        keys[n - 4:] = base_count + np.arange(4 * blocks).reshape(4, blocks)  # the last 4: in the base's delta
        base = [{"id": i, "sha256": s, "keys": k.tolist()} for i, s, k in zip(ids, shas, keys)]
        order = rng.permutation(n)[: n - int(rng.integers(0, 3))]  # shuffled, a few gone
        cat_ids = [ids[i] for i in order] + ["new"]
        cat_shas = [shas[i] for i in order] + ["f" * 64]
        layout = layout_on_base(cat_ids, cat_shas, blocks, base_images=base, base_count=base_count,
                                rebase_share=10.0)
        assert layout.segmented, trial
        assert np.array_equal(layout.row_keys, reference_layout(cat_ids, cat_shas, blocks, base, base_count)), trial
