"""The export stage's sub-commands, `edge-search export` and `edge-search demo`.

Registered under the `edge_search.commands` entry-point group (pyproject.toml),
so the runtime's CLI finds them without naming this package. Importing this
module must stay light (no torch): the parser is built on every
`edge-search` call; the stage itself is imported only when a command runs.
Help defaults come from the config dataclasses, which own them.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import fields, replace
from pathlib import Path

from edge_search.cli.output import say
from edge_search.errors import EdgeSearchError

from .config import ExportConfig, FinetuneSettings
from .engine import ENGINES, EngineSettings, check_reachable, need_scale_extra

# what `pip install 'edge-search[export]'` adds (pyproject.toml), by import name
EXPORT_MODULES = ("torch", "torchvision", "open_clip", "timm", "onnx", "tqdm", "PIL")
CATALOG_ENCODERS = ("teacher", "student", "teacher+student", "teacher+student+views")
NO_MATCH_RULES = ("flat", "floor+margin", "product-floors+margin", "negatives",
                  "floor+margin+negatives", "product-floors+margin+negatives")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" where X says something: not to required options, switches, empty
    lists or None (their help says what happens), nor to help that states its own default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if "default" in text or action.required or d is None or d is False or d == [] or d is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def need_export_extra(command: str) -> None:
    """One line, before anything runs, when the [export] extra is missing (never a ModuleNotFoundError)."""
    missing = [m for m in EXPORT_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise EdgeSearchError(f"{command} needs the [export] extra ({', '.join(missing)} not installed): "
                              "pip install 'edge-search[export]'")


def _default(cls, name: str):
    return next(f.default for f in fields(cls) if f.name == name)


def run_export_command(args: argparse.Namespace) -> int:
    if not args.base:  # a catalog build on a base's ONNX models runs without torch
        need_export_extra("export")

    cfg = ExportConfig(
        catalog=Path(args.catalog), out=Path(args.out), teacher=args.teacher, pretrained=args.pretrained,
        student=None if args.student == "none" else args.student, student_pretrained=args.student_pretrained,
        distill_images=tuple(Path(p) for p in args.distill_images), epochs=args.epochs,
        views_per_image=args.views_per_image, colour_cast=args.colour_cast, image_size=args.image_size,
        quantize=args.quantize,
        label_weight=args.distill_label_weight, index_dtype=args.index_dtype,
        index_projection=args.index_projection, catalog_encoder=args.catalog_encoder,
        seed=args.seed, skip_bad=args.skip_bad, force=args.force, name=args.name,
        finetune_labeled=Path(args.finetune_labeled) if args.finetune_labeled else None,
        save_models=Path(args.save_models) if args.save_models else None, with_text=args.with_text,
        sign_key=Path(args.sign_key) if args.sign_key else None,
        negatives=Path(args.negatives) if args.negatives else None,
        base=Path(args.base) if args.base else None, rebase=args.rebase,
        embedding_cache=Path(args.embedding_cache) if args.embedding_cache else None,
        stores=Path(args.stores) if args.stores else None,
        previous=Path(args.previous) if args.previous else None,
        engine=EngineSettings(name=args.engine, address=args.ray_address, workers=args.ray_workers),
    )
    if cfg.engine.ray:  # before the catalog is read: a missing extra or a silent head is one line, at once
        need_scale_extra()
        if cfg.engine.address is not None:
            check_reachable(cfg.engine.address)
    if args.no_match_rule != "auto":
        cfg = replace(cfg, no_match=replace(cfg.no_match, rule=args.no_match_rule))
    if args.max_false_reject is not None:
        if not 0 <= args.max_false_reject < 0.5:
            raise EdgeSearchError(f"--max-false-reject must be at least 0 and under 0.5, got {args.max_false_reject}")
        cfg = replace(cfg, no_match=replace(cfg.no_match, max_false_reject=args.max_false_reject))
    tuning = (args.finetune_epochs, args.finetune_batch, args.finetune_margin)
    if any(v is not None for v in tuning) and not args.finetune_labeled:
        raise EdgeSearchError("--finetune-epochs, --finetune-batch and --finetune-margin need --finetune-labeled")
    # one store's light for the student's views and, when it is fine-tuned, the teacher's photos alike
    cfg = replace(cfg, finetune=replace(cfg.finetune, colour_cast=args.colour_cast))
    if any(v is not None for v in tuning):
        cfg = replace(cfg, finetune=replace(cfg.finetune, **{k: v for k, v in zip(
            ("epochs", "batch_size", "catalog_margin"), tuning) if v is not None}))
    if args.gate:
        cfg = replace(cfg, gates=cfg.gates.with_spec(args.gate))
    if cfg.base is not None or cfg.stores is not None:
        from .catalog_build import run_catalog_build

        summary = run_catalog_build(cfg, progress=not args.quiet)
    else:
        from .pipeline import run_export

        summary = run_export(cfg, progress=not args.quiet)
    m = summary.manifest
    for line in summary.skipped:
        say(f"skipped: {line}", file=sys.stderr)
    if summary.stores:
        say(f"wrote {len(summary.stores)} store bundles under {summary.out}: {', '.join(summary.stores)} "
            f"({summary.seconds:.0f} s)")
        say(f"embedded {summary.embedded.get('student', 0)} catalog images for all stores together "
            "(the rest from the embedding cache)")
        return 0
    images = m.fidelity.get("catalog", {}).get("images", m.index.count)
    say(f"wrote {summary.out}: {m.product_count} products, {images} images, model {m.model.precision}, "
        f"index {m.index.dtype} ({summary.seconds:.0f} s)")
    if summary.embedded is not None:
        embedded = summary.embedded.get("student", 0)
        say(f"embedded {embedded} of {images} catalog images (the rest from the embedding cache)")
    counts = (m.lineage or {}).get("change_counts")
    if counts:
        say(f"on {m.lineage['base']['name']}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    return 0


DEMO_LEGEND = ("ok = named it, wrong = named another product, "
               "no match = refused (the bundle's no-match rule); top-1 counts only ok")


def demo_lines(report) -> list[str]:
    """The demo's report as printed: notes, a legend, one marked line per photo, top-1."""
    lines = []
    if report.random_teacher:
        lines += [f"note: {report.fallback_reason}",
                  "note: ran with --pretrained random instead: this is a PIPELINE CHECK, not a quality result."]
    lines += [f"bundle: {report.bundle} (exported in {report.export_seconds:.0f} s)",
              f"each photo shows one catalog product: {DEMO_LEGEND}"]
    for path, want, result in report.queries:
        top = result.hits[0] if result.hits else None
        mark = "no match" if top is None else "ok" if top.id == want else "wrong"
        got = f"{top.id} ({top.score:.3f})" if top else "-"
        lines.append(f"  {mark:<9}{Path(path).name:<24} -> {got:<28} embed {result.timings_ms['embed']:.1f} ms, "
                     f"search {result.timings_ms['search']:.2f} ms")
    lines.append(f"top-1 on {len(report.queries)} photos: {report.top1:.0%}"
                 + (" (random teacher: expect little)" if report.random_teacher else ""))
    if report.queries:
        lines.append(f"try: edge-search search --bundle {report.bundle} {report.queries[0][0]}")
    return lines


