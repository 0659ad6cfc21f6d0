"""The kiosk: camera frames -> quality check -> search -> what the shopper sees.

frames (sources and the newest-frame capture thread), quality (the frame
quality check: blur, exposure, steadiness, change), enhance (retries),
loop (the per-frame `KioskLoop`, owner of k, the filter and the pause;
bundle hot swap), session (`open_session`: one run wired for the screen
and for `--no-tui`) and `tui/` (the Textual screen, the only package that
imports textual). Imports the core; never shipping, evaluation or the CLI.
"""
