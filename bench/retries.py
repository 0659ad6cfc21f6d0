"""The kiosk's retries on the DEV split: what each retry rule adds, in right answers and in wrong ones.

    .venv/bin/python bench/retries.py --bundle bench-out/grocery-lr6e-4/bundle \
        --queries bench-out/grocery-lr6e-4/data/dev.csv --out bench-out/retries-dev.json

When the bundle's rule refuses a whole frame, the kiosk searches enhanced copies of it (a centre crop, the
contrast equalized; edge_search/kiosk/enhance.py). Each is one more chance to pass the rule, for a wrong
product as much as for the right one. This runs `KioskLoop.lookup`, the kiosk's own path, on the dev photos
under each retry rule (none: the whole frame only; `any`; `agree`, edge_search/kiosk/loop.py), and with
`agree` plus `confirm` (an answer stands only when the frame's centre ranks the same product first), and
counts:
  - in-catalog photos, full catalog: answered right, named wrong (another product's name), right when named;
  - photos of products left out of the index (`--draws` draws of `--leave-out`): named at all (wrong);
  - no-product scenes cut from dev photos (bench/negatives.py, split dev): named at all (wrong).
Chosen by (decided before this ran): the most in-catalog photos answered right minus named wrong, a wrong
name costing what a right one gains; the other two sets are reported beside it. `confirm` is an opt-in
(`edge-search run --confirm`) for shops that count a wrong name as worse; it is measured, not chosen here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import edge_search  # noqa: E402,F401  (onnxruntime before usearch)
import numpy as np  # noqa: E402

from bench import dev_setup, script, stats  # noqa: E402
from bench.grocery import _searcher, _wrong_names  # noqa: E402
from edge_search.core.images import load_image  # noqa: E402
from edge_search.evaluation.no_match import NoMatchOutcomes  # noqa: E402
from edge_search.kiosk.frames import Frame  # noqa: E402
from edge_search.kiosk.loop import AGREE, ANY, CONFIRM, KioskLoop  # noqa: E402

RULES = {"whole frame only": {"retries": ()}, ANY: {"retry_rule": ANY}, AGREE: {"retry_rule": AGREE},
         f"{AGREE} + {CONFIRM}": {"retry_rule": AGREE, "confirm": True}}


def named(searcher, images: list[np.ndarray], **rule) -> list[str | None]:
    """The product each image is named as on the kiosk's path under `rule` (None: no match)."""
    loop = KioskLoop(searcher, k=1, **rule)
    out = []
    for i, im in enumerate(images):
        hits = loop.lookup(Frame(index=i, image=im, captured=0.0, wall=0.0)).result.hits
        out.append(hits[0].id if hits else None)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dev_setup.add_arguments(ap, out="bench-out/retries-dev.json")
    a = ap.parse_args(argv)
    d = dev_setup.open_setup(a, ap)
    bundle, products, queries, scenes = d.bundle, d.products, d.queries, d.scenes
    images = [load_image(q.image) for q in queries]
    ids = np.asarray([q.id for q in queries], object)
    idx = stats.resamples(len(queries), stream=60)
    report_rules = {}
    for name, rule in RULES.items():
        got = np.asarray(named(bundle, images, **rule), object)
        right, answered = got == ids, got != None  # noqa: E711  (elementwise over an object array)
        unknown_named = []
        for left in d.draws:
            kept = [i for i in range(len(products)) if i not in left]
            left_ids = {products[i].id for i in left}
            s = _searcher(bundle.encoder, d.vectors, products, d.preprocess, keep=kept,
                          calibration=bundle.calibration, min_score=bundle.min_score, negatives=bundle.negatives)
            mine = [im for im, pid in zip(images, ids) if pid in left_ids]
            unknown_named.append(float(np.mean([g is not None for g in named(s, mine, **rule)])))
        row = {"answered_right": stats.share(right & answered, idx).to_json(),
               **_wrong_names(NoMatchOutcomes(right=right, refused=~answered), idx),
               "right_minus_wrong": round(float((right & answered).mean() - (answered & ~right).mean()), 4),
               "unknown_products_named": round(float(np.mean(unknown_named)), 4),
               "dev_negatives_named": round(float(np.mean([g is not None for g in named(bundle, scenes, **rule)])),
                                           4)}
        report_rules[name] = row
        print(f"{name:18s} right {stats.fmt(row['answered_right'])}  wrong {stats.fmt(row['named_wrong'])}  "
              f"right when named {stats.fmt(row['right_when_named'])}  unknown named "
              f"{row['unknown_products_named']:.3f}  scenes named {row['dev_negatives_named']:.3f}", flush=True)
    chosen = max((n for n in report_rules if "confirm" not in RULES[n]),
                 key=lambda n: report_rules[n]["right_minus_wrong"])
    report = {"command": " ".join(["bench/retries.py"] + (argv if argv is not None else sys.argv[1:])),
              "bundle": str(a.bundle), "queries": len(queries), "dev_negatives": len(scenes),
              "leave_out": a.leave_out, "draws": a.draws, "seed": a.seed, "bootstrap_seed": stats.SEED,
              "rules": report_rules, "chosen": chosen}
    print(f"chosen: {chosen}")
    script.write_report(a.out, report)
    return 0


if __name__ == "__main__":
    script.run(main, "bench/retries.py")