def run_demo_command(args: argparse.Namespace) -> int:
    need_export_extra("demo")
    from .demo import run_demo

    report = run_demo(Path(args.workdir), progress=not args.quiet, epochs=args.epochs)
    for line in demo_lines(report):
        say(line)
    return 0


def add_export_parser(sub) -> None:
    d = {f.name: f.default for f in fields(ExportConfig) if not callable(getattr(f, "default_factory", None))}
    ft = {f.name: f.default for f in fields(FinetuneSettings)}
    e = sub.add_parser("export", help="build a bundle from a catalog (needs the [export] extra)",
                       formatter_class=DefaultsHelpFormatter)
    e.add_argument("--catalog", required=True, help="catalog .csv/.jsonl or folder DIR/<id>/*.jpg")
    e.add_argument("--out", required=True, help="bundle directory to create")
    e.add_argument("--teacher", default=d["teacher"], help="open_clip model name or config .json")
    e.add_argument("--pretrained", default=d["pretrained"],
                   help="open_clip pretrained tag (downloads), a local checkpoint file, or 'random' "
                        "(random weights: a pipeline check, offline)")
    e.add_argument("--student", default=d["student"],
                   help="timm architecture; 'teacher-tower': the teacher's own tower, one pass at --image-size, "
                        "distilled from its weights; 'none': ship the teacher's tower as it is")
    e.add_argument("--student-pretrained", action="store_true", help="start the student from ImageNet weights (downloads)")
    e.add_argument("--distill-images", nargs="+", default=[], metavar="DIR", help="unlabeled photos to distill on")
    e.add_argument("--epochs", type=int, default=d["epochs"], help="distillation epochs")
    e.add_argument("--views-per-image", type=int, default=d["views_per_image"], help="augmented views per catalog image")
    e.add_argument("--colour-cast", type=float, default=d["colour_cast"], metavar="G",
                   help="scale each colour channel of the distillation views (and, with --finetune-labeled, the "
                        "training photos) by its own gain in [1-G, 1+G], as another store's light would; 0 to 0.5")
    e.add_argument("--distill-label-weight", type=float, default=d["label_weight"], metavar="W",
                   help="weight of the product cross-entropy on views of catalog images and labeled photos "
                        "(0: reproduce the teacher's vectors only)")
    e.add_argument("--image-size", type=int, default=None, help="student input side (default: the teacher's)")
    e.add_argument("--quantize", choices=["auto", "int8", "fp16", "none"], default=d["quantize"],
                   help="the shipped image model's form: int8, fp16-stored weights computed in fp32, plain fp32, "
                        "or auto (both gated, timed here, the faster within 5 MB)")
    e.add_argument("--index-dtype", choices=["i8", "f16", "f32"], default=None,
                   help="index vectors (default: chosen by measurement)")
    e.add_argument("--index-projection", type=int, default=None, metavar="D",
                   help="build the search graph on the catalog vectors' top D principal directions and rescore "
                        "its candidates with the full vectors: faster HNSW on a large catalog (docs/benchmarks: "
                        "1M vectors, D=128); default: the graph holds the vectors themselves")
    e.add_argument("--catalog-encoder", choices=CATALOG_ENCODERS, default=None,
                   help="who embeds the catalog (default: chosen by measurement among the options that pass "
                        "the catalog self-retrieval gates)")
    e.add_argument("--negatives", default=None, metavar="DIR",
                   help="photos of scenes with no product (empty counter, hands, floor) that must get 'no match': "
                        "used by the no-match calibration and by fine-tuning/distillation; with --base, the "
                        "store's own scenes, joined to the base's for the calibration (default: none)")
    e.add_argument("--no-match-rule", default="auto", choices=("auto",) + NO_MATCH_RULES,
                   help="the 'no match' rule (auto: the candidate that does best at 2-fold cross-validation, "
                        "all fitted to the same false-reject budget; *negatives need --negatives)")
    e.add_argument("--max-false-reject", type=float, default=None, metavar="SHARE",
                   help="the share of correctly named calibration photos the 'no match' rule may refuse, 0 to "
                        "0.5 (default 0.05): higher refuses more wrong answers and more right ones "
                        "(docs/benchmarks/grocery.md, no_match.budgets)")
    e.add_argument("--seed", type=int, default=d["seed"], help="seed of every random choice")
    e.add_argument("--skip-bad", action="store_true", help="skip bad catalog rows instead of stopping")
    e.add_argument("--force", action="store_true", help="replace --out if it exists (only once the new bundle is complete)")
    e.add_argument("--name", default=None, help="bundle name (default: the --out folder's name)")
    e.add_argument("--gate", action="append", default=[], metavar="NAME=VALUE",
                   help="override a fidelity gate's threshold (recorded in the manifest)")
    e.add_argument("--finetune-labeled", default=None, metavar="LABELS.csv",
                   help="image,id photos to adapt the teacher to first (contrastive, against catalog image + text)")
    e.add_argument("--finetune-epochs", type=int, default=None, help=f"fine-tuning epochs (default: {ft['epochs']})")
    e.add_argument("--finetune-batch", type=int, default=None,
                   help=f"fine-tuning photos per step (default: {ft['batch_size']})")
    e.add_argument("--finetune-margin", type=float, default=None, metavar="M",
                   help="a cosine margin each photo must lead the other products' catalog images by in fine-tuning "
                        f"(0 to under 1; default: {ft['catalog_margin']:g}; the grocery benchmark's teacher: 0.2)")
    e.add_argument("--save-models", default=None, metavar="DIR",
                   help="also keep the fine-tuned teacher (teacher.pt) and the fp32 student ONNX here")
    e.add_argument("--with-text", action="store_true",
                   help="also ship the teacher's text tower (int8), its tokenizer and a product-text index")
    e.add_argument("--sign-key", default=None, metavar="KEY",
                   help="Ed25519 private key (edge-search keygen): sign the manifest (manifest.sig)")
    e.add_argument("--base", default=None, metavar="BUNDLE",
                   help="a catalog build on BUNDLE's models: no fine-tuning, distillation or quantization; only "
                        "images the embedding cache lacks are embedded (default: build the models too)")
    e.add_argument("--rebase", action="store_true",
                   help="with --base: build one fresh index segment instead of the base's index plus a delta "
                        "(devices download the whole index once; done anyway when the delta passes 10%% of it)")
    e.add_argument("--stores", default=None, metavar="STORES.csv",
                   help="store,id[,price,aisle,in_stock] rows: one bundle per store under --out (OUT/STORE/), each "
                        "with only its products and its prices and aisles; models and embeddings computed once "
                        "(without --base the chain's models are built first, into OUT/_chain)")
    e.add_argument("--previous", default=None, metavar="DIR",
                   help="with --stores: the previous release's --out; each store bundle keeps the index keys of "
                        "DIR/STORE, so `pack OUT/STORE --base DIR/STORE` ships only what changed there")
    e.add_argument("--embedding-cache", default=None, metavar="DIR",
                   help="where catalog embeddings are kept between builds (default: $EDGE_SEARCH_CACHE_DIR, else "
                        "$XDG_CACHE_HOME/edge-search)")
    e.add_argument("--engine", choices=ENGINES, default="local",
                   help="where catalog images and distillation views are embedded and store bundles built: here, "
                        "or on Ray (needs the [scale] extra: pip install 'edge-search[scale]')")
    e.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --engine ray: 'auto' joins the running cluster, ray://HOST:PORT a remote one "
                        "(default: start a local Ray on this machine)")
    e.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="with --engine ray: actors in each inference pool (default: one per CPU of the cluster)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=run_export_command)


def add_demo_parser(sub) -> None:
    from .demo import DEMO_EPOCHS, DEMO_WORKDIR

    d = sub.add_parser("demo", help="make a sample catalog, export it and search it (needs the [export] extra)",
                       formatter_class=DefaultsHelpFormatter)
    d.add_argument("--workdir", default=DEMO_WORKDIR, help="where the sample catalog, bundle and photos go")
    d.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help="distillation epochs")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=run_demo_command)
