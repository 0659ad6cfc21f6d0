"""Text search (#5): the shipped tokenizer against open_clip's, the exported
text tower against the torch teacher, the manifest's text section, and
`edge-search search --text / IMAGE --text / --filter` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from conftest import TINY_TEACHER, read_manifest, run_cli

pytestmark = pytest.mark.export

# punctuation, digits, accents, CJK, emoji, over-length, and what ftfy/html.unescape would touch
PARITY_STRINGS = [
    "oat milk", "Red APPLE!!", "  green   apple\t\n", "3.5% fat, 1.5L (6-pack)", "price: $2.49/kg", "½ price",
    "crème fraîche", "jalapeño", "Ångström ÉCLAIR", "naïve café", "Straße", "e\u0301clair", "İstanbul",
    "牛奶 燕麦", "りんご", "김치", "🍎 apple 🥛", "👍🏽 great", "Ben & Jerry’s", "“organic”", "ﬁne ﬂour", "ＡＢＣ１２３",
    "&amp;amp; tom &lt;3", "it's we're I'LL", "x", "", "a " * 100,
    "Lactose-free semi-skimmed milk, 1 litre, with added vitamins D and B12, from grass-fed cows in Sweden",
]


@pytest.mark.parametrize("context_length", [16, 77])
def test_shipped_tokenizer_matches_open_clip(tmp_path, context_length):
    open_clip = pytest.importorskip("open_clip")
    from edge_search_export.text_export import build_tokenizer
    from tokenizers import Tokenizer

    info = build_tokenizer(context_length, tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    got = np.array([e.ids for e in tok.encode_batch(PARITY_STRINGS)])
    want = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)(PARITY_STRINGS).numpy()
    differing = [s for s, a, b in zip(PARITY_STRINGS, got, want) if not (a == b).all()]
    assert differing == []
    assert got.shape == (len(PARITY_STRINGS), context_length)
    # over-length text: truncated with the end token kept last, as open_clip does
    assert got[-2, -1] == info["eot_token_id"] and got[-2, 0] == info["sot_token_id"]
    assert info["context_length"] == context_length


def test_manifest_text_section(text_bundle):
    m = read_manifest(text_bundle)
    t = m["text"]
    assert t["file"] == "text.onnx" and t["tokenizer"] == "tokenizer.json" and t["index"] == "text_index.usearch"
    assert t["precision"] == "int8" and t["context_length"] == 16 and t["input"] == "tokens"
    assert 0 <= t["product_text_weight"] <= 1 and t["fusion_alpha"] == 0.9
    for f in ("text.onnx", "tokenizer.json", "text_index.usearch"):
        assert f in m["files"] and (text_bundle / f).is_file()
    assert not list(text_bundle.glob(".*fp32*"))  # the fp32 tower is not shipped
    fid = m["fidelity"]["text"]
    assert fid["tokenizer"]["parity_with_open_clip"]["identical"] == fid["tokenizer"]["parity_with_open_clip"]["strings"]
    q = fid["int8_vs_fp32"]
    assert q["mean_cosine"] >= 0.98 and q["min_cosine"] >= 0.95 and q["phrases"] >= 30
    assert fid["onnx_vs_torch"]["min_cosine"] >= 0.999
    # each encoder's catalog, and the shipped index itself where it mixes them (e.g. "teacher+student")
    assert set(fid["text_to_image"]) == {"teacher", "student", "queries", m["index"]["catalog_encoder"]}
    # the export's figure for the catalog the bundle ships, recomputed through the runtime alone:
    # the bundle's text tower on each product name, its index vectors, best image per product
    import numpy as np

    from edge_search.core.search import Searcher

    s = Searcher.from_bundle(text_bundle)
    by = m["index"]["catalog_encoder"]
    names = [p.name for p in s.products.products]
    q = s.text_encoder.embed(names)
    vecs = np.asarray(s.index.index.get(np.arange(m["index"]["count"], dtype=np.uint64)), np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    scores = np.full((len(names), len(names)), -np.inf)
    for key, pos in enumerate(s.products.key_to_product):
        scores[:, pos] = np.maximum(scores[:, pos], q @ vecs[key])
    own = scores[np.arange(len(names)), np.arange(len(names))][:, None]
    rank = (scores > own + 1e-4).sum(1)  # i8 index vectors: near-ties are the rounding's
    assert fid["text_to_image"][by]["names"]["recall@1"] == pytest.approx((rank < 1).mean(), abs=1.5 / len(names))
    assert fid["text_to_image"]["queries"] == {"names": 12, "names_descriptions": 12}
    pw = fid["product_text_weight"]
    assert pw["chosen"] == t["product_text_weight"] and len(pw["curve"]) == 11
    gates = {g["gate"] for g in m["fidelity"]["gates"]["results"]}
    assert {"text int8-vs-fp32 mean cosine", "text int8-vs-fp32 min cosine", "text onnx-vs-torch min cosine"} <= gates
    out = run_cli("inspect", text_bundle).stdout
    assert "text        text.onnx int8" in out and "names -> products: recall@1" in out


def test_text_tower_matches_the_torch_teacher(text_bundle, tiny_checkpoint):
    from edge_search.core.text import TextEncoder
    from edge_search_export.teacher import load_teacher
    from edge_search_export.text_export import GATE_PHRASES, torch_text_embed

    teacher = load_teacher(str(TINY_TEACHER), str(tiny_checkpoint))
    assert read_manifest(text_bundle)["text"]["trim_padding"] is True  # causal mask, end-token pooling
    enc = TextEncoder(text_bundle / "text.onnx", text_bundle / "tokenizer.json", context_length=16, trim=True)
    full = TextEncoder(text_bundle / "text.onnx", text_bundle / "tokenizer.json", context_length=16)
    phrases = list(GATE_PHRASES[:10]) + ["🍎 ÄPFEL", "牛奶", "a " * 30]
    ref = torch_text_embed(teacher.model, enc.tokenize(phrases))
    got = enc.embed(phrases)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-4)
    # int8 on rows cut after the end token, against torch fp32 at 16: the export's own bar (Gates.
    # text_int8_min_cosine); a random tiny tower's worst phrase lands at 0.975-0.99 by CPU
    assert (ref * got).sum(1).min() >= 0.95 and (ref * got).sum(1).mean() >= 0.98
    assert (got * full.embed(phrases)).sum(1).min() >= 0.999  # cutting the padding changes nothing
    one = np.stack([enc.embed([p])[0] for p in phrases[:3]])
    assert (one * got[:3]).sum(1).min() >= 0.999  # a phrase alone (shortest rows) = the same phrase in a batch


def test_search_by_words(text_bundle):
    res = json.loads(run_cli("search", "--bundle", text_bundle, "--text", "something to eat", "--json", "-k", "4").stdout)
    assert res["query"] == "something to eat" and len(res["results"]) == 4 and res["no_match"] is False
    scores = [r["score"] for r in res["results"]]
    assert scores == sorted(scores, reverse=True)
    assert set(res["timings_ms"]) == {"embed", "search"}
    # exact id or name: that product first, marked
    for q in ("honey", "WILDFLOWER HONEY"):
        top = json.loads(run_cli("search", "--bundle", text_bundle, "--text", q, "--json").stdout)["results"][0]
        assert top["id"] == "honey" and top["exact"] is True
    plain = run_cli("search", "--bundle", text_bundle, "--text", "honey").stdout
    assert "1." in plain and "Wildflower Honey (exact)" in plain


def test_photo_plus_words_and_filters(text_bundle, sample_catalog):
    img = sample_catalog.parent / "images" / "honey.jpg"
    res = json.loads(run_cli("search", "--bundle", text_bundle, img, "--text", "organic", "--alpha", "1", "--json").stdout)
    photo = json.loads(run_cli("search", "--bundle", text_bundle, img, "--json", "--min-score", "-2").stdout)
    assert res["text"] == "organic" and [r["id"] for r in res["results"]] == [r["id"] for r in photo["results"]]
    products = [json.loads(line) for line in (text_bundle / "products.jsonl").read_text().splitlines()]
    cheap = sorted(p["id"] for p in products if p["price"] < 2.5)
    assert len(cheap) >= 5
    res = json.loads(run_cli("search", "--bundle", text_bundle, "--text", "food", "--filter", "price<2.5", "-k", "5",
                             "--json").stdout)
    assert len(res["results"]) == 5 and all(r["price"] < 2.5 for r in res["results"]) and res["filter"] == "price<2.5"
    # every match, when fewer than k match; several filters all hold
    cat = products[0]["category"]
    want = sorted(p["id"] for p in products if p["category"] == cat and p["price"] < 2.5)
    res = json.loads(run_cli("search", "--bundle", text_bundle, "--text", "food", "--filter", f"category={cat}",
                             "--filter", "price<2.5", "-k", "20", "--json").stdout)
    assert sorted(r["id"] for r in res["results"]) == want
    res = json.loads(run_cli("search", "--bundle", text_bundle, img, "--filter", "category!=" + cat, "-k", "5",
                             "--min-score", "-2", "--json").stdout)
    assert len(res["results"]) == 5 and all(r["category"] != cat for r in res["results"])


@pytest.mark.parametrize("args, says", [
    (["--text", "x", "--filter", "colour=red"], "unknown field 'colour'"),
    (["--text", "x", "--filter", "price<cheap"], "'<' needs a number"),
    (["--text", "x", "--filter", "price"], "expected FIELD OP VALUE"),
    (["--text", " "], "the text query is empty"),
    (["--text", "x", "--alpha", "0.5"], "--alpha weighs a photo against words"),
    ([], "search needs IMAGE(s), --text WORDS, or both"),
])
def test_bad_text_input_is_one_line(text_bundle, args, says):
    proc = run_cli("search", "--bundle", text_bundle, *args, check=False)
    assert proc.returncode == 2 and says in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_bundle_without_text_says_so(tiny_bundle, sample_catalog):
    assert "text" not in read_manifest(tiny_bundle)
    for args in (["--text", "oat milk"], [sample_catalog.parent / "images" / "honey.jpg", "--text", "organic"]):
        proc = run_cli("search", "--bundle", tiny_bundle, *args, check=False)
        assert proc.returncode == 2 and proc.stderr == f"edge-search: error: {tiny_bundle} has no text model; " \
                                                       "export it with --with-text\n"
    assert "text        none" in run_cli("inspect", tiny_bundle).stdout
    # photo search is untouched
    img = sample_catalog.parent / "images" / "honey.jpg"
    assert json.loads(run_cli("search", "--bundle", tiny_bundle, img, "--json").stdout)["results"][0]["id"] == "honey"


@pytest.mark.skipif(not os.environ.get("EDGE_SEARCH_RUNTIME_PYTHON"), reason="needs the runtime-only venv (tests/run.sh)")
def test_text_search_without_torch(text_bundle):
    py = os.environ["EDGE_SEARCH_RUNTIME_PYTHON"]
    probe = subprocess.run([py, "-c", "import importlib.util as u; print([m for m in ('torch', 'open_clip', 'ftfy') "
                                      "if u.find_spec(m)])"], capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"
    res = json.loads(run_cli("search", "--bundle", text_bundle, "--text", "honey", "--json", python=py).stdout)
    assert res["results"][0]["id"] == "honey" and res["results"][0]["exact"] is True
