"""Text from files, shown to a person: control characters escaped.

Catalog cells, product ids, bundle names and file names come from outside;
printed raw, an ESC sequence in a product id can clear the kiosk's screen or
set the terminal title, and a newline can forge a line of output. Every
human-readable output (CLI lines, error messages, eval reports, the TUI)
passes such text through `printable`; JSON output escapes on its own.
Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

from typing import Any

# C0 controls, DEL, C1 controls (0x9b is a one-byte CSI on some terminals), and
# the bidirectional overrides that make text display in another order than it reads.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES |= {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_ESCAPES |= {c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def printable(value: Any) -> str:
    """`str(value)` with every control character written as a visible escape (one line, no terminal codes)."""
    return str(value).translate(_ESCAPES)


def has_control(text: str) -> bool:
    """Whether `text` holds a character `printable` would escape."""
    return printable(text) != text
