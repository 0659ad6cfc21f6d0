"""Drawing for the kiosk screen as Rich renderables: pictures in half-blocks,
score bars, the result and status lines.

Pure functions of their inputs (no widgets, no I/O), so they are cheap to
test and to benchmark. Part of the TUI package: may import rich, must not
import torch, open_clip or onnx.
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np
from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from edge_search.display import printable

UPPER_HALF = "▀"


def fit(rgb: np.ndarray, cols: int, rows: int) -> np.ndarray:
    """Scale an image to fit `cols` x `2*rows` pixels (one cell = two square-ish pixels), keeping its shape."""
    h, w = rgb.shape[:2]
    ph = 2 * rows
    scale = min(cols / w, ph / h)
    nw, nh = max(1, min(cols, round(w * scale))), max(1, min(ph, round(h * scale)))
    if (nw, nh) == (w, h):
        return rgb
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)


# Colours are rounded to this many bits per channel before drawing: the eye
# cannot tell in a terminal preview, and it lets neighbouring cells share one
# segment and frames share Style objects (measured: ~10x less drawing time).
COLOUR_BITS = 5
_STYLE_CACHE: dict[int, Style] = {}
_STYLE_CACHE_MAX = 65_536


def _style(key: int) -> Style:
    style = _STYLE_CACHE.get(key)
    if style is None:
        if len(_STYLE_CACHE) >= _STYLE_CACHE_MAX:
            _STYLE_CACHE.clear()
        top, bottom = key >> 24, key & 0xFFFFFF
        style = _STYLE_CACHE[key] = Style(color=Color.from_rgb(top >> 16, (top >> 8) & 255, top & 255),
                                          bgcolor=Color.from_rgb(bottom >> 16, (bottom >> 8) & 255, bottom & 255))
    return style


class HalfBlocks:
    """An RGB image drawn with '▀': the top pixel is the glyph's colour, the bottom
    pixel its background, so each character cell shows two pixels in full colour.
    Works in any terminal with truecolor; Rich falls back to 256 colours elsewhere."""

    def __init__(self, rgb: np.ndarray, cols: int, rows: int):
        self.cols, self.rows = max(1, cols), max(1, rows)
        self.image = fit(rgb, self.cols, self.rows)

    def lines(self) -> list[list[Segment]]:
        img = self.image
        h, w = img.shape[:2]
        if h % 2:
            img = np.concatenate([img, np.zeros((1, w, 3), np.uint8)])
        mask = (0xFF << (8 - COLOUR_BITS)) & 0xFF
        q = (img & mask).astype(np.int64)
        rgb = (q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]
        keys = (rgb[0::2] << 24) | rgb[1::2]  # one key per cell: (top colour, bottom colour)
        left = (self.cols - w) // 2
        right = self.cols - left - w
        top = (self.rows - keys.shape[0]) // 2
        blank = [Segment(" " * self.cols)]
        out = [blank] * top
        for row in keys:
            segments = [Segment(" " * left)] if left else []
            # one segment per run of equal cells
            starts = np.flatnonzero(np.diff(row)) + 1
            bounds = [0, *starts.tolist(), len(row)]
            values = row[bounds[:-1]].tolist()
            for a, b, key in zip(bounds[:-1], bounds[1:], values):
                segments.append(Segment(UPPER_HALF * (b - a), _style(key)))
            if right:
                segments.append(Segment(" " * right))
            out.append(segments)
        out += [blank] * (self.rows - len(out))
        return out[: self.rows]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for row in self.lines():
            yield from row
            yield Segment.line()


def score_bar(score: float, min_score: float, width: int = 12) -> Text:
    """A bar 0..1 with the score; green well above the threshold, yellow near it, red below."""
    s = min(1.0, max(0.0, score))
    filled = round(s * width)
    colour = "green" if score >= min_score + 0.1 else "yellow" if score >= min_score else "red"
    bar = Text("█" * filled, style=colour)
    bar.append("░" * (width - filled), style="grey37")
    bar.append(f" {score:.3f}")
    return bar


def price_text(price: float | None) -> str:
    return "" if price is None else f"{price:.2f}"


def hit_lines(rank: int, name: str, price: float | None, category: str | None, score: float,
              min_score: float, width: int = 12, where: str = "") -> Text:
    """The three text lines of one result: name, price, category and where it is, score bar."""
    t = Text(f"{rank}. ", style="bold")
    t.append(printable(name), style="bold")
    t.append("\n")
    details = [x for x in (price_text(price), printable(category or ""), printable(where)) if x]
    t.append(" · ".join(details) if details else "—", style="italic")
    t.append("\n")
    t.append_text(score_bar(score, min_score, width))
    return t


def status_text(parts: Iterable[str], frozen: bool = False) -> Text:
    t = Text()
    if frozen:
        t.append(" FROZEN ", style="bold reverse")
        t.append("  ")
    t.append(" · ".join(printable(p) for p in parts if p))
    return t


def rate_text(fps: float, still: bool = False) -> str:
    """How fast frames come, as a person reads it: frames per second for cameras and
    video, seconds per image for a folder's slide show (2 s per image, not "0.5 fps")."""
    if not still:
        return f"{fps:.1f} fps"
    return f"{1 / fps:.1f} s per image" if fps > 0 else "– s per image"
