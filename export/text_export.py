"""The teacher's text tower for the device (`edge-search export --with-text`).

Three artefacts, each a function from input to output:
  * `build_tokenizer`: open_clip's SimpleTokenizer (CLIP BPE) rewritten as a
    `tokenizers` BPE model -> `tokenizer.json`, so the device tokenizes with
    no torch, no open_clip, no ftfy;
  * `export_text_onnx`: token ids (N x context_length int64) -> unit-length
    embedding in the teacher's space, ONNX fp32;
  * `quantize_text_int8`: dynamic int8 (weights int8, activations quantized
    at run time: a transformer's activation ranges vary with the phrase, so
    static calibration buys little), gated like the image tower by fp32 vs
    int8 cosine on a fixed list of product-like phrases.

What open_clip's cleaning does that a tokenizer.json cannot: `ftfy.fix_text`
repairs mojibake ("cafÃ©" -> "café") and rarer Unicode oddities, and
`html.unescape` knows every entity. The normalizer below covers what product
text usually holds (NFC, curly quotes, Latin ligatures, full-width ASCII,
the common HTML entities, whitespace, lowercase); the parity test in
tests/export/test_text.py lists the cases checked.

Export stage only (torch, open_clip, onnx).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import torch

from edge_search.errors import ExportError
from edge_search.core.products import ProductTable
from edge_search.core.text import TEXT_INPUT, TEXT_OUTPUT, TextEncoder

from .onnx_export import OPSET

log = logging.getLogger("edge_search.export")

# The fidelity gate's phrases: short shopper queries and longer catalog-like
# text, mixed case, digits, units, punctuation, a few accents.
GATE_PHRASES: tuple[str, ...] = (
    "oat milk", "red apple", "green apple", "organic bananas", "smaller pack", "whole milk 1L",
    "semi-skimmed milk", "lactose-free yoghurt 500 g", "orange juice with pulp", "sparkling water 6 x 1.5L",
    "dark chocolate 70%", "crème fraîche", "jalapeño peppers", "gluten free pasta", "brown eggs, free range",
    "Golden Delicious apples", "Granny Smith", "plum tomatoes on the vine", "red onion", "garlic bulb",
    "fresh ginger root", "avocado ripe & ready", "kiwi fruit", "passion fruit", "Greek-style yoghurt",
    "soy milk unsweetened", "oatly oat drink barista edition", "mango chunks", "cherry tomatoes 250g",
    "iceberg lettuce", "baby spinach leaves", "sweet potato", "white mushrooms", "bell pepper, yellow",
    "Arla medium fat milk 1.5%", "vanilla ice cream", "cheddar cheese, mature", "lemon", "lime", "peach",
)

# ftfy.fix_text's common repairs, as plain replacements (see the module docstring)
_QUOTES = {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"',
           "\u201e": '"', "\u201f": '"'}
_LIGATURES = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st",
              "\ufb06": "st"}
# html.unescape is applied twice by open_clip: "&amp;amp;" -> "&"; "&amp;" goes first, twice
_ENTITIES = (("&amp;", "&"), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"),
             ("&#x27;", "'"), ("&apos;", "'"), ("&nbsp;", "\u00a0"))
# open_clip's split, without its special-token alternatives (added tokens below take that part)
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _simple_tokenizer(context_length: int) -> "open_clip.tokenizer.SimpleTokenizer":
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def check_tokenizer(model_name: str) -> int:
    """The teacher's context length; refuses teachers whose tokenizer is not CLIP's BPE."""
    tok = open_clip.get_tokenizer(model_name)
    if type(tok) is not open_clip.tokenizer.SimpleTokenizer or tok.reduction_fn is not None:
        raise ExportError(f"--with-text supports open_clip's CLIP BPE tokenizer; {model_name} uses "
                          f"{type(tok).__name__}")
    return int(tok.context_length)


def build_tokenizer(context_length: int, out: Path) -> dict:
    """Write `tokenizer.json` reproducing open_clip's SimpleTokenizer; returns its facts for the manifest."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    simple = _simple_tokenizer(context_length)
    merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)
    bpe = models.BPE(vocab=dict(simple.encoder), merges=[tuple(m) for m in merges], end_of_word_suffix="</w>",
                     continuing_subword_prefix="", fuse_unk=False)
    tok = Tokenizer(bpe)
    replace = [normalizers.Replace(a, b) for a, b in (*_QUOTES.items(), *_LIGATURES.items())]
    replace += [normalizers.Replace(chr(c), chr(c - 0xFEE0)) for c in range(0xFF01, 0xFF5F)]  # full-width ASCII
    replace += [normalizers.Replace(a, b) for a, b in _ENTITIES]
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(), *replace, normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(),
        normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    sot, eot = "<start_of_text>", "<end_of_text>"
    tok.add_special_tokens([sot, eot])
    sot_id, eot_id = simple.encoder[sot], simple.encoder[eot]
    if tok.token_to_id(sot) != sot_id or tok.token_to_id(eot) != eot_id:
        raise ExportError("tokenizer: special token ids differ from open_clip's")
    tok.post_processor = processors.TemplateProcessing(single=f"{sot} $A {eot}", special_tokens=[(sot, sot_id),
                                                                                                 (eot, eot_id)])
    # open_clip truncates [sot] + ids + [eot] to the context and puts eot last:
    # the same as truncating the ids to context - 2 before the template adds both
    tok.enable_truncation(max_length=context_length)
    tok.enable_padding(length=context_length, pad_id=0, pad_token="!")  # open_clip pads with id 0
    tok.save(str(out))
    return {"file": out.name, "context_length": context_length, "vocab_size": tok.get_vocab_size(),
            "sot_token_id": sot_id, "eot_token_id": eot_id, "pad_id": 0}


