"""The calibrated "no match" rule: its manifest schema (strict, optional),
how `Searcher` applies it, and how the export fits it. Runtime dependencies
only: the searcher gets a fake encoder, the index is built from vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_search.errors import BundleError
from edge_search.core.index import VectorIndex
from edge_search.core.manifest import NoMatchRule, PreprocessCfg, parse_manifest
from edge_search.core.products import Product, ProductTable
from edge_search.core.search import Searcher
from edge_search_export.calibrate import calibrate_no_match, calibration_scores
from edge_search_export.config import NoMatchSettings


def manifest_dict(**search) -> dict:
    return {
        "schema_version": 1, "name": "t", "created": "2026-01-01T00:00:00Z",
        "preprocess": {"size": [8, 8], "mode": "RGB", "mean": [0, 0, 0], "std": [1, 1, 1], "interpolation": "bicubic",
                       "resize_mode": "shortest", "fill_color": 0, "cv2_interpolation": "area"},
        "model": {"file": "m.onnx", "input": "image", "output": "embedding", "embed_dim": 4, "precision": "fp32",
                  "opset": 17},
        "index": {"file": "i.usearch", "dtype": "f32", "metric": "cos", "count": 3, "exact": True,
                  "rescore_file": None, "catalog_encoder": "student"},
        "products": {"file": "p.jsonl", "count": 3}, "search": {"min_score": 0.2, **search}, "files": {},
    }


CAL = {"min_margin": 0.05, "product_min_score": {"b": 0.5}, "max_false_reject": 0.05, "source": "test"}


def test_manifest_without_calibration_still_loads_and_round_trips():
    m = parse_manifest(manifest_dict(), "old")
    assert m.calibration is None and m.min_score == 0.2
    assert "calibration" not in m.to_dict()["search"]  # a bundle without it keeps its old shape


def test_manifest_calibration_round_trips():
    m = parse_manifest(manifest_dict(calibration=CAL), "new")
    assert m.calibration == NoMatchRule(min_margin=0.05, product_min_score={"b": 0.5}, max_false_reject=0.05,
                                        source="test")
    again = parse_manifest(json.loads(m.to_json()), "again")
    assert again == m


@pytest.mark.parametrize("cal,fragment", [
    ({**CAL, "temperature": 2.0}, "unknown key(s) temperature"),
    ({k: v for k, v in CAL.items() if k != "min_margin"}, "missing key 'min_margin'"),
    ({**CAL, "min_margin": "wide"}, "'min_margin' has the wrong type"),
    ({**CAL, "min_margin": 3.0}, "min_margin must be in [0, 2]"),
    ({**CAL, "product_min_score": {"b": "high"}}, "product_min_score['b'] is not a number"),
    ({**CAL, "product_min_score": {"b": float("nan")}}, "finite"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_calibration_is_refused(cal, fragment):
    with pytest.raises(BundleError) as err:
        parse_manifest(manifest_dict(calibration=cal), "bundle/manifest.json")
    assert fragment in str(err.value) and "search.calibration" in str(err.value)


class FixedEncoder:
    """Returns the vectors it is told to, one per call."""

    embed_dim = 4

    def __init__(self):
        self.next = None

    def embed(self, batch):
        return self.next[None].astype(np.float32)


def searcher(calibration=None, min_score=0.2) -> Searcher:
    vecs = np.eye(4, dtype=np.float32)[:3]  # products a, b, c along three axes
    table = ProductTable.from_products([Product(id=x, name=x, keys=(i,)) for i, x in enumerate("abc")], 3)
    return Searcher(encoder=FixedEncoder(), index=VectorIndex.build(vecs, dtype="f32"), products=table,
                    preprocess_cfg=PreprocessCfg(size=(8, 8)), min_score=min_score, calibration=calibration)


def query(s: Searcher, vec, **kw):
    s.encoder.next = np.asarray(vec, np.float32)
    return s.search_image(np.zeros((8, 8, 3), np.uint8), k=3, **kw)


def test_flat_threshold_without_calibration():
    s = searcher()
    r = query(s, [0.6, 0.55, 0, 0.5])
    assert [h.id for h in r.hits][:2] == ["a", "b"] and r.margin == pytest.approx(r.best_score - r.hits[1].score)
    assert query(s, [0.1, 0.05, 0, 1]).no_match  # best ~0.1 < 0.2


def test_calibrated_rule_uses_margin_and_per_product_floors():
    s = searcher(NoMatchRule(min_margin=0.05, product_min_score={"b": 0.7}))
    close = query(s, [0.6, 0.58, 0, 0.5])  # a leads b by ~0.02 < 0.05: ambiguous, rejected
    assert close.no_match and close.best_score > 0.2 and 0 < close.margin < 0.05
    assert close.best_id == "a"  # refused, the product it ranked first is still known (the kiosk's retries)
    clear = query(s, [0.7, 0.3, 0, 0.5])
    assert not clear.no_match and clear.hits[0].id == "a"
    # b's own floor (0.7) is above the flat 0.2: a b-ish photo scoring ~0.6 is rejected ...
    b_ish = query(s, [0.2, 0.6, 0, 0.77])
    assert b_ish.no_match and b_ish.best_id == "b"
    # ... while the same score on a product without its own floor is answered
    assert not query(s, [0.0, 0.2, 0.6, 0.77]).no_match
    # an explicit cut-off replaces the calibrated rule (what `--min-score` and eval's -inf rely on) ...
    ranked = query(s, [0.6, 0.58, 0, 0.5], min_score=float("-inf"))
    assert [h.id for h in ranked.hits] == ["a", "b", "c"]
    # ... and `answers` tells what the rule would have said about such a result
    assert not s.answers(ranked) and s.answers(query(s, [0.7, 0.3, 0, 0.5], min_score=float("-inf")))


def test_calibration_naming_an_unknown_product_is_refused():
    with pytest.raises(BundleError, match="calibration names product"):
        searcher(NoMatchRule(min_margin=0.0, product_min_score={"zzz": 0.5}))


def synthetic(photos=20, noise=1.0, seed=0, n_products=12):
    """Products in families of three (like apple varieties: close to each
    other), photos noisy copies of them; the catalog is fixed, `seed` draws
    the photos."""
    fixed = np.random.default_rng(0)
    family = fixed.standard_normal((n_products // 3, 32))
    centres = (np.repeat(family, 3, axis=0) + 0.5 * fixed.standard_normal((n_products, 32))).astype(np.float32)
    table = ProductTable.from_products([Product(id=f"p{i}", name=f"p{i}", keys=(i,)) for i in range(n_products)],
                                       n_products)
    s = Searcher(encoder=FixedEncoder(), index=VectorIndex.build(centres, dtype="f32"), products=table,
                 preprocess_cfg=PreprocessCfg(size=(8, 8)))
    truth = np.repeat(np.arange(n_products), photos)
    rng = np.random.default_rng(seed + 1)
    vecs = centres[truth] + noise * rng.standard_normal((len(truth), 32))
    return s, vecs.astype(np.float32), truth


def test_leave_one_product_out_scores():
    s, vecs, truth = synthetic()
    sc = calibration_scores(s, vecs, truth)
    assert (sc.alt_top != sc.truth).all() and (sc.alt_s1 <= sc.s1 + 1e-6).all()
    correct = sc.top == sc.truth
    assert correct.mean() > 0.8 and (sc.alt_s1[correct] < sc.s1[correct]).all()


def test_calibration_keeps_its_false_reject_budget_and_rejects_unknowns():
    s, vecs, truth = synthetic()
    rule, flat, report = calibrate_no_match(s, vecs, truth, NoMatchSettings(max_false_reject=0.05), source="synthetic")
    assert rule is not None and report["calibrated"] and rule.source == "synthetic"
    assert report["false_reject_of_correct"] <= 0.05
    assert report["reject_recall"] > 0.4  # many of the leave-one-out "unknowns" are refused ...
    flat_only = calibrate_no_match(s, vecs, truth, NoMatchSettings(rule="flat"),
                                   source="synthetic")[2]
    assert report["reject_recall"] > flat_only["reject_recall"] + 0.1  # ... more than one flat cut-off refuses
    assert flat_only["false_reject_of_correct"] <= 0.05
    # applied through the runtime's own rule, on fresh photos of the same products
    _, fresh, fresh_truth = synthetic(seed=1)
    s2 = Searcher(encoder=s.encoder, index=s.index, products=s.products, preprocess_cfg=s.preprocess_cfg,
                  min_score=flat, calibration=rule)
    named = [s2.search_vector(v, k=1, min_score=float("-inf"))[0][0].id == f"p{t}" for v, t in zip(fresh, fresh_truth)]
    rejected = [not s2.search_vector(v, k=1)[0] for v in fresh]
    assert np.mean([r for r, ok in zip(rejected, named) if ok]) < 0.12  # the budget holds on unseen photos


def test_tighter_budget_rejects_more_unknowns():
    s, vecs, truth = synthetic()
    loose = calibrate_no_match(s, vecs, truth, NoMatchSettings(max_false_reject=0.2), source="t")[2]
    tight = calibrate_no_match(s, vecs, truth, NoMatchSettings(max_false_reject=0.01), source="t")[2]
    assert loose["reject_recall"] > tight["reject_recall"]
    assert tight["false_reject_of_correct"] <= 0.01 and loose["false_reject_of_correct"] <= 0.2


def test_too_little_data_means_no_calibration():
    s, vecs, truth = synthetic(photos=1)
    rule, flat, report = calibrate_no_match(s, vecs[:5], truth[:5], NoMatchSettings(), source="t")
    assert rule is None and flat == 0.0 and not report["calibrated"] and "needs" in report["reason"]


def test_score_only_setting_never_uses_the_margin():
    s, vecs, truth = synthetic()
    rule, _, _ = calibrate_no_match(s, vecs, truth, NoMatchSettings(rule="flat"), source="t")
    assert rule.min_margin == 0.0 and rule.product_min_score == {}


class PathEncoder:
    """Embeds a photo as the vector its file's pixel value selects (eval reads real files)."""

    embed_dim = 4

    def __init__(self, vectors):
        self.vectors = vectors

    def embed(self, batch):
        return np.stack([self.vectors[int(round(float(x.max()) * 255))] for x in batch]).astype(np.float32)


