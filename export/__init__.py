"""The export stage: catalog + CLIP teacher -> distilled, quantized bundle.

Installed as the `edge_search_export` package (the `[export]` extra). This is
the only code that imports torch, open_clip, timm and onnx; it reaches the
runtime through `edge_search` (preprocessing, encoder, index) so the catalog
is embedded exactly as queries will be.
"""
