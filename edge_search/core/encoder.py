"""The image encoder on the device: an ONNX model run by onnxruntime on the CPU.

Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from edge_search.errors import BundleError

DEFAULT_THREADS = 2


class Encoder(Protocol):
    embed_dim: int

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W float32 -> N x D float32, L2-normalized."""


def session_options(threads: int = DEFAULT_THREADS) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


class OnnxEncoder:
    def __init__(self, model_path: str | Path, *, input_name: str, output_name: str, threads: int = DEFAULT_THREADS):
        try:
            self.session = ort.InferenceSession(
                str(model_path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own untyped errors
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BundleError(f"{model_path}: cannot load ONNX model ({msg})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if input_name not in inputs or output_name not in outputs:
            raise BundleError(
                f"{model_path}: model I/O is {sorted(inputs)} -> {sorted(outputs)}, "
                f"manifest expects '{input_name}' -> '{output_name}'"
            )
        self.input_name, self.output_name = input_name, output_name
        # image towers take float32 pixels, text towers int64 token ids
        self._dtype = np.int64 if inputs[input_name].type == "tensor(int64)" else np.float32
        dim = outputs[output_name].shape[-1]
        self.embed_dim = int(dim) if isinstance(dim, int) else -1
        self.input_shape = tuple(inputs[input_name].shape)  # ints where fixed, names where dynamic

    def check_fits(self, channels: int, height: int, width: int, embed_dim: int, where: str) -> None:
        """Refuse a manifest whose preprocessing or embedding size does not fit this model (fixed dims only)."""
        fixed = self.input_shape[1:] if len(self.input_shape) == 4 else ()
        if any(isinstance(g, int) and g != w for g, w in zip(fixed, (channels, height, width))):
            shown = "x".join(str(d) for d in fixed)
            raise BundleError(f"{where}: the model takes {shown} input, the manifest's preprocess makes "
                              f"{channels}x{height}x{width}")
        if self.embed_dim not in (-1, embed_dim):
            raise BundleError(f"{where}: the model returns {self.embed_dim}-d embeddings, the manifest says {embed_dim}")

    def embed(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=self._dtype)
        (out,) = self.session.run([self.output_name], {self.input_name: batch})
        return out
