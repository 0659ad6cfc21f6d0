"""edge-search: on-device visual product search.

This package is the device runtime and the CLI. It must never import torch,
torchvision, open_clip or onnx (tests/test_import_boundary.py proves it).
"""

# usearch 2.26.x segfaults the interpreter when it is imported before
# onnxruntime >= 1.23. Every runtime module lives under this package, so
# importing onnxruntime here, before anything else, makes the safe order the
# only order our code can take.
import onnxruntime as _onnxruntime  # noqa: F401  (import for its side effect)

__version__ = "0.1.0"
