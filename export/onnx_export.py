"""Torch -> ONNX for the image encoder, and the torch-vs-ONNX parity gate.

The graph takes `image` (N x 3 x H x W float, dynamic N) and returns
`embedding` (N x D, L2-normalized inside the graph) at a pinned opset.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from edge_search.core.encoder import OnnxEncoder
from edge_search.errors import ExportError

OPSET = 17
INPUT, OUTPUT = "image", "embedding"


def export_onnx(module: torch.nn.Module, image_size: tuple[int, int], path: Path) -> None:
    module.eval()
    dummy = torch.zeros(2, 3, *image_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (dummy,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=OPSET,
                do_constant_folding=True, dynamo=False,
            )
    except Exception as e:
        raise ExportError(f"ONNX export failed ({type(e).__name__}: {str(e)[:200]})") from None


@torch.no_grad()
def parity(module: torch.nn.Module, path: Path, batch: np.ndarray, threads: int) -> dict:
    """How closely ONNX fp32 reproduces the torch module on the same inputs."""
    ref = module(torch.from_numpy(batch)).numpy()
    got = OnnxEncoder(path, input_name=INPUT, output_name=OUTPUT, threads=threads).embed(batch)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return {"min_cosine": float(cos.min()), "max_abs_diff": float(np.abs(ref - got).max()), "images": int(len(batch))}