def can_trim(model: torch.nn.Module) -> bool:
    """Whether the text tower reads nothing after the end token: a causal mask (each position sees
    only those before it) and pooling at the end token (the highest id). Then the padding after the
    end token can be dropped, so a 3-word phrase runs ~6 positions instead of context_length."""
    mask = getattr(model, "attn_mask", None)
    if mask is None or getattr(model, "text_pool_type", None) != "argmax":
        return False
    blocks = getattr(getattr(model, "transformer", None), "resblocks", [])
    if not blocks or not all(type(b).__name__ == "ResidualAttentionBlock" and b.attn.batch_first
                             and b.attn.in_proj_weight is not None for b in blocks):
        return False  # _block below re-traces exactly open_clip's plain block
    upper = torch.triu(torch.ones_like(mask, dtype=torch.bool), diagonal=1)
    return bool(torch.isinf(mask[upper]).all() and (mask[~upper] == 0).all())


class TextTower(torch.nn.Module):
    """Token ids (N x L, L <= context_length when `trim`) -> the teacher's unit-length text embedding."""

    def __init__(self, model: torch.nn.Module, trim: bool):
        super().__init__()
        self.model, self.trim = model, trim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.model
        if not self.trim:
            return m.encode_text(tokens, normalize=True)
        n = tokens.shape[1]  # open_clip's encode_text with the positions and mask cut to the tokens given
        x = m.token_embedding(tokens) + m.positional_embedding[:n]
        mask = m.attn_mask[:n, :n]
        for block in m.transformer.resblocks:
            x = _block(block, x, mask)
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
        if m.text_projection is not None:
            x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
        return torch.nn.functional.normalize(x, dim=-1)


