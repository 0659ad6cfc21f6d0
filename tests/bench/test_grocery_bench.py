"""A miniature of bench/grocery.py on four classes of the real dataset, with
settings small enough for CI: every stage runs (dev split, negatives, teacher
trained from random weights by --finetune-labeled on the fit photos, export
with --negatives, every evaluation table with intervals, report.json and the
Markdown table), and a second run reuses the cached export."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import GROCERY, REPO

pytestmark = [pytest.mark.export, pytest.mark.dataset]

# the smaller grocery-cnn teacher (MobileNetV4, 112 px) keeps the miniature fast
MINI = ["--classes", "4", "--teacher", str(REPO / "models" / "teachers" / "grocery-cnn.json"),
        "--finetune-epochs", "2", "--finetune-batch", "8", "--epochs", "1",
        "--views-per-image", "2", "--leave-out", "1", "--negatives", "20", "--val-negatives", "20",
        "--speed", "none", "--quiet",
        # two epochs on ~120 photos leave near-identical embeddings: int8 and index flips are noise here
        "--gate", "int8_top1_agreement=0", "--gate", "catalog_self_top1=0", "--gate", "catalog_views_top1=0",
        "--gate", "index_top1_agreement=0"]


def bench(out, *extra):
    return subprocess.run([sys.executable, str(REPO / "bench" / "grocery.py"), "--data", str(GROCERY), "--out",
                           str(out), *MINI, *extra], capture_output=True, text=True, timeout=300)


def on_dev(out, tmp_path, script: str, *extra) -> dict:
    """A bench script run on the miniature's bundle and dev photos -> its JSON report."""
    report = tmp_path / f"{script}.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), "--bundle", str(out / "bundle"),
                           "--queries", str(out / "data" / "dev.csv"), "--data", str(GROCERY), *extra,
                           "--out", str(report)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(report.read_text())


