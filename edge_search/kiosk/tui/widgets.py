"""The kiosk's widgets: camera preview, result rows, the details dialog.

Widgets only draw what message handlers give them; none does I/O or
searches. Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Static

from edge_search.display import printable
from edge_search.kiosk.enhance import describe
from edge_search.core.search import SearchHit
from edge_search.kiosk.tui.render import HalfBlocks, hit_lines, price_text, score_bar

THUMB_COLS, THUMB_ROWS = 8, 4


class Preview(Widget):
    """The live camera picture, drawn to fit the widget."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.image: np.ndarray | None = None

    def show(self, image: np.ndarray) -> None:
        self.image = image
        self.refresh()

    def render(self):
        size = self.content_size
        if self.image is None or size.width < 2 or size.height < 1:
            return Text("waiting for the first frame…", style="italic", justify="center")
        return HalfBlocks(self.image, size.width, size.height)


def _thumb(image: np.ndarray | None, cols: int, rows: int):
    if image is None:
        return Text("\n".join(["·" * cols] * rows), style="grey37")
    return HalfBlocks(image, cols, rows)


class ResultRow(Widget):
    """One product in the top-k; a click opens its details."""

    class Chosen(Message):
        def __init__(self, hit: SearchHit, thumb: np.ndarray | None, min_score: float, variant: str):
            super().__init__()
            self.hit, self.thumb, self.min_score, self.variant = hit, thumb, min_score, variant

    def __init__(self, rank: int, hit: SearchHit, thumb: np.ndarray | None, min_score: float, variant: str, **kwargs):
        super().__init__(**kwargs)
        self.rank, self.hit, self.thumb, self.min_score, self.variant = rank, hit, thumb, min_score, variant

    def _shown(self) -> tuple:
        h = self.hit
        return h.name, h.price, h.category, h.where, f"{h.score:.3f}", self.min_score, id(self.thumb)

    def show(self, hit: SearchHit, thumb: np.ndarray | None, min_score: float, variant: str) -> None:
        """The same place in the list for a new answer: redrawn only when what it shows changed."""
        before = self._shown()
        self.hit, self.thumb, self.min_score, self.variant = hit, thumb, min_score, variant
        if self._shown() != before:
            self.refresh()

    def render(self):
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=THUMB_COLS)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        h = self.hit
        grid.add_row(_thumb(self.thumb, THUMB_COLS, THUMB_ROWS),
                     hit_lines(self.rank, h.name, h.price, h.category, h.score, self.min_score,
                               where=h.where))
        return grid

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(self.Chosen(self.hit, self.thumb, self.min_score, self.variant))


class Results(VerticalScroll):
    """The top-k list, or the no-match / waiting / fault panel in its place."""

    async def show_hits(self, hits: list[SearchHit], thumbs: list[np.ndarray | None], min_score: float,
                        variant: str) -> None:
        shown = list(self.query(ResultRow))
        if len(shown) == len(hits) == len(self.children) and all(r.hit.id == h.id for r, h in zip(shown, hits)):
            # the same products in the same order (a product held in front of the camera): the rows stay,
            # each redrawn only if its text changed; taking them down and mounting new ones costs ms a frame
            for row, hit, thumb in zip(shown, hits, thumbs):
                row.show(hit, thumb, min_score, variant)
            return
        await self.remove_children()
        await self.mount_all(ResultRow(i + 1, h, t, min_score, variant, id=f"result-{i}")
                             for i, (h, t) in enumerate(zip(hits, thumbs)))
        self.scroll_home(animate=False)

    async def show_panel(self, text: Text, panel_id: str) -> None:
        await self.remove_children()
        await self.mount(Static(text, id=panel_id, classes="panel"))


def details_text(hit: SearchHit, min_score: float, variant: str) -> Text:
    p = hit.product
    t = Text(printable(hit.name), style="bold")
    t.append(f"\n{printable(hit.id)}\n\n", style="grey62")
    rows = [("price", price_text(hit.price) or "—"), ("category", hit.category or "—"),
            ("description", p.description or "—"), ("matched on", describe(variant))]
    rows += [(str(k), str(v)) for k, v in sorted(p.meta.items())]
    for key, value in rows:
        t.append(f"{printable(key):<12}", style="bold")
        t.append(f" {printable(value)}\n")
    t.append(f"{'score':<12} ", style="bold")
    t.append_text(score_bar(hit.score, min_score, 20))
    return t


class DetailsScreen(ModalScreen[None]):
    """Everything the bundle knows about one product. Esc or a click closes it."""

    BINDINGS = [Binding("escape", "dismiss", "Close"), Binding("q", "dismiss", "Close", show=False)]

    def __init__(self, hit: SearchHit, thumb: np.ndarray | None, min_score: float, variant: str):
        super().__init__()
        self.hit, self.thumb, self.min_score, self.variant = hit, thumb, min_score, variant

    def compose(self) -> ComposeResult:
        with Vertical(id="details"):
            yield Static(Group(_thumb(self.thumb, 24, 12), Text(""),
                               details_text(self.hit, self.min_score, self.variant)), id="details-body")
            yield Static(Text("Esc or click to close", style="italic grey62"))

    def on_click(self, event: events.Click) -> None:
        self.dismiss(None)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
