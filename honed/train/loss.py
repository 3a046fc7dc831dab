"""Supervised-only, chunked cross-entropy.

The model body runs once to give hidden states; only the hidden states whose next token is a target are
gathered, and the output head (lm_head) is applied to them in chunks of `chunk_size` rows. In training,
when the micro-batch's supervised logits would hold more than KEEP_LOGITS_BYTES, each chunk is
checkpointed, so its [chunk, vocab] logits are freed after the forward pass and recomputed in the
backward pass: the full [tokens x vocab] logits tensor never exists, and neither does the
[supervised tokens x vocab] one. Below that size (short answers: labels, small JSON) the logits are kept
and the head is not run twice (the recompute was ~2% of a step on 16 banking77 chats).

The loss of an optimizer step is sum(token losses over all its micro-batches and ranks) divided by the
number of supervised tokens of the whole step (see `step_normaliser`), never a mean of micro-batch means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from honed.train.batching import MicroBatch
from honed.train.distributed import is_fsdp

# Logits (and the log-probabilities cross-entropy keeps for backward) up to this size stay in memory
# rather than being recomputed: 128 MiB is ~340 supervised positions of a 49k vocabulary, in fp32.
KEEP_LOGITS_BYTES = 128 * 2**20


@dataclass(frozen=True)
class ModelParts:
    """The pieces of a causal LM the loss needs: body (tokens -> hidden states) and head (-> logits)."""

    body: Any
    head: Any
    softcap: float | None
    # Set when the model is sharded by FSDP2: its hooks gather the weights on the root module's forward,
    # so the body must be run through it (asking for the hidden states and one position of logits).
    root: Any = None


def model_parts(model: Any) -> ModelParts:
    """Find the body and head of a transformers causal LM, also inside a peft wrapper.

    Usage: `model_parts(model)` on a transformers causal LM or a peft model around one (tests/unit/
    test_train_loss.py).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = base.get_decoder()
    head = base.get_output_embeddings()
    # Gemma-2 style models squash logits with tanh; apply it the same way their forward does.
    softcap = getattr(base.config, "final_logit_softcapping", None)
    return ModelParts(body=body, head=head, softcap=softcap, root=model if is_fsdp(model) else None)


def hidden_states(parts: ModelParts, batch: MicroBatch) -> torch.Tensor:
    """Run the body with per-example position ids and the block-diagonal mask; returns [N_targets, H]."""
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
    if parts.root is not None:
        hidden = parts.root(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
    else:
        hidden = parts.body(**inputs, use_cache=False).last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.hidden_index)


def _chunk_losses(
    hidden: torch.Tensor, targets: torch.Tensor, head: Any, softcap: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    losses = F.cross_entropy(logits, targets, reduction="none")
    correct = (logits.detach().argmax(dim=-1) == targets).float()
    return losses, correct


def token_losses(
    model: Any, batch: MicroBatch, *, chunk_size: int = 1024, parts: ModelParts | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target cross-entropy and correctness (argmax == target), computed chunk by chunk.

    Usage: `losses, correct = token_losses(model, batch)`: one loss per target of `batch`
    (tests/unit/test_train_loss.py checks them against the full logits and across packing).
    """
    parts = parts or model_parts(model)
    selected = hidden_states(parts, batch)
    if selected.shape[0] == 0:
        empty = selected.new_zeros(0, dtype=torch.float32)
        return empty + selected.sum() * 0.0, empty.detach()  # keeps the graph connected for backward
    all_losses: list[torch.Tensor] = []
    all_correct: list[torch.Tensor] = []
    vocab = parts.head.weight.shape[0]
    recompute = torch.is_grad_enabled() and 2 * 4 * selected.shape[0] * vocab > KEEP_LOGITS_BYTES
    for hidden, targets in zip(selected.split(chunk_size), batch.targets.split(chunk_size)):
        if recompute:
            losses, correct = checkpoint(_chunk_losses, hidden, targets, parts.head, parts.softcap, use_reentrant=False)
        else:
            losses, correct = _chunk_losses(hidden, targets, parts.head, parts.softcap)
        all_losses.append(losses)
        all_correct.append(correct)
    return torch.cat(all_losses), torch.cat(all_correct)


def loss_sum(model: Any, batch: MicroBatch, *, chunk_size: int = 1024, parts: ModelParts | None = None) -> torch.Tensor:
    """Sum of the micro-batch's token losses (divide by the step's supervised-token count)."""
    losses, _ = token_losses(model, batch, chunk_size=chunk_size, parts=parts)
    return losses.sum()


def step_normaliser(batches: list[MicroBatch], *, device: str | torch.device = "cpu") -> int:
    """Supervised tokens of the whole optimizer step: this rank's micro-batches, summed over all ranks."""
    count = torch.tensor(sum(b.num_targets for b in batches), dtype=torch.long, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
    return int(count.item())


def per_example_losses(model: Any, batch: MicroBatch, *, chunk_size: int = 1024) -> dict[int, float]:
    """Mean loss of each example in a micro-batch, keyed by example index (used to test packing)."""
    losses, _ = token_losses(model, batch, chunk_size=chunk_size)
    out: dict[int, float] = {}
    for index in batch.target_example.unique().tolist():
        mask = batch.target_example == index
        out[int(index)] = float(losses[mask].mean())
    return out
