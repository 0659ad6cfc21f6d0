"""The search core: a bundle on disk -> a query's ranked products.

manifest, bundle (checksums, signature), images (safe decoding), preprocess,
encoder (onnxruntime), index (usearch), products, filters, text (word
queries), signing (a bundle's signature and the trusted key: opening a bundle
checks it), catalog (reading a retailer's catalog file) and search (the
`Searcher` that ties them together). Imports only the shared modules above it
(errors, files, display); never the kiosk, shipping, evaluation or the CLI.
"""
