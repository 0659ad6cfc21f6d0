"""No-match outcomes over several left-out product sets, pooled (bench/site_photos.py --rotate,
bench/unknowns.py): the sets partition the catalog, so every photo is an unknown-product query once."""

from __future__ import annotations

import numpy as np

from bench import stats
from edge_search.evaluation.no_match import NoMatchOutcomes


def partition(ids: list[str], sets: int, seed: int) -> list[list[str]]:
    """`sets` left-out sets that together are the catalog, each product in one (a seeded permutation)."""
    order = np.random.default_rng([seed, 91]).permutation(len(ids))
    return [sorted(ids[i] for i in g) for g in np.array_split(order, sets)]


def pooled_figures(draws: list[dict], scenes: str, known_ids: list[str], unknown_ids: list[str]) -> dict:
    """One rule's outcomes over every left-out set, pooled. `draws[i]`: set i's NoMatchOutcomes under
    "photos" and its no-product scenes' refused flags under `scenes` (the same scenes in every set);
    `known_ids` / `unknown_ids`: each pooled photo's product, in the pooled order. Intervals resample
    products (a product's photos in every set together: whether an unknown product is refused belongs to
    the product more than to one photo) and scenes (each with all its sets)."""
    photos = NoMatchOutcomes(right=np.concatenate([d["photos"].right for d in draws]),
                             refused=np.concatenate([d["photos"].refused for d in draws]),
                             unknown_refused=np.concatenate([d["photos"].unknown_refused for d in draws]),
                             negatives_refused=np.concatenate([d[scenes] for d in draws]))
    sh = photos.shares()
    kc, uc = np.asarray(known_ids, object), np.asarray(unknown_ids, object)
    scene_c = np.tile(np.arange(len(draws[0][scenes])), len(draws))

    def fig(name: str, clusters: np.ndarray, stream: int) -> dict:
        return stats.clustered_share(sh[name].hits, sh[name].within, clusters, stream=stream).to_json()

    return {"answered_right": fig("answered_right", kc, 14),
            "false_reject_of_correct": fig("false_reject_of_correct", kc, 14),
            "unknown_rejected": fig("reject_recall", uc, 15),
            "named_wrong": fig("named_wrong", np.concatenate([kc, uc]), 18),
            "right_when_named": fig("right_when_named", np.concatenate([kc, uc]), 18),
            "scenes_rejected": fig("negative_reject", scene_c, 16),
            "unknown_rejected_by_set": [round(float(d["photos"].shares()["reject_recall"].value), 4)
                                        for d in draws]}


def pooled_separability(draws: list[dict], known_ids: list[str], unknown_ids: list[str], budget: float) -> dict:
    """What the embedding allows over every left-out set, not a rule: for each single-number separator
    (bench/grocery.SEPARATORS), one cut over the pooled correctly named photos that refuses at most
    `budget` of them, and what that cut refuses of unknown products and of the no-product scenes. The cut
    is chosen on the very photos it is reported on. `draws[i]`: set i's separator values ({name: array})
    under "known", "unknown" and "scenes" (the same scenes in every set), and "right", whether each known
    photo's top product is its own. Intervals resample products and scenes, as pooled_figures does."""
    right = np.concatenate([np.asarray(d["right"], bool) for d in draws])
    kc, uc = np.asarray(known_ids, object), np.asarray(unknown_ids, object)
    scene_c = np.tile(np.arange(len(draws[0]["scenes"]["top"])), len(draws))
    parts = ("known", "unknown", "scenes")
    out = {}
    if not right.any():
        return out
    for sep in draws[0]["known"]:
        if sep == "top" or any(sep not in d[p] for d in draws for p in parts):
            continue
        known, unknown, scenes = (np.concatenate([np.asarray(d[p][sep], float) for d in draws]) for p in parts)
        cut = stats.budget_cut(known[right], budget)
        out[sep] = {"cut": round(cut, 4),
                    "false_reject_of_correct": stats.clustered_share(known < cut, right, kc, stream=14).to_json(),
                    "unknown_rejected": stats.clustered_share(unknown < cut, np.ones(len(unknown), bool), uc,
                                                              stream=15).to_json(),
                    "scenes_rejected": stats.clustered_share(scenes < cut, np.ones(len(scenes), bool), scene_c,
                                                             stream=16).to_json()}
    return out
