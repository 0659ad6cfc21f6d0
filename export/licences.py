"""Licences of known open_clip pretrained weights, for the manifest.

A commercial kiosk cannot ship research-only weights, so the export records
what it used. Unknown tags and local files are recorded as unknown, not guessed.
"""

from __future__ import annotations

# (model, tag) -> licence of the weights, from the weights' model cards.
KNOWN = {
    ("ViT-B-32", "laion2b_s34b_b79k"): "MIT",
    ("ViT-B-32", "laion2b_e16"): "MIT",
    ("ViT-B-32", "laion400m_e32"): "MIT",
    ("ViT-B-32", "datacomp_xl_s13b_b90k"): "MIT",
    ("ViT-B-16", "laion2b_s34b_b88k"): "MIT",
    ("ViT-B-16", "datacomp_xl_s13b_b90k"): "MIT",
    ("ViT-L-14", "laion2b_s32b_b82k"): "MIT",
    ("ViT-B-32", "openai"): "MIT (OpenAI's model card puts deployed use out of scope)",
    ("ViT-B-16", "openai"): "MIT (OpenAI's model card puts deployed use out of scope)",
    ("ViT-B-16-SigLIP", "webli"): "Apache-2.0",
    ("ViT-B-16-SigLIP2", "webli"): "Apache-2.0",
}
RESEARCH_ONLY_PREFIXES = ("MobileCLIP",)  # Apple AMLR licence: research use


def licence_for(model: str, pretrained: str | None, is_file: bool) -> str:
    if pretrained is None or pretrained == "random":
        return "none (random weights)"
    if is_file:
        return "unknown (local checkpoint: check its licence before shipping)"
    if model.startswith(RESEARCH_ONLY_PREFIXES):
        return "apple-amlr (research only: do not ship commercially)"
    return KNOWN.get((model, pretrained), "unknown (check the weights' model card before shipping)")
