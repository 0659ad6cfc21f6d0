"""`edge-search demo`: sample catalog -> export -> search, in one command.

Uses the default pretrained teacher when its weights can be had; offline it
falls back to random weights and says the result is a pipeline check only.
Needs the [export] extra (imported lazily: the runtime never pulls it in).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from edge_search.errors import WeightsUnavailable
from edge_search.core.images import encode_jpeg
from .sample_catalog import PRODUCTS, write_sample_catalog
from edge_search.core.search import SearchResult, Searcher


log = logging.getLogger("edge_search.export.demo")

DEMO_WORKDIR = "edge-search-demo"
DEMO_EPOCHS = 20  # distillation epochs: enough to tell a working pipeline from a broken one


@dataclass
class DemoReport:
    bundle: Path
    random_teacher: bool
    fallback_reason: str | None
    export_seconds: float
    queries: list[tuple[str, str, SearchResult]] = field(default_factory=list)  # (path, expected id, result)

    @property
    def top1(self) -> float:
        """Share of queries answered with the right product ("no match" counts as a miss)."""
        hits = [bool(r.hits) and r.hits[0].id == want for _, want, r in self.queries]
        return sum(hits) / max(1, len(hits))


def run_demo(workdir: Path, *, progress: bool = True, epochs: int = DEMO_EPOCHS, offline_ok: bool = True) -> DemoReport:
    from .config import ExportConfig
    from .pipeline import run_export
    from .views import views

    workdir = Path(workdir)
    catalog = write_sample_catalog(workdir / "catalog")
    qdir = workdir / "queries"
    qdir.mkdir(parents=True, exist_ok=True)
    queries = []
    from edge_search.core.images import load_image

    for i, (pid, *_rest) in enumerate(PRODUCTS):
        img = load_image(catalog.parent / f"images/{pid}.jpg")
        photo = views(img, 2, seed=1000 + i)[1]  # a hand-held-looking photo of the product
        path = qdir / f"{pid}.jpg"
        path.write_bytes(encode_jpeg(photo))
        queries.append((path, pid))

    base = dict(catalog=catalog, out=workdir / "bundle", epochs=epochs, force=True, name="demo")
    fallback = None
    try:
        summary = run_export(ExportConfig(**base), progress=progress)
    except WeightsUnavailable as e:
        if not offline_ok:
            raise
        fallback = str(e)
        log.warning("%s", fallback)
        log.warning("running the demo with --pretrained random instead: a PIPELINE CHECK, not a quality result")
        summary = run_export(ExportConfig(**base, pretrained="random"), progress=progress)
    searcher = Searcher.from_bundle(summary.out)
    report = DemoReport(bundle=summary.out, random_teacher=fallback is not None, fallback_reason=fallback,
                        export_seconds=summary.seconds)
    for path, pid in queries:
        report.queries.append((str(path), pid, searcher.search_image(path, k=3)))
    return report