def on_run(out, folder, script: str, *extra) -> dict:
    """A bench script that measures a grocery.py --out (`out`) on its dev photos, writing into `folder` ->
    its result.json."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), "--run", str(out), "--split", "dev", *extra,
                           "--teacher", MINI[3], "--out", str(folder)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((folder / "result.json").read_text())


def test_grocery_bench_miniature(tmp_path):
    if not (GROCERY / "classes.csv").is_file():
        pytest.skip(f"grocery dataset not found at {GROCERY} (set EDGE_SEARCH_GROCERY)")
    out = tmp_path / "grocery"
    proc = bench(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "report.json").read_text())
    assert r["dataset"]["classes"] == ["Golden-Delicious", "Anjou", "Arla-Medium-Fat-Milk", "Aubergine"]
    # the dev split: a contiguous block of ~15 % of each product's train photos; val untouched
    p = r["protocol"]
    assert (p["fit_photos"], p["dev_photos"], p["val_photos"]) == (121, 21, 14)
    assert p["bootstrap"] == {"rounds": 2000, "seed": 12, "resampled": "photos (images)"}
    assert {(q.split(",")[1]) for q in (out / "data" / "dev.csv").read_text().splitlines()[1:]} == \
        set(r["dataset"]["classes"])
    fit = set((out / "data" / "fit.csv").read_text().splitlines()[1:])
    assert not fit & set((out / "data" / "dev.csv").read_text().splitlines()[1:])
    # held-back photos are never distilled on, and the distill folder holds fit photos only
    distilled = {q.name for q in (out / "data" / "fit-photos").rglob("*.jpg")}
    assert len(distilled) == 121
    ft = r["export"]["teacher"]["finetune"]
    assert ft["labels"] == "fit.csv" and ft["epochs"] == 2 and ft["rows"] == 121
    assert r["export"]["student"]["distill_images"] == 121 - ft["holdout_photos"]
    rows = r["models"]
    shipped = f"student (ONNX {r['export']['model']['precision']}, the bundle)"  # the export's timed choice
    assert set(rows) == {"teacher (PyTorch fp32)", "teacher (ONNX int8)", "student (ONNX fp32)",
                         shipped, "colour histogram (no model)"}
    for row in rows.values():  # one interval per figure, on the 14 val photos; 4 products: R@5 is every photo
        assert row["recall@1"]["n"] == 14 and row["recall@1"]["ci95"][0] <= row["recall@1"]["value"]
        assert row["recall@5"] == {"value": 1.0, "ci95": [1.0, 1.0], "n": 14}
    assert rows[shipped]["input"] == [112, 112]
    assert rows[shipped]["mb"] < rows["student (ONNX fp32)"]["mb"]
    b = r["bundle"]
    assert b["raw_recall@1"] == rows[shipped]["recall@1"]
    assert b["answered_right"]["value"] <= b["raw_recall@1"]["value"]
    # every val photo is answered right, named wrong or refused; of the names given, the right share
    named = b["answered_right"]["value"] + b["named_wrong"]["value"]
    assert b["named_wrong"]["n"] == 14 and b["right_when_named"]["n"] == round(14 * named)
    if named:
        assert b["right_when_named"]["value"] == pytest.approx(b["answered_right"]["value"] / named, abs=1e-3)
    kq = r["kiosk"]  # the kiosk's own path: the rule plus its retries
    assert kq["retries"] == ["centre-crop", "equalized"] and kq["val_negatives_rejected"]["n"] == 20
    assert kq["answered_right"]["n"] == 14
    # --confirm only takes answers away: never more right or wrong names than the kiosk as shipped
    kc = kq["confirm"]
    assert kc["answered_right"]["value"] <= kq["answered_right"]["value"]
    assert kc["named_wrong"]["value"] <= kq["named_wrong"]["value"]
    assert kc["val_negatives_rejected"]["value"] >= kq["val_negatives_rejected"]["value"]
    cat = r["catalog_embedded_by"]
    assert set(cat) == {"teacher", "student", "teacher+student", "teacher+student+views"}
    assert cat["student"]["catalog_self_top1"]["value"] == 1.0  # the student's own vectors name every image
    assert [n for n, x in cat.items() if x["chosen_by_export"]] == [r["export"]["index"]["catalog_encoder"]]
    nm = r["no_match"]
    assert len(nm["left_out"]) == 1 and nm["known_photos"] + nm["unknown_photos"] == 14
    assert nm["val_negatives"] == 20 and nm["skimage_images"] in (0, 18)  # 18 with the [bench] extra
    assert r["export"]["no_match"]["negatives_given"] if r["export"]["no_match"]["calibrated"] else \
        "20 no-product scenes" in r["export"]["no_match"]["source"]
    bud = nm["budgets"]  # the export's rule fitted to larger budgets: each keeps its budget where it was fitted
    assert bud["rule"] == r["export"]["no_match"].get("rule") or not bud["by_budget"]
    assert set(bud["by_budget"]) <= {"0.05", "0.1", "0.2", "0.3"}
    for budget, x in bud["by_budget"].items():
        assert x["fit_false_reject_of_correct"] <= float(budget) + 1e-9 and x["named_wrong"]["n"] == 14
    # every product left out once: 4 products, 4 sets of one; each of the 14 val photos an unknown query once
    # and a known one in the 3 other sets; every rule the single set measured is measured here too
    ev = nm["every_product"]
    assert list(map(len, ev["sets"])) == [1, 1, 1, 1] and len(set(sum(ev["sets"], []))) == 4
    assert nm["left_out"][0] in sum(ev["sets"], []) and set(ev["rules"]) == set(nm["rules"])
    for x in ev["rules"].values():
        assert x["unknown_rejected"]["n"] == 14 and len(x["unknown_rejected_by_set"]) == 4
        assert x["scenes_rejected"]["n"] == 4 * 20
    sep = nm["separability"]  # each separator cut on val at the budget: at most 5 % of the correct refused
    assert set(sep) == {"top-1 score", "margin over the runner-up", "top-1 minus nearest no-product scene",
                        "top-1 minus the next 9 products' mean", "softmax share of the top product (T 0.05)"}
    for row in sep.values():
        frr = row["false_reject_of_correct"]
        assert frr["value"] <= 0.05 and frr["n"] >= 1 and row["val_negatives_rejected"]["n"] == 20
    # the same separators on the 21 dev photos, before val (bench/separators.py): 3 draws of 1 product left out
    dev = on_dev(out, tmp_path, "separators.py", "--leave-out", "1", "--draws", "3", "--negatives", "12")
    assert (dev["queries"], dev["dev_negatives"], len(dev["by_draw"])) == (21, 12, 3)
    assert set(dev["mean_over_draws"]) == set(sep) - {"top-1 minus nearest no-product scene"}
    for draw in dev["by_draw"]:
        for row in draw.values():
            assert row["false_reject_of_correct"] <= 0.05  # the cut refuses at most the budget
    # the bundle under store-like shifts of the dev photos (bench/shifts.py): every shift, every photo
    sh_out = tmp_path / "shifts.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "shifts.py"), "--bundle", str(out / "bundle"),
                           "--queries", str(out / "data" / "dev.csv"), "--out", str(sh_out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sh = json.loads(sh_out.read_text())
    assert sh["queries"] == 21 and list(sh["shifts"]) == ["none", "colour cast", "gamma", "blur",
                                                          "low resolution", "all four",
                                                          "gray-world balance, query only"]
    for row in sh["shifts"].values():
        assert row["recall@1"]["n"] == 21
        if row["right_refused"] is not None:
            assert row["right_refused"]["n"] == round(row["recall@1"]["value"] * 21)
    # the kiosk's retry rules on the dev photos (bench/retries.py): each rule names a superset of the photos
    # the stricter one names, whole frame only < agree < any
    rr = on_dev(out, tmp_path, "retries.py", "--leave-out", "1", "--draws", "2", "--negatives", "12")
    assert (rr["queries"], rr["dev_negatives"], rr["chosen"] in rr["rules"]) == (21, 12, True)
    named = [rr["rules"][n]["answered_right"]["value"] + rr["rules"][n]["named_wrong"]["value"]
             for n in ("whole frame only", "agree", "any")]
    assert named == sorted(named)
    for key in ("unknown_products_named", "dev_negatives_named"):
        assert [rr["rules"][n][key] for n in ("whole frame only", "agree", "any")] == \
            sorted(rr["rules"][n][key] for n in ("whole frame only", "agree", "any"))
    # the no-match calibration refitted under each objective, measured on dev (bench/calibration_dev.py); the
    # export's 10 % of 121 fit photos name too few right for a rule, so a larger share of them here
    cal = on_dev(out, tmp_path, "calibration_dev.py", "--fit", str(out / "data" / "fit.csv"), "--holdout", "0.45",
                 "--train-negatives", str(out / "negatives" / "train-20-seed0"), "--leave-out", "1", "--draws", "2",
                 "--negatives", "12")
    assert set(cal["objectives"]) == {"unknowns and scenes", "unknowns, wrong answers and scenes"}
    assert cal["chosen"] in cal["objectives"] and cal["train_negatives"] == 20 and cal["queries"] == 21
    for row in cal["objectives"].values():
        assert row["calibration"]["false_reject_of_correct"] <= cal["budget"] + 1e-9
    # the kiosk as a user runs it (`edge-search run --no-tui`) on a hand-held video of the dev photos and
    # dev scenes (bench/kiosk_video.py)
    kv = on_dev(out, tmp_path, "kiosk_video.py", "--split", "dev", "--scenes", "5", "--held", "6")
    assert (kv["products_shown"], kv["scenes_shown"], len(kv["items"])) == (21, 5, 26)
    searches = sum(i["searches"] for i in kv["items"])
    assert kv["kiosk_summary"].startswith(f"edge-search: {26 * 6} frames, {searches} searched")
    assert kv["answered_right"]["value"] + kv["named_wrong"]["value"] <= kv["products_searched"]["value"] + 1e-4
    # shelf photos from the queries' own store (bench/site_photos.py), on dev: each kept product's first dev
    # photo goes to the index, the left-out product's photos are all unknown queries
    site = tmp_path / "site"
    sp = on_run(out, site, "site_photos.py", "--site", "1", "--store-scenes", "6", "--rotate", "2", "--separability")
    dev_ids = [q.split(",")[1] for q in (out / "data" / "dev.csv").read_text().splitlines()[1:]]
    left = r["no_match"]["left_out"]
    n_left = sum(pid in left for pid in dev_ids)
    assert sp["left_out"] == left and sp["queries"] == {"known": len(dev_ids) - n_left - 3, "unknown": n_left,
                                                         "all_products": len(dev_ids) - 3}
    assert {kk: x["photos_added"] for kk, x in sp["by_k"].items()} == {"0": 0, "1": 3, "1 + store scenes": 3}
    assert "bench/site_photos.py --run" in (site / "site-photos.md").read_text()
    # --rotate 2: two left-out sets of two products that together are the catalog; every dev photo is an
    # unknown query once, and a product's first dev photo is a shelf photo whenever it is kept
    rot = sp["rotation"]
    assert sorted(sum(rot["left_out"], [])) == sorted(set(dev_ids)) and list(map(len, rot["left_out"])) == [2, 2]
    assert rot["rows"]["1"]["photos"] == {"known": len(dev_ids) - 4, "unknown": len(dev_ids),
                                          "known_measured": len(dev_ids) - 4}
    assert "### Every product left out once (2 draws)" in (site / "site-photos.md").read_text()
    # --separability: one cut per separator over both sets' right answers; under 20 of them the 5 % budget
    # refuses none (the cut is the lowest right score), and every dev photo is scored once as an unknown
    sep = rot["rows"]["1"]["separability"]
    assert "top-1 score" in sep and "margin over the runner-up" in sep
    assert all(x["unknown_rejected"]["n"] == len(dev_ids) for x in sep.values())
    assert 0 < sep["top-1 score"]["false_reject_of_correct"]["n"] < 20
    assert all(x["false_reject_of_correct"]["value"] == 0.0 for x in sep.values())
    assert "### What the embedding allows, every product left out once" in (site / "site-photos.md").read_text()
    # the teacher scored the same way: the same photos, no separator that needs negatives, no store-scenes row
    tsep = rot["rows"]["1"]["teacher_separability"]
    assert "top-1 score" in tsep and "top-1 minus nearest no-product scene" not in tsep
    assert all(x["unknown_rejected"]["n"] == len(dev_ids) for x in tsep.values())
    assert tsep["top-1 score"]["false_reject_of_correct"]["value"] == 0.0
    assert "teacher_separability" not in rot["rows"]["1 + store scenes"]
    assert "### The same for the teacher alone" in (site / "site-photos.md").read_text()
    # --site-encoder teacher: the same queries and photos, each shelf photo one teacher entry; the rule is
    # refitted on the index that holds them
    site_t = tmp_path / "site-teacher"
    st = on_run(out, site_t, "site_photos.py", "--site", "1", "--site-encoder", "teacher")
    assert st["site_encoder"] == "teacher" and st["queries"] == sp["queries"]
    assert {kk: x["photos_added"] for kk, x in st["by_k"].items()} == {"0": 0, "1": 3}
    assert st["by_k"]["0"] == sp["by_k"]["0"]  # no shelf photo, nothing changes
    assert "embedded by the teacher only" in (site_t / "site-photos.md").read_text()
    # main-image scoring over the same two left-out sets: one floor per set and scoring, both scorings
    mr = on_run(out, tmp_path / "main-image", "main_image.py", "--site", "1", "--rotate", "2")
    assert mr["left_out"] == rot["left_out"]
    assert {s: len(x["floors"]) for s, x in mr["rows"].items()} == {"best image": 2, "mean of best and main image": 2}
    assert mr["rows"]["best image"]["unknown_rejected"]["n"] == len(dev_ids)
    # the shipped rules with every product left out once: the same sets; each dev photo unknown once, known
    # once (two sets of two: a product is kept in the one set that does not leave it out)
    un = tmp_path / "unknowns"
    ur = on_run(out, un, "unknowns.py", "--rotate", "2")
    assert ur["left_out"] == rot["left_out"]
    assert ur["photos"] == {"split": len(dev_ids), "known_measured": len(dev_ids), "unknown": len(dev_ids)}
    assert set(ur["rules"]) == set(r["no_match"]["rules"])  # the rules grocery.py fitted, no more, no fewer
    assert "bench/unknowns.py --run" in (un / "unknowns.md").read_text()
    k = r["k_photos"]["by_k"]
    assert {kk: x["photos_added"] for kk, x in k.items()} == {"0": 0, "1": 4, "3": 12, "5": 20}
    assert k["0"]["val_recall@1_all_products"] == cat[r["export"]["index"]["catalog_encoder"]]["val_recall@1"]
    w = r["words"]
    assert w["held_out_phrasings"]["queries"] == 4 and w["indexed_names (not held out)"]["queries"] == 4
    # the Markdown table: written by the bench, naming the command that reproduces it
    md = (out / "grocery.md").read_text()
    assert "bench/grocery.py --data" in md and "--classes 4" in md
    # the student's recipe as it ran: a fresh student keeps the product cross-entropy at weight 1
    assert "distilled 1 epoch on `cosine + 1 x relational + 1 x product cross-entropy" in md
    for heading in ("## Protocol", "## Models on val", "## The bundle as shipped", "## The kiosk's path",
                    "## Who embeds the catalog",
                    "## No match, 1 products left out", "### What the embedding allows",
                    "## More pictures per product", "## Words"):
        assert heading in md
    # the dataset is read in place: the bench writes CSVs and links, never image copies
    images = list((out / "data").rglob("*.jpg"))
    assert images and all(q.is_symlink() for q in images)

    created = json.loads((out / "bundle" / "manifest.json").read_text())["created"]
    t0 = time.monotonic()
    again = bench(out, "--speed", "teacher", "--rounds", "2")  # the cached run also times the models
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "bundle" / "manifest.json").read_text())["created"] == created  # export cached
    r2 = json.loads((out / "report.json").read_text())
    assert r2["models"] == r["models"] and r2["k_photos"] == r["k_photos"]  # the same seeds, the same figures
    assert time.monotonic() - t0 < 120
    s = r2["speed"]
    ms = s["ms_p50"]
    assert set(ms) == {"teacher (PyTorch fp32)", "teacher (ONNX int8)", shipped} and min(ms.values()) > 0
    assert (s["rounds"], s["calls_per_round"]) == (2, 30) and "alone in a fresh process" in s["how"]
    assert s["teacher_int8_over_student"]["n"] == 60  # every timed call of the 2 rounds
    assert s["teacher_int8_over_student"]["value"] == pytest.approx(ms["teacher (ONNX int8)"] / ms[shipped], rel=0.01)
    assert "## Speed" in (out / "grocery.md").read_text()
