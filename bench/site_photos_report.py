"""The Markdown table of bench/site_photos.py: its result.json as the file docs/benchmarks links."""

from __future__ import annotations

from pathlib import Path

from bench import stats
from edge_search.files import atomic_write_text

POOLED = ("answered_right", "false_reject_of_correct", "unknown_rejected", "named_wrong", "right_when_named",
          "split_scenes_rejected")


SEPARABILITY_BUDGET = 0.05  # the export's false-reject budget (NoMatchSettings.max_false_reject)


def write_markdown(result: dict, path: Path) -> None:
    r, split = result, result["split"]
    lines = [f"# Photos from the kiosk's own store ({split})", "",
             f"Written by `bench/site_photos.py` on {r['written']}; do not edit by hand. Every figure comes from "
             "one run of this command (from the repository root), which rewrites this file and its "
             "`result.json`:", "", f"    {r['command']}", "",
             f"The models and the export's calibration photos are those of `{r['run']}` "
             f"({r['run_command']}). Protocol (docs/benchmarks/README.md, `bench/site_photos.py`, written before "
             f"these figures): each catalog product's {split} photos in shooting order give their "
             f"{r.get('site_from', 'first')} {r['site']} "
             "as *site* photos, a retailer's shelf photos, and the rest as queries; the store's catalog holds the "
             "kept products, and k site photos per product are embedded by the bundle's catalog encoders and added "
             "to its index; the rule is refitted as `export --base` fits it (every candidate at the same budget, "
             "the best at 2-fold cross-validation, on the export's calibration photos of the store's products and "
             "the train negatives); the models are not retrained. "
             f"{len(r['left_out'])} products left out as in grocery.md are not in the store's catalog and get no "
             f"site photos; all their {split} photos "
             f"are unknown-product queries. The same queries for every row: {r['queries']['known']} photos of kept "
             f"products, {r['queries']['unknown']} of left-out ones, {r['queries']['all_products']} over all "
             f"products for R@1 (full catalog); *teacher R@1*: the PyTorch teacher alone on the same photos, its "
             "own embeddings of the catalog and of the same shelf photos in its index; *student / teacher*: the "
             f"bundle's R@1 over the teacher's, paired. *{split} scenes*: 300 no-product scenes `bench/negatives.py` cuts "
             f"from any {split} photo, site photos included; *query scenes*: 300 cut from the query photos only. "
             + (f"*+ store scenes*: {r['store_scenes']} more scenes cut from the site photos join the calibration's "
                "negatives (`export --base B --negatives DIR`). "
                if r.get("store_scenes") else "")
             + ("Each shelf photo is embedded by the teacher only (`--site-encoder teacher`): one index entry "
                "per photo; the studio images keep the bundle's entries. "
                if r.get("site_encoder") == "teacher" else "")
             + ("*+ store calibration*: the k site photos of each product join the calibration photos the rule "
                "is fitted on, each ranked without its own index entries (measured on dev and dropped: no export option). "
                if r.get("store_calibration") else "")
             + ("*+ store shift*: every photo moved by its store's mean embedding minus the catalog's (the split's "
                "queries, scenes and shelf photos by the site photos' mean, the calibration photos and train "
                "negatives by the calibration photos'); the teacher columns are the teacher's without a shift "
                "(measured on dev, read on val, dropped: docs/benchmarks/README.md). "
                if r.get("store_shift") else "")
             + f"95 % bootstrap intervals: {stats.ROUNDS} resamples, seed {stats.SEED}. Nothing is chosen from "
             "these figures; the shipped bundle is unchanged.", ""]
    head = ["k", "rule", "photos added", "R@1 (all products)", "teacher R@1", "student / teacher", "answered right",
            "refused of correct", "unknown refused", "named wrong", "right when named", f"{split} scenes refused", "query scenes refused",
            "top-1 score AUC right vs wrong"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, x in r["by_k"].items():
        rule = f"`{x['rule']}`" if x["rule"] else "none (not calibrated)"
        cells = [k, rule, str(x["photos_added"])] + [stats.fmt(x.get(f)) for f in (
            "recall@1_all_products", "teacher_recall@1_all_products")] + \
            [stats.fmt(x.get("student_over_teacher_recall@1"), pct=False)] + [stats.fmt(x.get(f)) for f in (
            "answered_right", "false_reject_of_correct", "unknown_rejected", "named_wrong",
            "right_when_named", "split_scenes_rejected", "query_scenes_rejected")] + \
            [stats.fmt(x["auc_top1_right_vs_wrong"], pct=False)]
        lines.append("| " + " | ".join(cells) + " |")
    rot = r.get("rotation")
    if rot:
        lines += ["", f"### Every product left out once ({rot['draws']} draws)", "",
                  f"The same rows over {rot['draws']} draws whose left-out products partition the catalog "
                  f"(a seeded permutation, {min(map(len, rot['left_out']))}–{max(map(len, rot['left_out']))} "
                  "products each; the table above left out the run's own set, not one of these): in each the "
                  "store's catalog, its site photos and the rule are those of that store, fitted as above. Each "
                  f"draw's outcomes are pooled: every {split} photo is an unknown-product query once, and a kept "
                  f"product's query counts once per draw that keeps it; *{split} scenes*: the same 300 scenes in "
                  "every draw. Intervals resample products (each with all its photos in every draw) and scenes: "
                  "whether an unknown product is refused belongs to the product more than to one photo. *Unknown "
                  "refused by "
                  "draw*: the lowest and highest draw.", ""]
        head2 = ["k", "answered right", "refused of correct", "unknown refused", "unknown refused by draw",
                 "named wrong", "right when named", f"{split} scenes refused", "photos (known / unknown)"]
        lines += ["| " + " | ".join(head2) + " |", "|" + "---|" * len(head2)]
        for k, x in rot["rows"].items():
            each = x["unknown_rejected_by_draw"]
            cells = [k] + [stats.fmt(x.get(f)) for f in POOLED[:3]] + \
                [f"{100 * min(each):.1f} – {100 * max(each):.1f} %"] + [stats.fmt(x.get(f)) for f in POOLED[3:]] + \
                [f"{x['photos']['known']} / {x['photos']['unknown']}"]  # distinct photos
            lines.append("| " + " | ".join(cells) + " |")
        lines += _separability_lines(rot, split)
    lines += ["", "Targets (issue #12, the bundle's rule): correctly named photos refused ≤ 5 %, unknown products "
                  "refused ≥ 50 %, non-product photos refused ≥ 90 %.", "",
              f"Run time {r['seconds']:.0f} s."]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _separability_lines(rot: dict, split: str) -> list[str]:
    """--separability: the pooled table of what any single-number cut could do, row by row."""
    rows = {k: x["separability"] for k, x in rot["rows"].items() if x.get("separability")}
    if not rows:
        return []
    lines = ["", "### What the embedding allows, every product left out once (`--separability`)", "",
             f"Not a rule, and chosen on these {split} photos: for each single number a rule could cut "
             "(grocery.md's separators, scored against each draw's store catalog and its negatives), one cut "
             f"over every draw's correctly named photos that refuses at most {100 * SEPARABILITY_BUDGET:g} % of "
             "them, and what that cut refuses of unknown products and of the split's scenes, pooled as above. "
             "Where even this cut leaves unknown products under 50 %, no rule on that number meets #12 at that k.",
             ""]
    head = ["k", "separator", "refused of correct", "unknown refused", f"{split} scenes refused"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, seps in rows.items():
        for sep, x in seps.items():
            lines.append("| " + " | ".join([k, sep] + [stats.fmt(x[f]) for f in (
                "false_reject_of_correct", "unknown_rejected", "scenes_rejected")]) + " |")
    teacher = {k: x["teacher_separability"] for k, x in rot["rows"].items() if x.get("teacher_separability")}
    if teacher:
        lines += ["", "### The same for the teacher alone", "",
                  "The teacher as its own query model (PyTorch, its test sides), against its own embeddings of the "
                  "catalog and of the same shelf photos; the same photos, sets, budget and pooling as the table "
                  "above. Is the miss the student's (distillation loses the separation) or the teacher's too?", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k, seps in teacher.items():
            for sep, x in seps.items():
                lines.append("| " + " | ".join([k, sep] + [stats.fmt(x[f]) for f in (
                    "false_reject_of_correct", "unknown_rejected", "scenes_rejected")]) + " |")
    return lines
