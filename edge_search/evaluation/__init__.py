"""Measuring a bundle on labelled photos: evaluate (recall, no-match figures,
latency) and report (Markdown + plots). Imports the core only."""
