"""Shipping bundles to devices: packing, safe unpacking, install.

pack (a bundle folder -> one archive), unpack (an archive or folder -> a
verified staging folder, bounded and fail-closed) and install (switch
`current` atomically, self-test, rollback). A bundle's signature belongs to
the core (core/signing.py): opening a bundle checks it. Imports the core;
never the kiosk, evaluation or the CLI.
"""
