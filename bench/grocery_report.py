"""The grocery benchmark's report as Markdown (the README links it) and as a console summary.

Owns only the wording and layout: every figure comes from report.json as
bench/grocery.py measured it; nothing here computes a figure.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bench.stats import fmt
from edge_search.files import atomic_write_text

TARGETS = {"val_negatives_rejected": 0.90, "unknown_rejected": 0.50, "false_reject_of_correct": 0.05}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |"
                                                                          for r in rows]


def _targets(row: dict, every: dict | None = None) -> str:
    """The three no-match targets for the bundle's rule; `every`: the same rule with every product left out
    once, which then judges the unknown-product target (it rests on every product, the set on a few)."""
    neg, unk, frr = row.get("val_negatives_rejected"), row.get("unknown_rejected"), row["false_reject_of_correct"]
    judged = every["unknown_rejected"] if every else unk
    unknown = (f"unknown products rejected {fmt(every['unknown_rejected'])} with every product left out once, "
               f"{fmt(unk)} with the set above" if every else f"unknown products rejected {fmt(unk)}")
    parts = [f"non-product photos rejected {fmt(neg)} (target ≥ 90 %: {'met' if neg and neg['value'] >= 0.9 else 'not met'})",
             f"{unknown} (target ≥ 50 %: {'met' if judged and judged['value'] >= 0.5 else 'not met'})",
             f"correctly named photos rejected {fmt(frr)} (target ≤ 5 %: {'met' if frr and frr['value'] <= 0.05 else 'not met'})"]
    return "; ".join(parts)


def markdown(r: dict) -> str:
    p, nm = r["protocol"], r["no_match"]
    cmd = r["command"]
    lines = [
        "# Grocery Store benchmark",
        "",
        f"Written by `bench/grocery.py` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; do not edit by "
        "hand. Every figure below comes from one run of this command (from the repository root, after "
        "`bash tests/run.sh` built `.venv`), which rewrites this file and `report.json` in its `--out`:",
        "",
        f"    {cmd}",
        "",
        "Each table names its key in `report.json`.",
        "",
        "## Protocol",
        "",
        f"* **Splits.** The dataset's train photos are split once by `bench/grocery_data.dev_split` "
        f"(a contiguous block of each product's photo sequence): {p['fit_photos']} *fit* photos, the only ones "
        f"any model or rule is trained or calibrated on, and {p['dev_photos']} *dev* photos, on which every "
        f"choice is made. The {p['val_photos']} *val* photos are used once, for this report.",
        f"* **Intervals.** `[low, high]` is a 95 % bootstrap interval: {p['bootstrap']['rounds']} resamples of the "
        f"photos (images), seed {p['bootstrap']['seed']} (`bench/stats.py`); ratios resample the same photos "
        "for both models.",
        f"* **Catalog.** One studio image per product ({r['dataset']['products']} products).",
        f"* **No-product photos.** Export negatives: `bench/negatives.py` split `train` (built from fit photos); "
        f"report: split `val` ({nm['val_negatives']} images from val photos), and an independent check on "
        f"{nm['skimage_images']} sample images bundled with a package, which nobody trained or tuned on "
        f"({p['skimage'] or 'not run'}).",
        f"* **Teacher.** {_teacher_line(r)}",
        "",
        "## Models on val (`models`)",
        "",
    ]
    rows = [[name, "×".join(map(str, row["input"])), fmt(row["recall@1"]), fmt(row["recall@5"]),
             f"{row['mb']:.2f}" if row.get("mb") is not None else "–"] for name, row in r["models"].items()]
    lines += _table(["model", "input", "R@1", "R@5", "MB"], rows)
    b = r["bundle"]
    lines += ["", "## The bundle as shipped (`bundle`)", "",
              "Raw R@1 ranks without the no-match rule; *answered right* applies the bundle's rule (a refused "
              "photo counts as not answered right). *Named wrong*: val photos given another product's name, what "
              "a shopper trusts least; *right when named*: of the names the bundle gave, the share that were "
              "right.", ""]
    lines += _table(["raw R@1", "answered right", "correctly named photos refused", "named wrong",
                     "right when named", "student / teacher R@1"],
                    [[fmt(b["raw_recall@1"]), fmt(b["answered_right"]), fmt(b["false_reject_of_correct"]),
                      fmt(b.get("named_wrong")), fmt(b.get("right_when_named")),
                      fmt(b["student_over_teacher_recall@1"], pct=False)]])
    kq = r["kiosk"]
    lines += ["", "## The kiosk's path (`kiosk`)", "",
              "The bundle as shipped, full catalog, through `edge_search.kiosk.loop.KioskLoop.lookup`: the rule, and "
              f"when the whole frame is refused, its retries ({', '.join(kq['retries'])}), each another chance to "
              "name a product" + (": a retry answers only with the product the whole frame ranked first (retry "
                                  "rule `agree`, chosen on dev by `bench/retries.py`)" if kq.get("retry_rule") == "agree"
                                  else f" (retry rule `{kq.get('retry_rule', 'any')}`)") + ".", ""]
    rows = [("as shipped", kq)] + ([("with `--confirm` (an opt-in: an answer stands only when the frame's centre "
                                    "ranks the same product first)", kq["confirm"])] if kq.get("confirm") else [])
    lines += _table(["kiosk", "val photos answered right", "named wrong", "right when named", "val non-product refused",
                     "sample images refused"],
                    [[name, fmt(x["answered_right"]), fmt(x.get("named_wrong")), fmt(x.get("right_when_named")),
                      fmt(x["val_negatives_rejected"]), fmt(x["skimage_rejected"])] for name, x in rows])
    lines += ["", "## Who embeds the catalog (`catalog_embedded_by`)", "",
              "The bundle's student queries each catalog; self top-1: the catalog's own images (and two mild "
              "views of each) name their product. The export keeps the best on its held-out fit photos among the "
              "options whose self top-1 and mild views reach 95 %.", ""]
    lines += _table(["catalog by", "val R@1", "self top-1", "mild views top-1", "chosen"],
                    [[name, fmt(x["val_recall@1"]), fmt(x["catalog_self_top1"]), fmt(x["catalog_mild_views_top1"]),
                      "✔" if x["chosen_by_export"] else ""] for name, x in r["catalog_embedded_by"].items()])
    lines += ["", f"## No match, {len(nm['left_out'])} products left out (`no_match`)", "",
              f"Every rule is fitted by `export/calibrate.py` to the same budget (≤ {_pct(nm['budget'])} of the "
              "correctly named calibration photos refused) on the export's calibration photos (held back from "
              "the fit photos) and the train negatives, with the full catalog; then applied on val with "
              f"{len(nm['left_out'])} products removed from the index: {nm['known_photos']} photos of kept "
              f"products, {nm['unknown_photos']} of left-out ones. The models trained on every product, these "
              f"{len(nm['left_out'])} included; products no model ever saw are measured on dev only "
              "(`bench/teacher_recipe.py --unseen-products`, docs/benchmarks/README.md). *Named wrong* and "
              "*right when named* count every val photo, left-out products' included (any name given them is "
              "wrong).", ""]
    lines += _table(["rule", "refused of correct (val)", "answered right", "unknown products refused",
                     "named wrong", "right when named", "val non-product refused", "sample images refused",
                     "chosen"],
                    [[name, fmt(x["false_reject_of_correct"]), fmt(x["answered_right"]), fmt(x["unknown_rejected"]),
                      fmt(x.get("named_wrong")), fmt(x.get("right_when_named")),
                      fmt(x.get("val_negatives_rejected")), fmt(x.get("skimage_rejected")),
                      "✔" if x["chosen_by_export"] else ""] for name, x in nm["rules"].items()])
    every = nm.get("every_product")
    if every:
        sets = every["sets"]
        lines += ["", "### Every product left out once (`no_match.every_product`)", "",
                  f"The same rules, fitted once as above, applied with each of {len(sets)} left-out sets "
                  f"({min(map(len, sets))}–{max(map(len, sets))} products; a seeded partition of the catalog, "
                  "`bench/pooled.py`) taken out of the index, outcomes pooled: every val photo is an "
                  "unknown-product query once and a kept product's photo a known query in each other set; the "
                  "val non-product scenes in every set. Intervals resample products (a product's photos in every "
                  "set together: whether an unknown product is refused belongs to the product more than to one "
                  "photo) and scenes. *Unknown refused by set*: the lowest and highest set.", ""]
        lines += _table(["rule", "refused of correct (val)", "answered right", "unknown products refused",
                         "unknown refused by set", "named wrong", "right when named", "val non-product refused"],
                        [[name, fmt(x["false_reject_of_correct"]), fmt(x["answered_right"]), fmt(x["unknown_rejected"]),
                          f"{100 * min(x['unknown_rejected_by_set']):.1f} – {100 * max(x['unknown_rejected_by_set']):.1f} %",
                          fmt(x["named_wrong"]), fmt(x["right_when_named"]), fmt(x["scenes_rejected"])]
                         for name, x in every["rules"].items()])
    chosen_name = next((name for name, x in nm["rules"].items() if x["chosen_by_export"]), None)
    if chosen_name:
        lines += ["", f"Targets (the bundle's rule): "
                      f"{_targets(nm['rules'][chosen_name], every['rules'].get(chosen_name) if every else None)}."]
    sep = nm.get("separability")
    if sep:
        lines += ["", "### What the embedding allows (`no_match.separability`)", "",
                  "Not a shipped rule, and the only figures here chosen on val: for each single number a rule "
                  "could threshold, the cut that refuses at most the budget of the correctly named val photos "
                  "(kept products), and what that cut refuses. Every separator at the same false-reject rate; "
                  "where even this cut misses a target, no rule on that number can meet it in this embedding. "
                  "*Right above wrong*: among the kept products' val photos, the chance that a right answer's "
                  "value exceeds a wrong answer's (AUC; 0.5: the number says nothing about being right).", ""]
        lines += _table(["separator", "refused of correct (val)", "unknown products refused",
                         "val non-product refused", "sample images refused", "right above wrong (AUC)"],
                        [[name, fmt(x["false_reject_of_correct"]), fmt(x.get("unknown_rejected")),
                          fmt(x.get("val_negatives_rejected")), fmt(x.get("skimage_rejected")),
                          fmt(x.get("auc_right_vs_wrong"), pct=False)]
                         for name, x in sep.items()])
    bud = nm.get("budgets") or {}
    if bud.get("by_budget"):
        lines += ["", "### What the false-reject budget buys (`no_match.budgets`)", "",
                  f"The bundle's rule (`{bud['rule']}`) fitted by `export/calibrate.py` to larger budgets on the same "
                  "calibration photos (`export --max-false-reject`), applied on val as above. Not a choice: the "
                  "bundle keeps the 5 % budget the issue sets. Where a wrong name costs more than a refusal, "
                  "this is what a retailer trades.", ""]
        lines += _table(["budget", "refused of correct (calibration)", "refused of correct (val)", "answered right",
                         "named wrong", "right when named", "unknown products refused", "val non-product refused"],
                        [[_pct(float(b)), "–" if x.get("fit_false_reject_of_correct") is None
                          else f"{100 * x['fit_false_reject_of_correct']:.1f} %",
                          fmt(x["false_reject_of_correct"]), fmt(x["answered_right"]), fmt(x.get("named_wrong")),
                          fmt(x.get("right_when_named")), fmt(x["unknown_rejected"]),
                          fmt(x.get("val_negatives_rejected"))] for b, x in bud["by_budget"].items()])
    k = r["k_photos"]
    lines += ["", "## More pictures per product (`k_photos`)", "",
              f"k in-store fit photos per product (never dev, val or calibration photos) embedded by the bundle's "
              f"student and added to its index as more images of the product; the rule re-chosen on the same "
              f"calibration photos as `export --base` chooses it (every candidate at the same budget, the best "
              f"at cross-validation); the models are not retrained. R@1 is over all products; the rest "
              f"with {len(nm['left_out'])} left out.", ""]
    lines += _table(["k", "photos added", "rule", "val R@1", "answered right", "refused of correct",
                     "unknown refused", "named wrong", "non-product refused", "sample images refused"],
                    [[kk, str(x["photos_added"]), f"`{x.get('rule')}`", fmt(x["val_recall@1_all_products"]),
                      fmt(x["answered_right"]),
                      fmt(x["false_reject_of_correct"]), fmt(x["unknown_rejected"]), fmt(x.get("named_wrong")),
                      fmt(x.get("val_negatives_rejected")), fmt(x.get("skimage_rejected"))]
                     for kk, x in k["by_k"].items()])
    if r.get("words"):
        w = r["words"]
        lines += ["", "## Words (`words`)", "",
                  "Through the bundle's text search, exact name lookup off. Held-out phrasings were written once "
                  "into `bench/grocery_phrasings.csv` before any tuning and are not the indexed text; the indexed "
                  "names are shown for contrast (not held out: the text index holds them).", ""]
        lines += _table(["queries", "R@1", "R@5", "n"],
                        [[name, fmt(x["recall@1"]), fmt(x["recall@5"]), str(x["queries"])]
                         for name, x in w.items() if isinstance(x, dict) and "recall@1" in x])
        lines += ["", f"Text query latency p50 {w['latency_ms']['query_p50']:.2f} ms, p95 "
                      f"{w['latency_ms']['query_p95']:.2f} ms (int8, short phrases)."]
    if r.get("speed"):
        s = r["speed"]
        lines += ["", "## Speed (`speed`)", "",
                  f"Batch 1, {s['threads']} threads, {s['rounds']} "
                  + ("rounds, each ONNX model alone in a fresh process per round (export/timing.py), the PyTorch "
                     "teacher in the benchmark's process" if s.get("how") else "interleaved rounds")
                  + (f", {s['calls_per_round']} timed calls per model per round" if s.get("calls_per_round") else "")
                  + "; ratio of medians, interval from resampled calls.", ""]
        lines += _table(["model", "input", "ms (median)"],
                        [[k, "×".join(map(str, s["inputs"][k])), f"{v:.2f}"] for k, v in s["ms_p50"].items()])
        form = s.get("student", "int8")  # reports before the timed choice shipped int8 and named it in the key
        over = {k: s.get(f"{k}_over_student", s.get(f"{k}_over_student_int8")) for k in ("teacher_fp32", "teacher_int8")}
        lines += ["", f"Teacher fp32 / student {form}: {fmt(over['teacher_fp32'], pct=False)}×; "
                      f"teacher int8 / student {form}: {fmt(over['teacher_int8'], pct=False)}×."]
    lines += ["", f"Run time {r['seconds']:.0f} s (export {r['export']['seconds']} s, cached when blank)."]
    return "\n".join(lines) + "\n"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def _teacher_line(r: dict) -> str:
    t = r["export"]["teacher"]
    ft = r.get("teacher_training") or {}
    how = (f"trained here from random weights on the fit photos ({ft.get('epochs')} epochs)" if ft.get("epochs")
           else "a checkpoint trained on the fit photos, reused")
    ckpt = r["protocol"].get("teacher_checkpoint")
    made = r["protocol"].get("teacher_checkpoint_made_by") or {}
    line = f"`{t.get('model')}` ({Path(str(t.get('config') or t.get('pretrained'))).name}), {how}"
    if ckpt:
        chain = ", then ".join(f"`{c}`" for c in made["chain"]) if made.get("chain") else \
            (f"`{made['init_made_by']}`, then " if made.get("init_made_by") else "") + f"`{made.get('command')}`"
        line += f" (`--teacher-checkpoint {ckpt}`" + (f", made by {chain} on the fit photos, its "
                                                     f"figures measured on the dev photos" if made.get("command")
                                                     else "") + ")"
    if t.get("test_sides"):
        line += (f"; it embeds every image at {', '.join(map(str, t['test_sides']))} px and averages the unit "
                 "vectors (its config's `test_sides`), in PyTorch and in its ONNX form alike")
    if r["export"].get("student"):
        st = r["export"]["student"]
        line += f"; student `{st['arch']}`"
        loss = (st.get("distillation") or {}).get("loss")
        if loss:
            n = st["distillation"].get("epochs")
            line += f", {st.get('image_size')} px, distilled {n} epoch{'' if n == 1 else 's'} on `{loss}`"
    return line


def write_markdown(r: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, markdown(r))


def print_summary(r: dict) -> None:
    print(f"\nGrocery Store, {r['dataset']['products']} products, {r['dataset']['val_photos']} val photos")
    for name, row in r["models"].items():
        print(f"{name:<36} R@1 {fmt(row['recall@1'])}  R@5 {fmt(row['recall@5'])}")
    b = r["bundle"]
    print(f"bundle: answered right {fmt(b['answered_right'])}, refused of correct {fmt(b['false_reject_of_correct'])}, "
          f"student/teacher R@1 {fmt(b['student_over_teacher_recall@1'], pct=False)}")
    for name, x in r["no_match"]["rules"].items():
        print(f"no match {name:<32} refused of correct {fmt(x['false_reject_of_correct'])}, unknown "
              f"{fmt(x['unknown_rejected'])}, non-product {fmt(x.get('val_negatives_rejected'))}"
              + ("  (bundle)" if x["chosen_by_export"] else ""))
    for k, x in r["k_photos"]["by_k"].items():
        print(f"k = {k}: R@1 {fmt(x['val_recall@1_all_products'])}, answered right {fmt(x['answered_right'])}")
    print(f"total {r['seconds']:.0f} s")
