"""`edge-search inspect`: a bundle's summary, from its manifest, and its checksums verified."""

from __future__ import annotations

import argparse

from edge_search.cli.output import say


def _record_lines(label: str, build) -> None:
    """Lines drawn from the manifest's free-form records (teacher, student, fidelity): a record of the
    wrong shape is reported as such, in its place, instead of crashing the whole summary."""
    try:
        lines = build()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        lines = [f"{label:<12}(malformed in the manifest)"]
    for line in lines:
        say(line)


def run_inspect(args: argparse.Namespace) -> int:
    from edge_search.core.bundle import Bundle

    bundle = Bundle.open(args.bundle, verify=False)
    m = bundle.manifest
    checked = bundle.verify()
    t, s, fid = m.teacher, m.student, m.fidelity
    say(f"bundle      {bundle.root}  ({m.name}, created {m.created}, schema {m.schema_version})")

    def teacher():
        random_note = "  ** RANDOM WEIGHTS: pipeline check only **" if t.get("random_weights") else ""
        return [f"teacher     {t.get('model')} / {t.get('pretrained')}  licence: {t.get('licence')}{random_note}"]

    def student():
        if not s:
            return ["student     none (the teacher's own image tower)"]
        d = s.get("distillation") or {}
        return [f"student     {s.get('arch')} at {s.get('image_size')} px, {s.get('params')} params, "
                f"{d.get('epochs')} epochs on {d.get('views')} views ({d.get('loss')})"]

    _record_lines("teacher", teacher)
    _record_lines("student", student)
    size = bundle.path(m.model.file).stat().st_size
    say(f"model       {m.model.file}  {m.model.precision}, {size / 1e6:.2f} MB, "
         f"'{m.model.input}' -> '{m.model.output}' ({m.model.embed_dim}-d), opset {m.model.opset}")
    p = m.preprocess
    say(f"preprocess  {p.size[0]}x{p.size[1]} {p.resize_mode}, {p.interpolation} (OpenCV {p.cv2_interpolation}), "
         f"mean {tuple(round(x, 4) for x in p.mean)}, std {tuple(round(x, 4) for x in p.std)}")
    ix = m.index
    ix_size = bundle.path(ix.file).stat().st_size + (bundle.path(ix.rescore_file).stat().st_size if ix.rescore_file else 0)
    say(f"index       {ix.file}  {ix.count} vectors, {ix.dtype}"
         f"{' + f16 rescoring' if ix.rescore_file else ''}, {ix.metric}, {'exact' if ix.exact else 'HNSW'} search, "
         f"{ix_size / max(1, ix.count):.0f} bytes/vector, catalog embedded by the {ix.catalog_encoder}")
    say(f"products    {m.product_count}  (min score {m.min_score:.3f})")

    def fidelity():
        lines = []
        if "int8_vs_fp32" in fid:
            q = fid["int8_vs_fp32"]
            lines.append(f"fidelity    int8 vs fp32: mean cosine {q['mean_cosine']:.4f}, "
                         f"top-1 agreement {q['top1_agreement']:.3f}")
        if "onnx_vs_torch" in fid:
            lines.append(f"            onnx vs torch: min cosine {fid['onnx_vs_torch']['min_cosine']:.6f}")
        if "catalog_encoder" in fid:
            ce = fid["catalog_encoder"]
            measure = ce.get("decided_by", "augmented_query_top1")
            figures = ", ".join(f"{k} {v[measure]:.3f}" for k, v in ce.items() if isinstance(v, dict))
            on = "held-out photo" if measure == "held_out_photo_top1" else "augmented-photo"
            lines.append(f"            {on} top-1 by catalog encoder: {figures} (chose {ce.get('chosen')})")
        if "index" in fid:
            lines.append("            index vs exact f32: " + ", ".join(
                f"{c['label']} {c['top1_agreement_vs_exact_f32']:.4f}" for c in fid["index"]["candidates"]))
        return lines

    def text():
        if m.text is None:
            return ["text        none (exported without --with-text: photo search only)"]
        tf = fid.get("text", {})
        q8 = tf.get("int8_vs_fp32")
        gate = f", int8 vs fp32 mean cosine {q8['mean_cosine']:.4f} (min {q8['min_cosine']:.4f})" if q8 else ""
        lines = [f"text        {m.text.file} {m.text.precision}, {bundle.path(m.text.file).stat().st_size / 1e6:.2f} MB, "
                 f"{m.text.tokenizer} ({m.text.context_length} tokens){gate}"]
        t2i = tf.get("text_to_image", {}).get(m.index.catalog_encoder, {}).get("names")
        if t2i:
            lines.append(f"            names -> products: recall@1 {t2i['recall@1']:.3f}, @5 {t2i['recall@5']:.3f}; "
                         f"product-text weight {m.text.product_text_weight}, photo+words alpha {m.text.fusion_alpha}")
        return lines

    _record_lines("fidelity", fidelity)
    _record_lines("text", text)
    say(f"checksums   {len(checked)} files verified")
    return 0


def add_parsers(sub) -> None:
    i = sub.add_parser("inspect", help="summarize a bundle and verify its checksums")
    i.add_argument("bundle")
    i.set_defaults(func=run_inspect)
