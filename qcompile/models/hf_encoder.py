"""A Hugging Face encoder with its pooling inside the module, so the exported graph returns what the model means:
a sentence embedding (mean, CLS or max pooling over the real tokens, optionally L2-normalised) or token embeddings.

Pooling follows sentence-transformers' definitions: the mean and max ignore padded tokens through the attention
mask; CLS takes the first token.
"""

from __future__ import annotations

import os
from pathlib import Path


def load_encoder(folder: Path, inputs: list[str], pooling: str, normalize: bool, attention: str | None = None):
    """The encoder of ``folder`` (never a download) wrapped with its pooling, in eval mode, taking ``inputs``
    positionally in that order (the tokenizer's order, which the ONNX inputs keep). ``attention`` picks
    transformers' attention implementation (``eager``: plain MatMul/Softmax, the pattern ORT's fusions match)."""
    import logging

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # transformers imports torchao when present, whose enum registrations make torch log deprecation warnings to
    # stderr; they say nothing about the user's model.
    pytree = logging.getLogger("torch.utils._pytree")
    level = pytree.level
    pytree.setLevel(logging.ERROR)
    try:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    finally:
        pytree.setLevel(level)
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar; the step has its own progress line
    try:
        kwargs = {"attn_implementation": attention} if attention else {}
        base = AutoModel.from_pretrained(str(folder), local_files_only=True, **kwargs).eval()
    finally:
        if shown:
            hf_logging.enable_progress_bar()

    class PooledEncoder(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, *tensors):
            named = dict(zip(inputs, tensors))
            attention_mask = named["attention_mask"]
            h = self.encoder(**named).last_hidden_state
            if pooling == "none":
                return h
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            if pooling == "mean":
                e = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            elif pooling == "max":
                e = h.masked_fill(mask == 0, torch.finfo(h.dtype).min).max(dim=1).values
            else:  # cls
                e = h[:, 0]
            return torch.nn.functional.normalize(e, p=2, dim=1) if normalize else e

    return PooledEncoder(base).eval()
