"""The manifest's optional `text` section: written, read back, and refused in
one line when wrong. Runtime only."""

from __future__ import annotations

import json
import re

import pytest

from edge_search.errors import BundleError
from edge_search.core.manifest import (DEFAULT_FUSION_ALPHA, IndexInfo, Manifest, ModelInfo, PreprocessCfg, TextInfo,
                                  parse_manifest)

TEXT = TextInfo(file="text.onnx", input="tokens", output="embedding", precision="int8", opset=17, context_length=77,
                tokenizer="tokenizer.json", index="text_index.usearch", product_text_weight=0.3, trim_padding=True)


def _manifest(text: TextInfo | None) -> dict:
    m = Manifest(schema_version=1, name="b", created="2026-01-01T00:00:00Z", preprocess=PreprocessCfg(),
                 model=ModelInfo(file="model.onnx", input="image", output="embedding", embed_dim=8, precision="int8",
                                 opset=17),
                 index=IndexInfo(file="index.usearch", dtype="f32", metric="cos", count=1), products_file="p.jsonl",
                 product_count=1, min_score=0.2, files={}, text=text)
    return json.loads(m.to_json())


def test_text_section_round_trips_and_is_optional():
    assert parse_manifest(_manifest(TEXT), "m").text == TEXT
    assert _manifest(TEXT)["text"]["fusion_alpha"] == DEFAULT_FUSION_ALPHA
    assert "text" not in _manifest(None) and parse_manifest(_manifest(None), "m").text is None


@pytest.mark.parametrize("key, value, says", [
    ("fusion_alpha", 1.5, "fusion_alpha must be in [0, 1]"),
    ("product_text_weight", -0.1, "product_text_weight must be in [0, 1]"),
    ("context_length", 1, "context_length must be at least 2"),
    ("tokenizer", 3, "key 'tokenizer' has the wrong type"),
    ("index", 3, "key 'index' has the wrong type"),
])
def test_bad_text_sections_are_one_line_bundle_errors(key, value, says):
    data = _manifest(TEXT)
    data["text"][key] = value
    with pytest.raises(BundleError, match=re.escape(says)) as e:
        parse_manifest(data, "m")
    assert "\n" not in str(e.value) and str(e.value).startswith("m text")