def test_eval_applies_the_calibrated_rule_and_measures_reject_recall(tmp_path):
    import cv2

    from edge_search.evaluation.evaluate import evaluate, read_queries

    vectors = {10: [0.9, 0.1, 0, 0.4],   # clearly a: answered, right
               20: [0.6, 0.58, 0, 0.5],  # a by a hair: refused although ranked right (a false reject)
               30: [0.2, 0.6, 0, 0.77],  # b under b's own floor: refused
               40: [0.1, 0.05, 0.95, 0.2],  # clearly c, but c is labelled as a product the bundle lacks
               50: [0.3, 0.35, 0.3, 0.8]}  # nothing in particular, unknown product: refused
    rows = ["image,id"]
    for value, label in ((10, "a"), (20, "a"), (30, "b"), (40, "zz"), (50, "zz")):
        cv2.imwrite(str(tmp_path / f"{value}.png"), np.full((8, 8, 3), value, np.uint8))
        rows.append(f"{value}.png,{label}")
    (tmp_path / "q.csv").write_text("\n".join(rows) + "\n")
    s = searcher(NoMatchRule(min_margin=0.05, product_min_score={"b": 0.7}))
    s.encoder = PathEncoder(vectors)
    s.preprocess_cfg = PreprocessCfg(size=(8, 8), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    report = evaluate(s, read_queries(tmp_path / "q.csv"))
    assert report.queries == 3 and report.recall[1] == 1.0 and report.calibrated
    assert report.no_match_share == pytest.approx(2 / 3)  # the flat 0.2 alone would have answered all three
    assert report.false_reject_of_correct == pytest.approx(2 / 3)
    assert report.reject_recall == pytest.approx(1 / 2)  # the c-like photo is (wrongly) answered
    assert report.unknown_ids == ["line 5: zz", "line 6: zz"]
    # what a shopper meets: one right answer of three; of five photos, the c-like one got a wrong name; of the
    # two names given, one was right
    assert report.answered_right == pytest.approx(1 / 3) and report.named_wrong == pytest.approx(1 / 5)
    assert report.right_when_named == pytest.approx(1 / 2)


def test_negatives_keys_round_trip_and_are_checked():
    cal = {**CAL, "negatives": "negatives.npy", "negative_margin": 0.03, "rule": "floor+margin+negatives"}
    m = parse_manifest(manifest_dict(calibration=cal), "new")
    assert (m.calibration.negatives, m.calibration.negative_margin, m.calibration.rule) == \
        ("negatives.npy", 0.03, "floor+margin+negatives")
    assert parse_manifest(json.loads(m.to_json()), "again") == m
    # a rule without negatives is written without the optional keys (older readers still read it)
    assert set(parse_manifest(manifest_dict(calibration=CAL), "old").to_dict()["search"]["calibration"]) == set(CAL)
    with pytest.raises(BundleError, match="go together"):
        parse_manifest(manifest_dict(calibration={**CAL, "negatives": "n.npy"}), "half")


def test_a_query_nearer_a_negative_than_its_product_is_refused():
    rule = NoMatchRule(min_margin=0.0, negatives="negatives.npy", negative_margin=0.0)
    with pytest.raises(BundleError, match="none were given"):
        searcher(rule)
    s = Searcher(
        encoder=FixedEncoder(), index=searcher().index, products=searcher().products,
        preprocess_cfg=PreprocessCfg(size=(8, 8)), min_score=0.2, calibration=rule,
        negatives=np.array([[0, 0, 0, 1.0]], np.float32))  # the empty counter lies along the 4th axis
    counter = query(s, [0.5, 0.1, 0, 0.86])  # a ~0.5, the counter ~0.86: no product shown
    assert counter.no_match and counter.best_score == pytest.approx(0.5, abs=1e-3)
    assert counter.negative_score == pytest.approx(0.86, abs=1e-3)
    product = query(s, [0.9, 0.1, 0, 0.42])  # a 0.9 beats the counter's 0.42: answered
    assert [h.id for h in product.hits][:1] == ["a"]
    # the flat floor alone (what an explicit --min-score does) would have answered the counter
    assert not query(s, [0.5, 0.1, 0, 0.86], min_score=0.2).no_match
    assert not s.answers(query(s, [0.5, 0.1, 0, 0.86], min_score=float("-inf")))


def test_calibration_with_negatives_chooses_a_rule_that_uses_them():
    s, vecs, truth = synthetic()
    rng = np.random.default_rng(5)
    # no-product scenes: their own cluster (a floor, a counter), scoring like a product on the catalog
    photos_of = lambda p: vecs[truth == p].mean(0)  # noqa: E731
    background = photos_of(0) + photos_of(4) + np.random.default_rng(9).standard_normal(32)
    scenes = lambda n, r: (background + 0.7 * r.standard_normal((n, 32))).astype(np.float32)  # noqa: E731
    negs = scenes(60, rng)
    rule0, flat0, without = calibrate_no_match(s, vecs, truth, NoMatchSettings(), source="t")
    rule, flat, report = calibrate_no_match(s, vecs, truth, NoMatchSettings(), source="t", negatives=negs)
    assert without["rule"] in ("flat", "floor+margin", "product-floors+margin") and "negative_reject" not in without
    assert set(report["rules"]) == {"flat", "floor+margin", "product-floors+margin", "negatives",
                                    "floor+margin+negatives", "product-floors+margin+negatives"}
    assert rule.negatives == "negatives.npy" and rule.rule.endswith("negatives") and report["negatives_used"]
    assert report["false_reject_of_correct"] <= 0.05
    for name, r in report["rules"].items():  # every rule is held to the same budget
        assert r["false_reject_of_correct"] <= 0.05, name
    # fresh scenes of the same kind, through the runtime's rule: nearly all refused
    fresh = scenes(40, np.random.default_rng(6))
    s2 = Searcher(encoder=s.encoder, index=s.index, products=s.products, preprocess_cfg=s.preprocess_cfg,
                  min_score=flat, calibration=rule, negatives=negs)
    refused = np.mean([not s2.search_vector(v, k=1)[0] for v in fresh])
    assert refused >= 0.95 and report["negative_reject"] >= 0.95
    # the best rule without negatives refuses far fewer of them
    s3 = Searcher(encoder=s.encoder, index=s.index, products=s.products, preprocess_cfg=s.preprocess_cfg,
                  min_score=flat0, calibration=rule0)
    assert np.mean([not s3.search_vector(v, k=1)[0] for v in fresh]) <= 0.8


def test_a_negatives_rule_without_negatives_is_refused():
    s, vecs, truth = synthetic()
    from edge_search.errors import ExportError

    with pytest.raises(ExportError, match="needs 4"):
        calibrate_no_match(s, vecs, truth, NoMatchSettings(rule="negatives"), source="t")


# --- the no-match figures: one definition (edge_search.evaluation.no_match) for export, eval and bench ----

def test_no_match_figures_on_a_hand_made_table():
    from edge_search.evaluation.no_match import NoMatchOutcomes

    # 4 in-catalog photos (the third ranked wrong), 3 photos of unknown products, 2 scenes with no product
    f = NoMatchOutcomes(right=[True, True, False, True], refused=[False, True, False, True],
                        unknown_refused=[True, False, True], negatives_refused=[True, True]).figures()
    assert f == {"top1": 0.75, "answered_right": 0.25, "false_reject_all": 0.5,
                 "false_reject_of_correct": 0.6667,  # photos 2 and 4 of the 3 ranked right
                 "precision_of_answers": 0.5,  # of the 2 answered (photos 1 and 3), photo 1 is right
                 "reject_recall": 0.6667, "negative_reject": 1.0,
                 "wrong_refused": 0.0,  # photo 3, ranked wrong, answered
                 # of all 7 photos, photo 3 and the second unknown got a wrong name; of the 3 names, photo 1's right
                 "named_wrong": 0.2857, "right_when_named": 0.3333}


def test_a_figure_with_nothing_to_measure_is_none_not_zero_or_one():
    from edge_search.evaluation.no_match import NoMatchOutcomes

    f = NoMatchOutcomes(right=[False, False], refused=[True, True]).figures()
    assert f["top1"] == 0.0 and f["false_reject_all"] == 1.0
    # no photo ranked right, none answered, no unknowns, no scenes: undefined, whichever way a default would lean
    assert f["false_reject_of_correct"] is None and f["precision_of_answers"] is None
    assert f["reject_recall"] is None and f["negative_reject"] is None
    assert f["wrong_refused"] == 1.0 and f["named_wrong"] == 0.0 and f["right_when_named"] is None
    with pytest.raises(ValueError, match="same photos"):
        NoMatchOutcomes(right=[True], refused=[True, False])


def test_the_calibration_measures_a_rule_with_the_shared_figures():
    from edge_search_export.calibrate import CalibrationScores, Fitted, _figures

    # 3 products; photo 3 (truth 2) is ranked wrong (top 1); the rule: floor 0.6, margin 0.1
    sc = CalibrationScores(truth=np.array([0, 1, 2, 0]), top=np.array([0, 1, 1, 0]),
                           s1=np.array([0.9, 0.5, 0.8, 0.7]), s2=np.array([0.3, 0.45, 0.2, 0.65]),
                           alt_top=np.array([1, 0, 1, 2]), alt_s1=np.array([0.3, 0.45, 0.8, 0.6]),
                           alt_s2=np.array([0.1, 0.1, 0.2, 0.1]), neg=np.full(4, -np.inf))
    fit = Fitted(floors=np.full(3, 0.6), margin=0.1, negative_margin=-np.inf, flat=0.6)
    # refused: photo 2 (0.5 under the floor), photo 4 (0.05 margin); unknowns 1 and 2 (under the floor)
    # the wrongly named photo 3 scores 0.8, leads by 0.6: answered, so none of the wrong answers is refused
    assert _figures(sc, fit, None) == {"queries": 4, "top1": 0.75, "reject_recall": 0.5,
                                       "false_reject_of_correct": 0.6667, "false_reject_all": 0.5,
                                       "precision_of_answers": 0.5, "wrong_refused": 0.0}
    # a floor of 0.85 refuses it too: the objective counts it beside the unknowns, unless told not to
    from edge_search_export.calibrate import _objective

    strict = _figures(sc, Fitted(floors=np.full(3, 0.85), margin=0.1, negative_margin=-np.inf, flat=0.85), None)
    assert strict["wrong_refused"] == 1.0 and strict["reject_recall"] == 1.0
    loose = _figures(sc, fit, None)
    assert _objective(loose, NoMatchSettings(refuse_wrong=True)) == 0.25  # (unknowns 0.5 + wrong 0.0) / 2
    assert _objective(loose, NoMatchSettings()) == 0.5  # the default: unknowns (and negatives) only


def test_a_store_photo_in_the_catalog_is_scored_without_its_own_entry():
    # products a and b: a has a studio image (key 0) and a shelf photo (key 2); b one image (key 1)
    vecs = np.array([[1, 0, 0], [0, 1, 0], [0.6, 0, 0.8]], np.float32)
    table = ProductTable.from_products([Product(id="a", name="a", keys=(0, 2)), Product(id="b", name="b", keys=(1,)),
                                        Product(id="c", name="c", keys=(3,))], 4)
    vecs = np.vstack([vecs, [[0, 0.6, -0.8]]]).astype(np.float32)
    s = Searcher(encoder=FixedEncoder(), index=VectorIndex.build(vecs, dtype="f32"), products=table,
                 preprocess_cfg=PreprocessCfg(size=(8, 8)))
    shelf = vecs[2:3]
    plain = calibration_scores(s, shelf, np.array([0]))
    assert plain.top[0] == 0 and plain.s1[0] == pytest.approx(1.0)  # it finds itself
    alone = calibration_scores(s, shelf, np.array([0]), skip=[np.array([2])])
    # without key 2: a scores by its studio image (0.6), b 0 and c -0.64 (0 · 0 + 0.6 · 0 + 0.8 · -0.8)
    assert alone.top[0] == 0 and alone.s1[0] == pytest.approx(0.6)
    assert alone.s2[0] == pytest.approx(0.0) and alone.alt_top[0] == 1
    assert alone.alt_s1[0] == pytest.approx(0.0) and alone.alt_s2[0] == pytest.approx(-0.64)
    # a query with nothing to skip (None, or an empty set) ranks as before
    mixed = calibration_scores(s, np.vstack([shelf, shelf]), np.array([0, 0]), skip=[None, np.array([], int)])
    assert (mixed.s1 == plain.s1[0]).all()
