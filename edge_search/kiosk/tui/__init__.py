"""The kiosk's terminal UI (Textual).

The only package in edge_search that imports textual; the CLI imports it
lazily, inside `edge-search run`. Must not import torch, open_clip or onnx.
"""

from edge_search.kiosk.tui.app import KioskApp, build_app

__all__ = ["KioskApp", "build_app"]
