"""`edge-search eval --report DIR`: the evaluation as Markdown plus PNG plots.

Plots are drawn with OpenCV (already a runtime dependency) so the device
needs no plotting library. Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_search.display import printable
from edge_search.evaluation.evaluate import EvalReport
from edge_search.files import atomic_write_bytes, atomic_write_text, ensure_folder

W, H, PAD = 640, 400, 60
INK, GRID, BAR = (40, 40, 40), (220, 220, 220), (180, 110, 40)


def _canvas(title: str) -> np.ndarray:
    img = np.full((H, W, 3), 255, np.uint8)
    cv2.putText(img, title, (PAD, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, INK, 1, cv2.LINE_AA)
    cv2.line(img, (PAD, H - PAD), (W - 20, H - PAD), INK, 1)
    cv2.line(img, (PAD, 45), (PAD, H - PAD), INK, 1)
    return img


def _y(v: float, vmax: float) -> int:
    return int(H - PAD - (H - PAD - 45) * (v / vmax if vmax > 0 else 0))


def _png(img: np.ndarray, path: Path) -> None:
    ok, buf = cv2.imencode(".png", img)
    atomic_write_bytes(path, buf.tobytes())


def recall_curve(report: EvalReport, path: Path) -> None:
    img = _canvas("recall@k")
    ks = sorted(report.recall)
    xs = [PAD + int((W - PAD - 40) * i / max(1, len(ks) - 1)) for i in range(len(ks))]
    for v in (0.25, 0.5, 0.75, 1.0):
        cv2.line(img, (PAD, _y(v, 1)), (W - 20, _y(v, 1)), GRID, 1)
        cv2.putText(img, f"{v:.2f}", (8, _y(v, 1) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, INK, 1, cv2.LINE_AA)
    pts = [(x, _y(report.recall[k], 1)) for x, k in zip(xs, ks)]
    for a, b in zip(pts, pts[1:]):
        cv2.line(img, a, b, BAR, 2, cv2.LINE_AA)
    for (x, y), k in zip(pts, ks):
        cv2.circle(img, (x, y), 4, BAR, -1)
        cv2.putText(img, str(k), (x - 4, H - PAD + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, INK, 1, cv2.LINE_AA)
        cv2.putText(img, f"{report.recall[k]:.3f}", (x - 14, y - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, INK, 1, cv2.LINE_AA)
    _png(img, path)


def bars(title: str, labels: list[str], values: list[float], path: Path, fmt: str = "{:.2f}") -> None:
    img = _canvas(title)
    vmax = max(values, default=1) or 1
    n = max(1, len(values))
    width = (W - PAD - 30) / n
    for i, (label, v) in enumerate(zip(labels, values)):
        x0 = int(PAD + 5 + i * width)
        cv2.rectangle(img, (x0, _y(v, vmax)), (int(x0 + width * 0.8), H - PAD), BAR, -1)
        cv2.putText(img, fmt.format(v), (x0, _y(v, vmax) - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, INK, 1, cv2.LINE_AA)
        cv2.putText(img, label[:10], (x0, H - PAD + 15 + 12 * (i % 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.33, INK, 1,
                    cv2.LINE_AA)
    _png(img, path)


def write_report(report: EvalReport, out: Path, title: str) -> list[Path]:
    out = ensure_folder(out, "--report")
    recall_curve(report, out / "recall_at_k.png")
    lat = report.latency_ms
    bars("latency (ms)", ["embed p50", "embed p95", "search p50", "search p95"],
         [lat["embed_p50"], lat["embed_p95"], lat["search_p50"], lat["search_p95"]], out / "latency.png")
    worst = sorted(report.per_category.items(), key=lambda kv: kv[1]["recall@1"])[:12]
    bars("recall@1 of the worst categories", [k for k, _ in worst], [v["recall@1"] for _, v in worst],
         out / "worst_categories.png")
    lines = [f"# {printable(title)}", ""]
    if report.caveat:
        lines += [f"> **Caveat:** {report.caveat}.", ""]
    lines += [f"{report.queries} queries; no-match threshold {report.min_score:.3f}.", "",
              "| metric | value |", "|---|---|"]
    lines += [f"| recall@{k} | {v:.4f} |" for k, v in report.recall.items()]
    lines += [f"| MRR | {report.mrr:.4f} |", f"| answered no match (in-catalog photos) | {report.no_match_share:.4f} |"]
    if report.false_reject_of_correct is not None:
        lines.append(f"| false rejects (of photos ranked right) | {report.false_reject_of_correct:.4f} |")
    if report.reject_recall is not None:
        lines.append(f"| reject recall ({len(report.unknown_ids)} photos of products not in the bundle) "
                     f"| {report.reject_recall:.4f} |")
    if report.answered_right is not None:
        lines.append(f"| answered right (in-catalog photos, the rule applied) | {report.answered_right:.4f} |")
    if report.named_wrong is not None:
        lines.append(f"| named wrong (every photo counted) | {report.named_wrong:.4f} |")
    if report.right_when_named is not None:
        lines.append(f"| right when named (of the names given) | {report.right_when_named:.4f} |")
    lines += [f"| {k.replace('_', ' ')} ms | {v:.3f} |" for k, v in lat.items()]
    lines += ["", "![recall@k](recall_at_k.png)", "![latency](latency.png)", "",
              "## Per category", "", "| category | queries | recall@1 |", "|---|---|---|"]
    lines += [f"| {printable(c)} | {v['queries']} | {v['recall@1']:.4f} |" for c, v in report.per_category.items()]
    lines += ["", "![worst categories](worst_categories.png)", "", "## Most confused", "",
              "| true | shown instead | times |", "|---|---|---|"]
    lines += [f"| {printable(c['true'])} | {printable(c['predicted'])} | {c['count']} |" for c in report.confused]
    if report.unknown_ids:
        lines += ["", "## Not in the bundle (reject recall only)", ""] + [f"- {printable(x)}" for x in report.unknown_ids]
    if report.unreadable:
        lines += ["", "## Not counted", ""] + [f"- {printable(x)}" for x in report.unreadable]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return [out / "report.md", out / "recall_at_k.png", out / "latency.png", out / "worst_categories.png"]
