"""Continuous batching: one running batch that new requests join between decode steps.

The same decoding as honed's evaluation generator (honed/model/decode.py): prompts left-padded,
position ids counting real tokens only, a KV cache, finished rows dropped from the batch and its cache,
so a row computes what it would compute alone. What serving adds:

- requests arrive at any time: a new group of prompts is prefilled on its own and then *joined* to the
  running batch, by left-padding the shorter KV cache (and attention mask) to the longer one and
  concatenating along the batch dimension. Nobody waits for the slowest row of a batch to finish;
- each row samples with its own settings (greedy at temperature 0, else temperature + top-p with a
  per-request seeded generator) and records the log-probability of the token it chose;
- each row's logits are processed on their own before the choice, only for rows that ask: OpenAI's
  `logit_bias`, `presence_penalty` / `frequency_penalty` (over the tokens it generated so far) and a
  constraint (honed.model.constrain, e.g. a JSON schema through xgrammar) that masks forbidden tokens.
  Log-probabilities (the chosen token's and the `top_logprobs` alternatives) are the model's own, before
  that processing, as vLLM reports them by default;
- a row may ask for its prompt's log-probabilities (`/v1/completions` with `echo` and `logprobs`): its
  group is prefilled with the logits of every position kept;
- columns that only hold padding for every row left (after long rows finish) are cut off the cache.

Joining needs plain `DynamicLayer` caches (every full-attention model). A model with another cache
layout (sliding windows) still works: new requests then wait until the running batch is empty.

Usage (a model decodes: tests/unit/test_batch.py checks joined rows against one-by-one decoding):

    batch = RunningBatch(model, pad_id=0)
    batch.admit([Row(prompt_ids=[1, 2, 3], sampling=Sampling(max_tokens=8))])
    picks = batch.choose(); batch.keep([True]); batch.advance()
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from honed.model.constrain import RowState
from honed.model.decode import cache_argument, left_pad


@dataclass(frozen=True)
class Sampling:
    """How one request picks its tokens (OpenAI's parameters). temperature 0 = greedy."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0  # subtracted once from every token already generated
    frequency_penalty: float = 0.0  # subtracted once per time a token was generated
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)
    top_logprobs: int = 0  # alternatives to report with each chosen token
    prompt_logprobs: int | None = None  # None: none; k: each prompt token's log-probability and k alternatives

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


class Pick(NamedTuple):
    """A row's chosen token, its log-probability and the `top_logprobs` most likely (id, log-probability)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


class Scored(NamedTuple):
    """One prompt token and its log-probability given the tokens before it (None for the first)."""

    token: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


@dataclass(eq=False)
class Row:
    """One request inside a running batch. `payload` is the scheduler's own object for the request."""

    prompt_ids: list[int]
    sampling: Sampling
    payload: Any = None
    constraint: RowState | None = None  # restricts the tokens this row may choose
    next_token: int = -1  # chosen by `choose`, fed to the model by `advance`
    generator: torch.Generator | None = field(default=None, repr=False)
    counts: dict[int, int] = field(default_factory=dict)  # generated tokens, for the penalties
    prompt_scores: list[Scored] | None = None  # filled by `admit` when sampling.prompt_logprobs is set

    @property
    def processed(self) -> bool:
        """Whether this row's logits need processing of their own before the choice."""
        return self.constraint is not None or self.sampling.penalized or bool(self.sampling.logit_bias)