def _attention(attn: torch.nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """nn.MultiheadAttention (batch first, self-attention) with every reshape leaving the token
    axis free: traced through torch's own module, the token count is baked in as a constant."""
    b, d, h = x.shape[0], attn.embed_dim, attn.num_heads
    q, k, v = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, -1, h, d // h).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out_proj(out.transpose(1, 2).reshape(b, -1, d))


def _block(block: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """open_clip's ResidualAttentionBlock.forward, with `_attention`."""
    x = x + block.ls_1(_attention(block.attn, block.ln_1(x), mask))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def export_text_onnx(model: torch.nn.Module, context_length: int, path: Path) -> bool:
    """Write the ONNX tower; returns whether it takes trimmed token rows (see `can_trim`)."""
    trim = can_trim(model)
    tower = TextTower(model, trim).eval()
    dummy = torch.zeros(2, context_length, dtype=torch.long)
    dummy[:, 0], dummy[:, 1] = 49406, 49407
    axes = {0: "batch", 1: "tokens"} if trim else {0: "batch"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(tower, (dummy,), str(path), input_names=[TEXT_INPUT], output_names=[TEXT_OUTPUT],
                              dynamic_axes={TEXT_INPUT: axes, TEXT_OUTPUT: {0: "batch"}},
                              opset_version=OPSET, do_constant_folding=True, dynamo=False)
    except Exception as e:
        raise ExportError(f"text tower ONNX export failed ({type(e).__name__}: {str(e)[:200]})") from None
    return trim


def quantize_text_int8(fp32: Path, out: Path) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("root").setLevel(logging.ERROR)
    settings = {"method": "dynamic", "weights": "QInt8", "per_channel": False, "op_types": ["MatMul", "Gemm", "Gather"]}
    try:
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=False,
                         op_types_to_quantize=settings["op_types"])
    except Exception as e:
        raise ExportError(f"text tower int8 quantization failed ({type(e).__name__}: {str(e)[:200]})") from None
    return settings


@torch.no_grad()
def torch_text_embed(model: torch.nn.Module, tokens: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    out = [model.encode_text(torch.from_numpy(tokens[i:i + batch]), normalize=True).float().numpy()
           for i in range(0, len(tokens), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def text_encoder(model_path: Path, tokenizer_path: Path, threads: int, trim: bool = False) -> TextEncoder:
    return TextEncoder(model_path, tokenizer_path, input_name=TEXT_INPUT, output_name=TEXT_OUTPUT, threads=threads,
                       trim=trim)


def gate_figures(fp32: TextEncoder, int8: TextEncoder, phrases: tuple[str, ...] = GATE_PHRASES) -> dict:
    a, b = fp32.embed(list(phrases)), int8.embed(list(phrases))
    cos = (a * b).sum(1)
    return {"mean_cosine": round(float(cos.mean()), 5), "min_cosine": round(float(cos.min()), 5),
            "phrases": len(phrases)}


def tokenizer_parity(model_name: str, encoder: TextEncoder, phrases: list[str]) -> dict:
    """Token ids from the shipped tokenizer.json vs open_clip's own tokenizer."""
    ref = open_clip.get_tokenizer(model_name)(phrases).numpy()
    got = encoder.tokenize(phrases)
    same = (ref == got).all(1)
    return {"strings": len(phrases), "identical": int(same.sum()),
            "differing": [p for p, s in zip(phrases, same) if not s][:5]}



# --- the export step: tower, tokenizer, product-text index, measurements ------
TEXT_FILE, TOKENIZER_FILE, TEXT_INDEX_FILE = "text.onnx", "tokenizer.json", "text_index.usearch"
PRODUCT_TEXT_WEIGHTS = tuple(round(w, 2) for w in np.linspace(0, 1, 11))


def recall(scores: np.ndarray, truth: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict:
    """Recall@k of product-level scores; a tie with the true product counts against it."""
    if len(scores) == 0:
        return {f"recall@{k}": None for k in ks}
    own = scores[np.arange(len(scores)), truth][:, None]
    better = (scores > own).sum(1) + ((scores == own).sum(1) - 1)
    return {f"recall@{k}": round(float((better < k).mean()), 4) for k in ks}


def query_sets(products: ProductTable) -> dict[str, tuple[list[str], np.ndarray]]:
    """The product-text queries measured at export: names, and names + descriptions."""
    from .finetune import product_text

    items = list(enumerate(products.products))
    return {"names": ([p.name for _, p in items], np.arange(len(items))),
            "names_descriptions": ([product_text(p.name, p.description) for _, p in items], np.arange(len(items)))}


def choose_product_text_weight(image_scores: dict[str, np.ndarray], text_scores: dict[str, np.ndarray],
                               truth: dict[str, np.ndarray]) -> tuple[float, list[dict]]:
    """The w of (1 - w) * image + w * product text that ranks the queries' own products best
    (mean recall@1 over the query sets, then recall@5; ties go to the smaller w)."""
    curve = []
    for w in PRODUCT_TEXT_WEIGHTS:
        row = {"w": w}
        for name in image_scores:
            row[name] = recall((1 - w) * image_scores[name] + w * text_scores[name], truth[name])
        curve.append(row)
    key = lambda r: (np.mean([r[n]["recall@1"] for n in image_scores]),  # noqa: E731
                     np.mean([r[n]["recall@5"] for n in image_scores]), -r["w"])
    return max(curve, key=key)["w"], curve


def export_text(teacher, stage: Path, products: ProductTable, catalogs: dict[str, np.ndarray], index_name: str,
                *, quantize: bool, threads: int, check: Callable[[str, float, float], None], gates,
                shipped: tuple[str, np.ndarray, ProductTable] | None = None) -> tuple:
    """Write text.onnx, tokenizer.json and text_index.usearch into `stage`.

    `catalogs` holds image-key vectors of the catalog by who embedded them
    ("teacher", "student"); `index_name` names the one the product-text weight
    is chosen against. `shipped` is the bundle's own index (its catalog encoder,
    vectors, key table), measured too when it mixes encoders ("teacher+student").
    Returns (TextInfo, fidelity figures)."""
    from edge_search.core.index import VectorIndex
    from edge_search.core.manifest import DEFAULT_FUSION_ALPHA, TextInfo

    ctx = check_tokenizer(teacher.name)
    tok_info = build_tokenizer(ctx, stage / TOKENIZER_FILE)
    fp32_path = stage / (TEXT_FILE if not quantize else ".text.fp32.onnx")
    trim = export_text_onnx(teacher.model, ctx, fp32_path)
    fp32 = text_encoder(fp32_path, stage / TOKENIZER_FILE, threads, trim)
    phrases = list(GATE_PHRASES)
    parity = tokenizer_parity(teacher.name, fp32, phrases)
    if parity["identical"] != parity["strings"]:
        raise ExportError(f"tokenizer.json differs from open_clip's tokenizer on {parity['differing']}")
    # torch at the full context length against ONNX on rows trimmed after the end token
    ref = torch_text_embed(teacher.model, fp32.tokenize(phrases))
    onnx_cos = float((ref * fp32.embed(phrases)).sum(1).min())
    check("text onnx-vs-torch min cosine", onnx_cos, gates.onnx_min_cosine)
    fidelity: dict = {"tokenizer": {**tok_info, "parity_with_open_clip": parity},
                      "onnx_vs_torch": {"min_cosine": round(onnx_cos, 6), "phrases": len(phrases)}}
    enc = fp32
    if quantize:
        fidelity["quantization"] = quantize_text_int8(fp32_path, stage / TEXT_FILE)
        enc = text_encoder(stage / TEXT_FILE, stage / TOKENIZER_FILE, threads, trim)
        fig = gate_figures(fp32, enc, GATE_PHRASES)
        fidelity["int8_vs_fp32"] = {**fig, "thresholds": {"mean_cosine": gates.text_int8_mean_cosine,
                                                         "min_cosine": gates.text_int8_min_cosine}}
        check("text int8-vs-fp32 mean cosine", fig["mean_cosine"], gates.text_int8_mean_cosine)
        check("text int8-vs-fp32 min cosine", fig["min_cosine"], gates.text_int8_min_cosine)
        fp32_path.unlink()

    # how well words find pictures: the device's text tower against each catalog embedding
    sets = query_sets(products)
    q = {name: enc.embed(texts) for name, (texts, _) in sets.items()}
    truth = {name: t for name, (_, t) in sets.items()}
    fidelity["text_to_image"] = {
        by: {name: recall(products.best_scores(q[name] @ vecs.T), truth[name]) for name in sets}
        for by, vecs in catalogs.items()}
    if shipped is not None and shipped[0] not in catalogs:
        by, vecs, table = shipped
        fidelity["text_to_image"][by] = {name: recall(table.best_scores(q[name] @ vecs.T), truth[name]) for name in sets}
    fidelity["text_to_image"]["queries"] = {name: len(t) for name, (t, _) in sets.items()}

    # each product's own words, indexed: one vector per product, key = its position
    from .finetune import product_text

    text_vecs = enc.embed([product_text(p.name, p.description) for p in products.products])
    VectorIndex.build(text_vecs, dtype="f32", exact=True).save(stage / TEXT_INDEX_FILE)
    image = {name: products.best_scores(q[name] @ catalogs[index_name].T) for name in sets}
    text = {name: q[name] @ text_vecs.T for name in sets}
    w, curve = choose_product_text_weight(image, text, truth)
    fidelity["product_text_weight"] = {"chosen": w, "curve": curve, "catalog": index_name,
                                       "rule": "max mean recall@1 over names and names+descriptions, "
                                               "then recall@5, then the smaller w"}
    info = TextInfo(file=TEXT_FILE, input=TEXT_INPUT, output=TEXT_OUTPUT, precision="int8" if quantize else "fp32",
                    opset=OPSET, context_length=ctx, tokenizer=TOKENIZER_FILE, index=TEXT_INDEX_FILE,
                    product_text_weight=w, fusion_alpha=DEFAULT_FUSION_ALPHA, trim_padding=trim)
    return info, fidelity
