"""`edge-search inspect`: a bundle's summary, from its manifest's typed records, and its checksums verified."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from edge_search.cli.output import say
from edge_search.errors import ManifestError

if TYPE_CHECKING:
    from edge_search.core.manifest import FidelityRecord, StudentRecord, TeacherRecord


def _or(value, unknown: str = "?") -> str:
    return unknown if value is None else str(value)


def _section(label: str, build) -> None:
    """Lines drawn from one of the manifest's records (teacher, student, fidelity): a malformed record
    is named, field and problem, in its place; the rest of the summary still shows."""
    try:
        lines = build()
    except ManifestError as e:
        lines = [f"{label:<12}(malformed in the manifest: {e.detail})"]
    for line in lines:
        say(line)


def _teacher(t: TeacherRecord) -> list[str]:
    random_note = "  ** RANDOM WEIGHTS: pipeline check only **" if t.random_weights else ""
    return [f"teacher     {_or(t.model)} / {_or(t.pretrained)}  licence: {_or(t.licence, 'not recorded')}{random_note}"]


def _student(s: StudentRecord | None) -> list[str]:
    if s is None:
        return ["student     none (the teacher's own image tower)"]
    return [f"student     {_or(s.arch)} at {_or(s.image_size)} px, {_or(s.params)} params, "
            f"{_or(s.epochs)} epochs on {_or(s.views)} views ({_or(s.loss)})"]


def _num(v: float | None, digits: int) -> str:
    return "?" if v is None else f"{v:.{digits}f}"


def _fidelity(f: FidelityRecord) -> list[str]:
    rows = []
    for form, q in (("int8", f.int8_vs_fp32), ("fp16", f.fp16_vs_fp32)):
        if q is not None:
            rows.append(f"{form} vs fp32: mean cosine {_num(q.mean_cosine, 4)}, top-1 agreement {_num(q.top1_agreement, 3)}")
    if f.precision is not None:
        timed = ", ".join(f"{k} {_num(v, 2)} ms" for k, v in f.precision.ms_p50.items())
        rows.append(f"timed at export (batch 1, p50): {timed} (shipped {_or(f.precision.chosen)})")
    if f.onnx_vs_torch is not None:
        rows.append(f"onnx vs torch: min cosine {_num(f.onnx_vs_torch.min_cosine, 6)}")
    if f.catalog_encoder is not None:
        ce = f.catalog_encoder
        figures = ", ".join(f"{k} {_num(v, 3)}" for k, v in ce.top1.items())
        on = "held-out photo" if ce.decided_by == "held_out_photo_top1" else "augmented-photo"
        rows.append(f"{on} top-1 by catalog encoder: {figures} (chose {_or(ce.chosen)})")
    if f.index_agreement:
        rows.append("index vs exact f32: " + ", ".join(f"{label} {_num(v, 4)}" for label, v in f.index_agreement))
    return [f"{'fidelity' if i == 0 else '':<12}{row}" for i, row in enumerate(rows)]


def _text(bundle) -> list[str]:
    m = bundle.manifest
    if m.text is None:
        return ["text        none (exported without --with-text: photo search only)"]
    f = m.fidelity_record()
    q8 = f.text_int8_vs_fp32
    gate = f", int8 vs fp32 mean cosine {_num(q8.mean_cosine, 4)} (min {_num(q8.min_cosine, 4)})" if q8 else ""
    lines = [f"text        {m.text.file} {m.text.precision}, {bundle.path(m.text.file).stat().st_size / 1e6:.2f} MB, "
             f"{m.text.tokenizer} ({m.text.context_length} tokens){gate}"]
    names = f.text_names_recall.get(m.index.catalog_encoder)
    if names:
        lines.append(f"            names -> products: recall@1 {_num(names[0], 3)}, @5 {_num(names[1], 3)}; "
                     f"product-text weight {m.text.product_text_weight}, photo+words alpha {m.text.fusion_alpha}")
    return lines


def run_inspect(args: argparse.Namespace) -> int:
    from edge_search.core.bundle import Bundle

    bundle = Bundle.open(args.bundle, verify=False)
    m = bundle.manifest
    checked = bundle.verify()
    say(f"bundle      {bundle.root}  ({m.name}, created {m.created}, schema {m.schema_version})")
    _section("teacher", lambda: _teacher(m.teacher_record()))
    _section("student", lambda: _student(m.student_record()))
    size = bundle.path(m.model.file).stat().st_size
    say(f"model       {m.model.file}  {m.model.precision}, {size / 1e6:.2f} MB, "
        f"'{m.model.input}' -> '{m.model.output}' ({m.model.embed_dim}-d), opset {m.model.opset}")
    p = m.preprocess
    say(f"preprocess  {p.size[0]}x{p.size[1]} {p.resize_mode}, {p.interpolation} (OpenCV {p.cv2_interpolation}), "
        f"mean {tuple(round(x, 4) for x in p.mean)}, std {tuple(round(x, 4) for x in p.std)}")
    ix = m.index
    ix_size = sum(bundle.path(name).stat().st_size for name in ix.files())
    say(f"index       {ix.file}  {ix.live} vectors, {ix.dtype}"
        f"{' on a projected graph' if ix.projection_file else ''}"
        f"{' + f16 rescoring' if ix.rescore_file else ''}, {ix.metric}, {'exact' if ix.exact else 'HNSW'} search, "
        f"{ix_size / max(1, ix.key_space):.0f} bytes/vector, catalog embedded by the {ix.catalog_encoder}")
    if ix.delta is not None:
        say(f"            segmented: {ix.count} in the base's file, {ix.delta.count} added in "
            f"{ix.delta.file or '(none)'}, {ix.delta.removed} removed")
    say(f"products    {m.product_count}  (min score {m.min_score:.3f})")
    _section("fidelity", lambda: _fidelity(m.fidelity_record()))
    _section("text", lambda: _text(bundle))
    say(f"checksums   {len(checked)} files verified")
    return 0


def add_parsers(sub) -> None:
    i = sub.add_parser("inspect", help="summarize a bundle and verify its checksums")
    i.add_argument("bundle")
    i.set_defaults(func=run_inspect)