def _pad_seq(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad the sequence dimension (-2 for keys/values, -1 for a mask) with zeros to `width`."""
    missing = width - tensor.shape[-2 if tensor.dim() == 4 else -1]
    if missing == 0:
        return tensor
    return F.pad(tensor, (0, 0, missing, 0)) if tensor.dim() == 4 else F.pad(tensor, (missing, 0))


def cache_can_join(cache: Any) -> bool:
    """True when every layer of `cache` is a plain dynamic layer ([batch, heads, seq, dim] tensors)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def sample_token(logits: torch.Tensor, *, sampling: Sampling, generator: torch.Generator | None) -> int:
    """One token from a row's logits: temperature, then nucleus (top-p) filtering, then a draw.

    >>> sample_token(torch.tensor([0.0, 5.0, 0.0]), sampling=Sampling(max_tokens=1, temperature=0.5, top_p=0.5),
    ...              generator=None)
    1
    """
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest set of tokens whose mass reaches top_p (always at least the most likely one)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= sampling.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def process_logits(logits: torch.Tensor, row: Row) -> torch.Tensor:
    """One row's logits after OpenAI's logit_bias and penalties and the row's constraint (a new tensor).

    The penalties follow OpenAI's definition: logit[j] -= count[j] * frequency + (count[j] > 0) * presence,
    over the tokens this row generated (not the prompt).

    >>> row = Row(prompt_ids=[1], sampling=Sampling(max_tokens=1, logit_bias=((0, -100.0),), presence_penalty=1.0))
    >>> row.counts = {1: 2}
    >>> process_logits(torch.tensor([3.0, 2.0, 1.0]), row).tolist()
    [-97.0, 1.0, 1.0]
    """
    out = logits.float().clone()
    sampling = row.sampling
    if sampling.logit_bias:
        ids = torch.tensor([i for i, _ in sampling.logit_bias], dtype=torch.long, device=out.device)
        out[ids] += torch.tensor([b for _, b in sampling.logit_bias], dtype=out.dtype, device=out.device)
    if sampling.penalized and row.counts:
        ids = torch.tensor(list(row.counts), dtype=torch.long, device=out.device)
        counts = torch.tensor(list(row.counts.values()), dtype=out.dtype, device=out.device)
        out[ids] -= counts * sampling.frequency_penalty + sampling.presence_penalty
    if row.constraint is not None:
        allowed = row.constraint.allowed().to(out.device)
        if allowed.shape[-1] < out.shape[-1]:  # the model's vocabulary is padded past the tokenizer's
            allowed = torch.cat([allowed, allowed.new_zeros(out.shape[-1] - allowed.shape[-1])])
        out = out.masked_fill(~allowed[: out.shape[-1]], float("-inf"))
    return out


def top_tokens(logprobs: torch.Tensor, k: int) -> tuple[tuple[int, float], ...]:
    """The `k` most likely (token id, log-probability) of one row, most likely first.

    >>> top_tokens(torch.log_softmax(torch.tensor([0.0, 2.0, 1.0]), -1), 2)[0][0]
    1
    """
    if k <= 0:
        return ()
    values, ids = logprobs.topk(min(k, logprobs.shape[-1]))
    return tuple(zip(ids.tolist(), values.tolist()))


class RunningBatch:
    """The rows being decoded together on one model (one adapter), their KV cache and next logits."""

    def __init__(self, model: Any, *, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        # transformers 5.24 renames `past_key_values` to `cache`; the GPU machines' 5.17 only knows the old name
        self.cache_name = cache_argument(model)
        self.rows: list[Row] = []
        self._clear()

    def _clear(self) -> None:
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # [rows, cache length]: 1 real token, 0 padding
        self.next_pos: torch.Tensor | None = None  # [rows, 1]: position id of each row's next token
        self.logits: torch.Tensor | None = None  # [rows, vocab]: where each row's next token comes from

    def __len__(self) -> int:
        return len(self.rows)

    def can_join(self) -> bool:
        """Whether new rows can join now (always when empty; otherwise only with a dynamic cache)."""
        return not self.rows or cache_can_join(self.cache)

    def admit(self, rows: Sequence[Row]) -> None:
        """Prefill `rows` together and join them to the batch; their first token is ready to `choose`.

        Rows that ask for their prompt's log-probabilities are prefilled apart, keeping every position's
        logits (the others keep only the last position's).
        """
        for row in rows:
            if row.sampling.temperature > 0:
                seed = row.sampling.seed if row.sampling.seed is not None else secrets.randbits(63)
                row.generator = torch.Generator(device=self.device).manual_seed(seed)
        scored = [r for r in rows if r.sampling.prompt_logprobs is not None]
        plain = [r for r in rows if r.sampling.prompt_logprobs is None]
        for group in (plain, scored):
            if group:
                self._prefill(group, score=group is scored)

    def _prefill(self, rows: list[Row], *, score: bool) -> None:
        input_ids, mask = (t.to(self.device) for t in left_pad([r.prompt_ids for r in rows], self.pad_id))
        # Position ids count real tokens only: a left-padded row sees the positions it would see alone.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=True,
                         logits_to_keep=0 if score else 1)
        if score:
            for i, row in enumerate(rows):
                row.prompt_scores = _score_prompt(out.logits[i, -len(row.prompt_ids):], row)
        logits, next_pos = out.logits[:, -1, :], position_ids[:, -1:] + 1
        if not self.rows:
            self.cache, self.mask, self.next_pos, self.logits = getattr(out, self.cache_name), mask, next_pos, logits
        else:
            self._join(getattr(out, self.cache_name), mask, next_pos, logits)
        self.rows.extend(rows)

    def _join(self, cache: Any, mask: torch.Tensor, next_pos: torch.Tensor, logits: torch.Tensor) -> None:
        assert self.mask is not None and self.next_pos is not None and self.logits is not None
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([_pad_seq(mine.keys, width), _pad_seq(theirs.keys, width)])
            mine.values = torch.cat([_pad_seq(mine.values, width), _pad_seq(theirs.values, width)])
        self.mask = torch.cat([_pad_seq(self.mask, width), _pad_seq(mask, width)])
        self.next_pos = torch.cat([self.next_pos, next_pos])
        self.logits = torch.cat([self.logits, logits])

    def choose(self) -> list[Pick]:
        """Each row's next token, its log-probability under the model (temperature 1, before top-p and
        any processing) and, where the row asks, the most likely alternatives."""
        assert self.logits is not None
        logprobs = torch.log_softmax(self.logits.float(), dim=-1)
        greedy = self.logits.argmax(dim=-1).tolist()  # argmax of the logits, exactly as evaluation decodes
        for i, row in enumerate(self.rows):
            logits = process_logits(self.logits[i], row) if row.processed else self.logits[i]
            if row.sampling.temperature > 0:
                row.next_token = sample_token(logits, sampling=row.sampling, generator=row.generator)
            else:
                row.next_token = int(logits.argmax()) if row.processed else greedy[i]
        chosen = torch.tensor([row.next_token for row in self.rows], device=logprobs.device)
        picked = logprobs.gather(1, chosen[:, None])[:, 0].tolist()
        picks = []
        for i, (row, logprob) in enumerate(zip(self.rows, picked)):
            picks.append(Pick(row.next_token, logprob, top_tokens(logprobs[i], row.sampling.top_logprobs)))
            if row.sampling.penalized:
                row.counts[row.next_token] = row.counts.get(row.next_token, 0) + 1
            if row.constraint is not None:
                row.constraint.advance(row.next_token)
        return picks

    def keep(self, keep: Sequence[bool]) -> None:
        """Drop the rows whose flag is False (finished or cancelled) from the batch and its cache."""
        if all(keep):
            return
        index = [i for i, flag in enumerate(keep) if flag]
        self.rows = [self.rows[i] for i in index]
        if not self.rows:
            self._clear()
            return
        assert self.mask is not None and self.next_pos is not None and self.logits is not None
        selected = torch.tensor(index, dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(selected)
        self.mask, self.next_pos, self.logits = self.mask[selected], self.next_pos[selected], self.logits[selected]
        self._trim()

    def _trim(self) -> None:
        """Cut cache columns that are padding for every row left (they would only cost attention)."""
        assert self.mask is not None
        if not cache_can_join(self.cache):
            return
        first = int(self.mask.any(dim=0).int().argmax())
        if first == 0:
            return
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]

    def advance(self) -> None:
        """Feed every row's chosen token to the model: one decode step, next logits ready."""
        assert self.mask is not None and self.next_pos is not None
        tokens = torch.tensor([[row.next_token] for row in self.rows], dtype=torch.long, device=self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=-1)
        out = self.model(input_ids=tokens, attention_mask=self.mask, position_ids=self.next_pos,
                         **{self.cache_name: self.cache}, use_cache=True)
        self.cache = getattr(out, self.cache_name)
        self.logits = out.logits[:, -1, :]
        self.next_pos = self.next_pos + 1


def _score_prompt(logits: torch.Tensor, row: Row) -> list[Scored]:
    """Each prompt token's log-probability given the ones before it, from the prompt's logits [len, vocab]."""
    k = row.sampling.prompt_logprobs or 0
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    ids = row.prompt_ids
    scores = [Scored(ids[0], None)]
    picked = logprobs[:-1].gather(1, torch.tensor(ids[1:], dtype=torch.long, device=logprobs.device)[:, None])[:, 0].tolist()
    for position, (token, logprob) in enumerate(zip(ids[1:], picked)):
        scores.append(Scored(token, logprob, top_tokens(logprobs[position], k)))
    return scores
