"""Measuring a bundle on labelled photos: evaluate (recall, no-match figures,
latency), report (Markdown + plots) and no_match (the no-match figures' one
definition, which the export's calibration and the benchmark use too).
Imports the core only."""
