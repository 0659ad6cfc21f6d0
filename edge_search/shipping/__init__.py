"""Shipping bundles to devices: signing, packing, safe unpacking, install.

signing (ed25519 keys and manifest signatures), pack (bundle -> archive),
unpack (an archive or folder -> a verified staging folder, bounded and
fail-closed) and install (switch `current` atomically, self-test, rollback).
Imports the core; never the kiosk, evaluation or the CLI.
"""
