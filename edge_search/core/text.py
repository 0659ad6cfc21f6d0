"""Text queries on the device: `tokenizer.json` (the `tokenizers` library) and
the teacher's text tower as ONNX, run by onnxruntime on the CPU.

The bundle's tokenizer reproduces open_clip's CLIP tokenizer (see
export/text_export.py for what it covers); padding to the context length and
truncation with the end token kept last live in tokenizer.json itself.
Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_search.core.encoder import DEFAULT_THREADS, OnnxEncoder
from edge_search.errors import BundleError

TEXT_INPUT, TEXT_OUTPUT = "tokens", "embedding"


class TextEncoder:
    """Phrases -> unit-length embeddings in the bundle's (the teacher's) space."""

    def __init__(self, model_path: str | Path, tokenizer_path: str | Path, *, input_name: str = TEXT_INPUT,
                 output_name: str = TEXT_OUTPUT, context_length: int | None = None,
                 threads: int = DEFAULT_THREADS, trim: bool = False):
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as e:  # tokenizers raises its own untyped errors
            raise BundleError(f"{tokenizer_path}: cannot load tokenizer ({str(e).strip()[:200]})") from None
        padding = self.tokenizer.padding
        if not padding or not padding.get("length"):
            raise BundleError(f"{tokenizer_path}: tokenizer does not pad to a fixed context length")
        self.context_length = int(padding["length"])
        if context_length is not None and context_length != self.context_length:
            raise BundleError(f"{tokenizer_path}: pads to {self.context_length} tokens, manifest says {context_length}")
        self.model = OnnxEncoder(model_path, input_name=input_name, output_name=output_name, threads=threads)
        # a tower that reads nothing after the end token (manifest text.trim_padding) runs on the
        # columns up to the last end token of the batch: a short phrase costs a few positions, not 77
        self.trim = trim
        eot = self.tokenizer.token_to_id("<end_of_text>")
        if trim and eot is None:
            raise BundleError(f"{tokenizer_path}: no <end_of_text> token, cannot trim padding")
        self.eot = eot
        self.embed_dim = self.model.embed_dim

    def tokenize(self, texts: list[str]) -> np.ndarray:
        """N x context_length int64, as open_clip.tokenize gives them."""
        return np.asarray([e.ids for e in self.tokenizer.encode_batch(list(texts))], dtype=np.int64)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.embed_dim), np.float32)
        tokens = self.tokenize(texts)
        if self.trim:
            tokens = tokens[:, :int((tokens == self.eot).argmax(1).max()) + 1]
        return self.model.embed(tokens)
