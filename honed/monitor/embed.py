"""Prompt embeddings: a model's last hidden states, mean-pooled over the prompt's tokens, unit length.

By default the tuned model embeds (so monitoring needs no extra model); any Hugging Face causal LM or
encoder folder given with `--embed-model` works the same way.

Usage: `embed_texts(model, tokenizer, ["App crashes", "Refund please"])`: a (2, hidden size) array, e.g.
(2, 576) for SmolLM2 (needs a model: tests/unit/test_monitor.py embeds with a tiny run's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

MAX_TOKENS = 256  # a prompt's head carries its topic; long prompts are cut to keep the cost bounded


def embed_texts(
    model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """[len(texts), hidden] float32 matrix of L2-normalised mean-pooled last hidden states."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    # Shortest first: batches of similar length waste little on padding.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), _hidden_size(model)), dtype=np.float32)
    model.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids = [tokenizer(texts[i] or " ", add_special_tokens=False)["input_ids"][:MAX_TOKENS] or [pad_id] for i in chunk]
        out[chunk] = _embed_batch(model, ids, pad_id=pad_id)
        if progress is not None:
            progress(len(chunk))
    return out


def _embed_batch(model: Any, ids: list[list[int]], *, pad_id: int) -> np.ndarray:
    width = max(len(row) for row in ids)
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    with torch.no_grad():
        hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1)
    pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
    return pooled.numpy()


def _hidden_size(model: Any) -> int:
    config = model.config
    return int(getattr(config, "hidden_size", None) or config.get_text_config().hidden_size)
