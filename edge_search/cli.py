"""The `edge-search` command: parses arguments, calls the core, prints.

The only place that turns our errors into messages and exit codes. Export
and demo code (torch) is imported only when those commands run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from . import __version__
from .display import printable
from .errors import EdgeSearchError
from .files import check_writable_folder

PROG = "edge-search"


def _say(text: object = "", *, file=None, flush: bool = False) -> None:
    """Print one human-readable line: catalog text (ids, names, categories, bundle names) can hold
    terminal escapes, so every control character is shown escaped (display.printable)."""
    print(printable(text), file=file if file is not None else sys.stdout, flush=flush)


class _PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def _setup_logging() -> None:
    # Libraries under the export (open_clip, huggingface_hub, the quantizer)
    # log chatter on the root logger; users see only our own warnings.
    logging.basicConfig(level=logging.CRITICAL)
    ours = logging.getLogger("edge_search")
    ours.setLevel(logging.WARNING)  # --quiet hides progress bars, never warnings
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter(f"{PROG}: %(levelname)s: %(message)s"))
    ours.handlers[:] = [handler]
    ours.propagate = False


def _fmt_price(price: float | None) -> str:
    return "" if price is None else f"{price:.2f}"


def _refusal(searcher, result, min_score: float | None) -> str:
    """Words for why a photo got "no match" (the calibrated rule has three reasons)."""
    cal = None if min_score is not None else searcher.calibration
    if cal is not None and cal.negative_margin is not None and \
            result.best_score - result.negative_score < cal.negative_margin:
        return (f"it looks like a scene with no product: nearest such scene {result.negative_score:.3f}, "
                f"best product {result.best_score:.3f}")
    if cal is not None and result.margin < cal.min_margin:
        return f"the top two products are {result.margin:.3f} apart, under the {cal.min_margin:.3f} needed"
    threshold = searcher.min_score if min_score is None else min_score
    return f"best score {result.best_score:.3f} is below {'its floor' if cal else f'{threshold:.3f}'}"


def cmd_search(args: argparse.Namespace) -> int:
    from .filters import Filter
    from .search import QueryParams, Searcher

    if not args.images and args.text is None:
        raise EdgeSearchError("search needs IMAGE(s), --text WORDS, or both")
    if args.alpha is not None and not (args.images and args.text is not None):
        raise EdgeSearchError("--alpha weighs a photo against words: give IMAGE(s) and --text")
    QueryParams(k=args.k, min_score=args.min_score)  # a bad -k fails before the bundle is loaded
    searcher = Searcher.from_bundle(args.bundle, trusted_key=_trusted(args))
    flt = Filter.parse(args.filter, searcher.products) if args.filter else None
    queries = args.images or [None]
    for image in queries:
        if image is None:
            result = searcher.search_text(args.text, k=args.k, min_score=args.min_score, filter=flt)
        else:
            result = searcher.search_image(image, k=args.k, min_score=args.min_score, filter=flt, text=args.text,
                                           alpha=args.alpha)
        label = image if image is not None else args.text
        if args.json:
            line = {"query": label,
                    "results": [h.to_json() for h in result.hits],
                    "no_match": result.no_match,
                    "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()}}
            if image is not None and args.text is not None:
                line["text"] = args.text
            if flt:
                line["filter"] = str(flt)
            print(json.dumps(line, ensure_ascii=False), flush=True)
            continue
        _say(label if image is None or args.text is None else f"{image} + {args.text!r}")
        if flt:
            _say(f"  filter: {flt}")
        if result.no_match:
            if not result.hits and result.best_score == float("-inf"):
                _say("  no product passes the filter")
            else:
                _say(f"  no match ({_refusal(searcher, result, args.min_score)})")
        for rank, h in enumerate(result.hits, 1):
            mark = " (exact)" if h.exact else ""
            _say(f"  {rank}. {h.score:6.3f}  {printable(h.id):<24} {printable(h.name) + mark:<32} {_fmt_price(h.price):>8}")
        t = result.timings_ms
        _say(f"  embed {t['embed']:.1f} ms, search {t['search']:.2f} ms")
    return 0


def _record_lines(label: str, build) -> None:
    """Lines drawn from the manifest's free-form records (teacher, student, fidelity): a record of the
    wrong shape is reported as such, in its place, instead of crashing the whole summary."""
    try:
        lines = build()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        lines = [f"{label:<12}(malformed in the manifest)"]
    for line in lines:
        _say(line)


def cmd_inspect(args: argparse.Namespace) -> int:
    from .bundle import Bundle

    bundle = Bundle.open(args.bundle, verify=False)
    m = bundle.manifest
    checked = bundle.verify()
    t, s, fid = m.teacher, m.student, m.fidelity
    _say(f"bundle      {bundle.root}  ({m.name}, created {m.created}, schema {m.schema_version})")

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
    _say(f"model       {m.model.file}  {m.model.precision}, {size / 1e6:.2f} MB, "
         f"'{m.model.input}' -> '{m.model.output}' ({m.model.embed_dim}-d), opset {m.model.opset}")
    p = m.preprocess
    _say(f"preprocess  {p.size[0]}x{p.size[1]} {p.resize_mode}, {p.interpolation} (OpenCV {p.cv2_interpolation}), "
         f"mean {tuple(round(x, 4) for x in p.mean)}, std {tuple(round(x, 4) for x in p.std)}")
    ix = m.index
    ix_size = bundle.path(ix.file).stat().st_size + (bundle.path(ix.rescore_file).stat().st_size if ix.rescore_file else 0)
    _say(f"index       {ix.file}  {ix.count} vectors, {ix.dtype}"
         f"{' + f16 rescoring' if ix.rescore_file else ''}, {ix.metric}, {'exact' if ix.exact else 'HNSW'} search, "
         f"{ix_size / max(1, ix.count):.0f} bytes/vector, catalog embedded by the {ix.catalog_encoder}")
    _say(f"products    {m.product_count}  (min score {m.min_score:.3f})")

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
    _say(f"checksums   {len(checked)} files verified")
    return 0


def _parse_gates(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip().replace("-", "_")] = float(value)
        except ValueError:
            raise EdgeSearchError(f"--gate {item!r}: expected NAME=NUMBER, e.g. int8_top1_agreement=0.9") from None
        if not sep:
            raise EdgeSearchError(f"--gate {item!r}: expected NAME=NUMBER, e.g. int8_top1_agreement=0.9")
    return out


# what `pip install 'edge-search[export]'` adds (pyproject.toml), by import name
EXPORT_MODULES = ("torch", "torchvision", "open_clip", "timm", "onnx", "tqdm", "PIL")


def _need_export_extra(command: str) -> None:
    """One line, before anything runs, when the [export] extra is missing (never a ModuleNotFoundError)."""
    import importlib.util

    missing = [m for m in EXPORT_MODULES if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("edge_search_export") is None:
        missing.append("edge_search_export")
    if missing:
        raise EdgeSearchError(f"{command} needs the [export] extra ({', '.join(missing)} not installed): "
                              "pip install 'edge-search[export]'")


def cmd_export(args: argparse.Namespace) -> int:
    _need_export_extra("export")
    from edge_search_export.config import ExportConfig
    from edge_search_export.pipeline import run_export

    cfg = ExportConfig(
        catalog=Path(args.catalog), out=Path(args.out), teacher=args.teacher, pretrained=args.pretrained,
        student=None if args.student == "none" else args.student, student_pretrained=args.student_pretrained,
        distill_images=tuple(Path(p) for p in args.distill_images), epochs=args.epochs,
        views_per_image=args.views_per_image, image_size=args.image_size, quantize=args.quantize,
        label_weight=args.distill_label_weight, index_dtype=args.index_dtype, catalog_encoder=args.catalog_encoder, seed=args.seed,
        skip_bad=args.skip_bad, force=args.force, name=args.name,
        finetune_labeled=Path(args.finetune_labeled) if args.finetune_labeled else None,
        save_models=Path(args.save_models) if args.save_models else None, with_text=args.with_text,
        sign_key=Path(args.sign_key) if args.sign_key else None,
        negatives=Path(args.negatives) if args.negatives else None,
    )
    if args.no_match_rule != "auto":
        cfg = replace(cfg, no_match=replace(cfg.no_match, rule=args.no_match_rule))
    if (args.finetune_epochs is not None or args.finetune_batch is not None) and not args.finetune_labeled:
        raise EdgeSearchError("--finetune-epochs and --finetune-batch need --finetune-labeled")
    if args.finetune_epochs is not None or args.finetune_batch is not None:
        cfg = replace(cfg, finetune=replace(cfg.finetune, **{k: v for k, v in (
            ("epochs", args.finetune_epochs), ("batch_size", args.finetune_batch)) if v is not None}))
    if args.gate:
        cfg = replace(cfg, gates=cfg.gates.with_overrides(_parse_gates(args.gate)))
    summary = run_export(cfg, progress=not args.quiet)
    m = summary.manifest
    for line in summary.skipped:
        _say(f"skipped: {line}", file=sys.stderr)
    images = m.fidelity.get("catalog", {}).get("images", m.index.count)
    _say(f"wrote {summary.out}: {m.product_count} products, {images} images, model {m.model.precision}, "
          f"index {m.index.dtype} ({summary.seconds:.0f} s)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _need_export_extra("demo")
    from .demo import run_demo

    report = run_demo(Path(args.workdir), progress=not args.quiet, epochs=args.epochs)
    if report.random_teacher:
        _say(f"note: {report.fallback_reason}")
        _say("note: ran with --pretrained random instead: this is a PIPELINE CHECK, not a quality result.")
    _say(f"bundle: {report.bundle} (exported in {report.export_seconds:.0f} s)")
    for path, want, result in report.queries:
        top = result.hits[0] if result.hits else None
        mark = "ok " if top and top.id == want else "-- "
        got = f"{top.id} ({top.score:.3f})" if top else "no match"
        _say(f"  {mark}{Path(path).name:<24} -> {got:<28} embed {result.timings_ms['embed']:.1f} ms, "
              f"search {result.timings_ms['search']:.2f} ms")
    _say(f"top-1 on {len(report.queries)} photos: {report.top1:.0%}"
          + (" (random teacher: expect little)" if report.random_teacher else ""))
    _say(f"try: edge-search search --bundle {report.bundle} {report.queries[0][0]}")
    return 0


# --- run: the kiosk (issue 3) ------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from .frames import open_source
    from .kiosk import (BundleSwapFailed, BundleSwapped, BundleWatcher, FrameSaver, Lookup, Pipeline,
                        check_k, open_or_fail, run_kiosk)
    from .bundle import Bundle
    from .filters import Filter
    from .search import Searcher

    from .search import QueryParams

    check_k(args.k)  # before any screen or camera: the kiosk's own rules, then the searcher's
    QueryParams(k=args.k, min_score=args.min_score)
    if args.max_frames is not None and args.max_frames < 1:
        raise EdgeSearchError(f"--max-frames must be at least 1, got {args.max_frames}")
    trusted = _trusted(args)
    # a wrong path or an untrusted bundle fails here, in one line, before any screen
    Bundle.open(Path(args.bundle), verify=False, trusted_key=trusted)
    flt = Filter.parse(args.filter) if args.filter else None  # fields are checked once the bundle is open
    # headless output must not depend on this machine's speed: files and folders hand over every frame
    source = open_source(args.source, realtime=not args.no_tui)
    saver = FrameSaver(args.save_frames) if args.save_frames else None
    # a new active bundle (DIR/current switched by install) is loaded aside and swapped in between frames
    watcher = BundleWatcher(args.bundle, lambda path: Searcher.from_bundle(path, trusted_key=trusted))
    if not args.no_tui:
        from .tui import build_app  # textual is imported only for the screen

        app = build_app(source=source, loader=lambda: Searcher.from_bundle(args.bundle, trusted_key=trusted),
                        k=args.k, min_score=args.min_score, saver=saver, max_frames=args.max_frames,
                        filter=flt, watcher=watcher)
        app.run()
        if app.fatal:
            raise EdgeSearchError(app.fatal)
        return 0
    searcher = Searcher.from_bundle(args.bundle, trusted_key=trusted)
    pipeline = Pipeline(searcher, k=args.k, min_score=args.min_score)
    pipeline.filter = Filter.parse(args.filter, searcher.products) if flt else None
    open_or_fail(source)
    try:
        for event in run_kiosk(source, pipeline, max_frames=args.max_frames, saver=saver, watcher=watcher):
            if isinstance(event, Lookup):
                print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)
            elif isinstance(event, BundleSwapped):
                _say(f"{PROG}: {event.text}", file=sys.stderr, flush=True)
            elif isinstance(event, BundleSwapFailed):
                _say(f"{PROG}: warning: {event.text}", file=sys.stderr, flush=True)
            elif getattr(event, "state", None) == "lost":  # a camera or stream: retried, so a warning
                _say(f"{PROG}: warning: {event.text}", file=sys.stderr, flush=True)
            elif getattr(event, "state", None) == "failed":  # a file that broke part way
                raise EdgeSearchError(event.message)
    finally:
        source.stop()
    return 0
# --- end run -----------------------------------------------------------------


# --- eval: retrieval quality on labeled photos (issue 4) ----------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, read_queries
    from .search import Searcher

    if args.report:  # a report folder that cannot be written fails now, not after every query has run
        check_writable_folder(args.report, "--report")
    queries = read_queries(args.queries)
    searcher = Searcher.from_bundle(args.bundle, trusted_key=_trusted(args))
    report = evaluate(searcher, queries)
    if args.report:
        from .eval_report import write_report

        write_report(report, Path(args.report), title=f"edge-search eval: {Path(args.bundle).name} on {Path(args.queries).name}")
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
        return 0
    _say(f"{report.queries} queries against {searcher.manifest.name if searcher.manifest else args.bundle}")
    _say("  " + "  ".join(f"recall@{k} {v:.3f}" for k, v in report.recall.items()))
    rule = "calibrated rule" if report.calibrated else f"threshold {report.min_score:.3f}"
    _say(f"  MRR {report.mrr:.3f}   no match {report.no_match_share:.1%} of in-catalog photos ({rule})")
    if report.false_reject_of_correct is not None:
        _say(f"  false rejects: {report.false_reject_of_correct:.1%} of the photos ranked right")
    if report.reject_recall is not None:
        _say(f"  reject recall: {report.reject_recall:.1%} of {len(report.unknown_ids)} photos of products "
              "the bundle lacks answered no match")
    lat = report.latency_ms
    _say(f"  embed {lat['embed_p50']:.1f} / {lat['embed_p95']:.1f} ms, search {lat['search_p50']:.2f} / "
          f"{lat['search_p95']:.2f} ms (p50 / p95)")
    worst = sorted(report.per_category.items(), key=lambda kv: kv[1]["recall@1"])[:5]
    _say("  worst categories: " + ", ".join(f"{c} {v['recall@1']:.2f} ({v['queries']})" for c, v in worst))
    if report.confused:
        _say("  most confused: " + ", ".join(f"{c['true']} -> {c['predicted']} x{c['count']}" for c in report.confused[:5]))
    for line in report.unknown_ids:
        _say(f"  not in the bundle (counted for reject recall only): {line}", file=sys.stderr)
    for line in report.unreadable:
        _say(f"  not counted: {line}", file=sys.stderr)
    if args.report:
        _say(f"  report: {Path(args.report) / 'report.md'}")
    return 0
# --- end eval -----------------------------------------------------------------

# --- signing and shipping (issue 6) ---------------------------------------------
def _trusted(args: argparse.Namespace) -> Path | None:
    """The trusted public key: --trusted-key, else $EDGE_SEARCH_TRUSTED_KEY, else the config file."""
    from .signing import resolve_trusted_key

    return resolve_trusted_key(getattr(args, "trusted_key", None))


def cmd_keygen(args: argparse.Namespace) -> int:
    from .signing import keygen

    private, public = keygen(Path(args.out), name=args.name)
    _say(f"private key {private} (keep it secret: it signs bundles)")
    _say(f"public key  {public} (give it to devices: --trusted-key or "
          f"~/.config/edge-search/trusted.pub.pem)")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from .bundle import Bundle
    from .signing import sign_bundle

    Bundle.open(args.bundle, verify=True)  # never sign a bundle whose files do not match its manifest
    sig = sign_bundle(Path(args.bundle), Path(args.key))
    _say(f"signed {args.bundle}: {sig}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .bundle import Bundle
    from .errors import TrustError

    key = _trusted(args)
    if key is None:
        raise TrustError("verify needs a public key: --trusted-key PUB (or $EDGE_SEARCH_TRUSTED_KEY, "
                         "or ~/.config/edge-search/trusted.pub.pem)")
    bundle = Bundle.open(args.bundle, verify=True, trusted_key=key)
    _say(f"ok: {bundle.root} ({bundle.manifest.name}): signature by {key} valid, "
          f"{len(bundle.manifest.files)} files match their checksums")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from .shipping import pack

    out = pack(Path(args.bundle), Path(args.out), trusted_key=_trusted(args))
    _say(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from .shipping import install

    key = _trusted(args)
    report = install(Path(args.source), Path(args.into), trusted_key=key)
    if report.already_current:
        _say(f"already active: {report.path} (self-test: {report.self_test})")
        return 0
    signed = f"signature checked against {key}" if key else "no trusted key configured: signature not checked"
    _say(f"installed {report.name} -> {Path(args.into) / 'current'} ({signed}; self-test: {report.self_test}; "
          f"{report.seconds:.1f} s)")
    if report.previous:
        _say(f"previous: {report.previous} (edge-search rollback --into {args.into})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from .shipping import rollback

    now, before = rollback(Path(args.into), trusted_key=_trusted(args))
    _say(f"current -> {now} (was {before})")
    return 0
# --- end signing and shipping ------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="On-device visual product search.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="find the products shown in photos")
    s.add_argument("--bundle", required=True, help="bundle directory")
    s.add_argument("images", nargs="*", metavar="IMAGE")
    s.add_argument("--text", default=None, metavar="WORDS",
                   help="search by words; with IMAGE, steer the photo by the words (needs a --with-text bundle)")
    s.add_argument("--alpha", type=float, default=None,
                   help="photo + words: weight of the photo, 0..1 (default: the bundle's, 0.9 when exported now)")
    s.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="keep products where EXPR holds: category=Fruit, price<2.5 (=, !=, <, <=, >, >=; repeatable)")
    s.add_argument("-k", type=int, default=5, help="products to return (default 5)")
    s.add_argument("--min-score", type=float, default=None, help="below this score: no match (default: the bundle's)")
    s.add_argument("--json", action="store_true", help="one JSON object per line per query")
    _trusted_arg(s)
    s.set_defaults(func=cmd_search)

    i = sub.add_parser("inspect", help="summarize a bundle and verify its checksums")
    i.add_argument("bundle")
    i.set_defaults(func=cmd_inspect)

    from .export_defaults import DEFAULT_PRETRAINED, DEFAULT_STUDENT, DEFAULT_TEACHER

    e = sub.add_parser("export", help="build a bundle from a catalog (needs the [export] extra)")
    e.add_argument("--catalog", required=True, help="catalog .csv/.jsonl or folder DIR/<id>/*.jpg")
    e.add_argument("--out", required=True, help="bundle directory to create")
    e.add_argument("--teacher", default=DEFAULT_TEACHER, help=f"open_clip model name or config .json (default {DEFAULT_TEACHER})")
    e.add_argument("--pretrained", default=DEFAULT_PRETRAINED,
                   help=f"pretrained tag, checkpoint file, or 'random' (default {DEFAULT_PRETRAINED})")
    e.add_argument("--student", default=DEFAULT_STUDENT, help=f"timm architecture or 'none' (default {DEFAULT_STUDENT})")
    e.add_argument("--student-pretrained", action="store_true", help="start the student from ImageNet weights (downloads)")
    e.add_argument("--distill-images", nargs="+", default=[], metavar="DIR", help="unlabeled photos to distill on")
    e.add_argument("--epochs", type=int, default=30)
    e.add_argument("--views-per-image", type=int, default=16, help="augmented views per catalog image")
    e.add_argument("--distill-label-weight", type=float, default=1.0, metavar="W",
                   help="weight of the product cross-entropy on views of catalog images and labeled photos "
                        "(0: reproduce the teacher's vectors only)")
    e.add_argument("--image-size", type=int, default=None, help="student input side (default: the teacher's)")
    e.add_argument("--quantize", choices=["int8", "none"], default="int8")
    e.add_argument("--index-dtype", choices=["i8", "f16", "f32"], default=None, help="default: chosen by measurement")
    e.add_argument("--catalog-encoder", choices=["teacher", "student", "teacher+student", "teacher+student+views"],
                   default=None,
                   help="who embeds the catalog (default: chosen by measurement among the options that pass "
                        "the catalog self-retrieval gates)")
    e.add_argument("--negatives", default=None, metavar="DIR",
                   help="photos of scenes with no product (empty counter, hands, floor) that must get 'no match': "
                        "used by the no-match calibration and by fine-tuning/distillation (default: none)")
    e.add_argument("--no-match-rule", default="auto",
                   choices=["auto", "flat", "floor+margin", "product-floors+margin", "negatives",
                            "floor+margin+negatives", "product-floors+margin+negatives"],
                   help="the 'no match' rule (default auto: the candidate that does best at 2-fold "
                        "cross-validation, all fitted to the same false-reject budget; *negatives need --negatives)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--skip-bad", action="store_true", help="skip bad catalog rows instead of stopping")
    e.add_argument("--force", action="store_true", help="replace --out if it exists (only once the new bundle is complete)")
    e.add_argument("--name", default=None, help="bundle name (default: the --out folder's name)")
    e.add_argument("--gate", action="append", default=[], metavar="NAME=VALUE",
                   help="override a fidelity gate's threshold (recorded in the manifest)")
    e.add_argument("--finetune-labeled", default=None, metavar="LABELS.csv",
                   help="image,id photos to adapt the teacher to first (contrastive, against catalog image + text)")
    e.add_argument("--finetune-epochs", type=int, default=None, help="fine-tuning epochs (default 20)")
    e.add_argument("--finetune-batch", type=int, default=None, help="fine-tuning photos per step (default 64)")
    e.add_argument("--save-models", default=None, metavar="DIR",
                   help="also keep the fine-tuned teacher (teacher.pt) and the fp32 student ONNX here")
    e.add_argument("--with-text", action="store_true",
                   help="also ship the teacher's text tower (int8), its tokenizer and a product-text index")
    e.add_argument("--sign-key", default=None, metavar="KEY",
                   help="Ed25519 private key (edge-search keygen): sign the manifest (manifest.sig)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_export)

    d = sub.add_parser("demo", help="make a sample catalog, export it and search it (needs the [export] extra)")
    d.add_argument("--workdir", default="edge-search-demo", help="where the sample, bundle and photos go")
    d.add_argument("--epochs", type=int, default=20)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    # --- eval (issue 4) ---------------------------------------------------------
    v = sub.add_parser("eval", help="measure retrieval quality on labeled photos")
    v.add_argument("--bundle", required=True, help="bundle directory")
    v.add_argument("--queries", required=True, help="CSV with image,id rows (paths relative to it)")
    v.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    v.add_argument("--report", default=None, metavar="DIR", help="also write DIR/report.md and PNG plots")
    _trusted_arg(v)
    v.set_defaults(func=cmd_eval)
    # --- end eval ---------------------------------------------------------------

    # --- run: the kiosk (issue 3) --------------------------------------------
    r = sub.add_parser("run", help="the kiosk: live camera lookup on screen (or JSON lines with --no-tui)")
    r.add_argument("--bundle", required=True, help="bundle directory")
    r.add_argument("--source", default="0",
                   help="camera index, video file, folder of images (played in name order) or stream URL (default 0)")
    r.add_argument("-k", type=int, default=5, help="products to show (default 5; + and - change it on screen)")
    r.add_argument("--min-score", type=float, default=None, help="below this score: no match (default: the bundle's)")
    r.add_argument("--no-tui", action="store_true",
                   help="no screen: one JSON line per search on stdout (files and folders: every frame, in order)")
    r.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames from the source")
    r.add_argument("--save-frames", default=None, metavar="DIR",
                   help="write each searched frame to DIR as JPEG (by default frames never leave memory)")
    r.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="only products where EXPR holds, e.g. category=Fruit, price<2.5 (repeatable; c clears on screen)")
    _trusted_arg(r)
    r.set_defaults(func=cmd_run)
    # --- end run -------------------------------------------------------------

    # --- signing and shipping (issue 6) --------------------------------------
    g = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles")
    g.add_argument("--out", required=True, metavar="DIR", help="folder for NAME.key.pem and NAME.pub.pem")
    g.add_argument("--name", default="edge-search", help="file name stem (default edge-search)")
    g.set_defaults(func=cmd_keygen)

    sg = sub.add_parser("sign", help="sign an existing bundle's manifest (writes manifest.sig)")
    sg.add_argument("bundle")
    sg.add_argument("--key", required=True, help="Ed25519 private key (NAME.key.pem)")
    sg.set_defaults(func=cmd_sign)

    vf = sub.add_parser("verify", help="check a bundle's signature and every checksum")
    vf.add_argument("bundle")
    _trusted_arg(vf)
    vf.set_defaults(func=cmd_verify)

    pk = sub.add_parser("pack", help="write a bundle as one file for shipping (.tar, or .tar.gz)")
    pk.add_argument("bundle")
    pk.add_argument("--out", required=True, metavar="FILE")
    _trusted_arg(pk)
    pk.set_defaults(func=cmd_pack)

    ins = sub.add_parser("install", help="verify a packed bundle (or folder) and make it DIR/current atomically")
    ins.add_argument("source", metavar="FILE_OR_DIR")
    ins.add_argument("--into", required=True, metavar="DIR", help="install folder: DIR/current, DIR/previous")
    _trusted_arg(ins)
    ins.set_defaults(func=cmd_install)

    rb = sub.add_parser("rollback", help="switch DIR/current back to DIR/previous")
    rb.add_argument("--into", required=True, metavar="DIR")
    _trusted_arg(rb)
    rb.set_defaults(func=cmd_rollback)
    # --- end signing and shipping --------------------------------------------
    return p


def _trusted_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trusted-key", default=None, metavar="PUB",
                        help="refuse bundles not signed by this Ed25519 public key (default: "
                             "$EDGE_SEARCH_TRUSTED_KEY, else ~/.config/edge-search/trusted.pub.pem if present)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        return args.func(args)
    except EdgeSearchError as e:
        _say(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        # the file system's own failures (a full disk, a folder we may not write, a symlink loop) that no
        # core function mapped: still one line naming the path, never a traceback
        where = e.filename if e.filename is not None else "edge-search"
        _say(f"{PROG}: error: {printable(where)}: {printable(e.strerror or e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
