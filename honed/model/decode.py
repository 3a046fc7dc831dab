"""Batched greedy decoding with a KV cache and left padding: the one way honed generates answers.

Every system in an evaluation (tuned, base, few-shot) goes through `generate`, so they share the same
prompts template, the same greedy decoding and the same stopping rule (honed.model.stops: the chat
template's end of turn, e.g. `<|im_end|>` for ChatML, as one token or as a string of several).

How: prompts are sorted by length and cut into batches of similar length (less padding); each batch is
left-padded so every row's last prompt token sits in the last column, and position ids count only real
tokens, so a padded row computes exactly what it would compute alone. The prompt is encoded once
(prefill) and then one token per step reuses the KV cache. A row that reaches end-of-turn is dropped
from the batch and its cache, so finished rows stop costing compute.

The key correctness test (tests/unit/test_generate.py): batched output equals one-by-one output.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from honed.model.constrain import Constraint, RowState
from honed.model.stops import StopRule, stop_rule
from honed.model.template import end_of_turn_of

Progress = Callable[[int], None]
MIN_SHARED_PREFIX = 8  # shorter shared prefixes are not worth a separate forward pass


@dataclass(frozen=True)
class Generation:
    """The answer to one prompt: its text (stop token and specials removed) and token ids."""

    text: str
    token_ids: list[int]
    stopped: bool  # True when the row ended on an end-of-turn token, False when max_new_tokens cut it


@dataclass(frozen=True)
class GenerationStats:
    """What a `generate` call cost: prompts, generated tokens (stop tokens included) and seconds."""

    prompts: int
    new_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def stops_for(tokenizer: Any, model: Any | None = None, *, extra: Sequence[str] = ()) -> StopRule:
    """The stop rule of a tokenizer whose chat template is set (honed.model.tokenizers sets it): the end
    of turn its template writes, plus the tokenizer's and the model's eos, and any `extra` stop strings.

    Usage: `stops_for(tokenizer).ids` is e.g. `frozenset({2})` for a ChatML tokenizer whose `<|im_end|>` is
    id 2 (needs a tokenizer: tests/unit/test_decode.py's test_stop_token_is_the_templates_end_of_turn).
    """
    template = getattr(tokenizer, "chat_template", None)
    end = end_of_turn_of(tokenizer, template) if template else str(getattr(tokenizer, "eos_token", "") or "")
    return stop_rule(tokenizer, end, model, extra=extra)


def pad_token_id(tokenizer: Any, stops: StopRule) -> int:
    """Any id works for padding (padded positions are masked out); prefer the tokenizer's own."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        return int(pad)
    return stops.id_list[0] if stops.ids else 0


def length_batches(lengths: Sequence[int], *, batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks early).

    >>> length_batches([5, 1, 9, 2], batch_size=2)
    [[2, 0], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) for prompts of different lengths, padded on the left."""
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own.

    >>> common_prefix_length([[1, 2, 3, 4], [1, 2, 5]])
    2
    """
    shortest = min(len(p) for p in prompts)
    length = 0
    while length < shortest - 1 and all(p[length] == prompts[0][length] for p in prompts):
        length += 1
    return length


def cache_argument(model: Any) -> str:
    """The name the model's forward takes its KV cache by: `cache` (transformers >= 5.2x, where
    `past_key_values` is deprecated with a FutureWarning and goes in 5.40), else `past_key_values`.

    Read off the forward signature of the underlying model (a peft or DDP wrapper forwards **kwargs).

    >>> class Older:  # a stand-in for a transformers model: only its forward's signature is read
    ...     def forward(self, input_ids, past_key_values=None): ...
    >>> class Newer:
    ...     def forward(self, input_ids, cache=None): ...
    >>> cache_argument(Older()), cache_argument(Newer())
    ('past_key_values', 'cache')
    """
    core = model
    while True:  # peft -> its base model; DDP / FSDP wrappers -> .module
        inner = core.get_base_model() if hasattr(core, "get_base_model") else getattr(core, "module", None)
        if inner is None or inner is core:
            break
        core = inner
    return "cache" if "cache" in inspect.signature(core.forward).parameters else "past_key_values"


def _forward(model: Any, *, cache_name: str, cache: Any, **inputs: Any) -> tuple[Any, Any]:
    """One forward pass with the KV cache under its current name; returns (logits of the last column, cache)."""
    out = model(**inputs, **{cache_name: cache}, use_cache=True)
    return out.logits[:, -1, :], getattr(out, cache_name)


def _prefill(model: Any, prompts: Sequence[Sequence[int]], pad_id: int, *, cache_name: str) -> tuple[Any, Any, Any, Any]:
    """Encode a batch of prompts: (last logits, the cache, attention mask, position ids of the last column).

    A prefix shared by every prompt (the system prompt, the few-shot examples) is encoded once and its
    cache copied to every row; the rest is left-padded after it. Padding then sits between the prefix and
    each row's own tokens, which the attention mask hides and the position ids (counting real tokens
    only) skip, so every row computes what it would compute alone.
    """
    import torch

    prefix = common_prefix_length(prompts) if len(prompts) > 1 else 0
    cache = None
    if prefix >= MIN_SHARED_PREFIX:
        _, cache = _forward(model, cache_name=cache_name, cache=None,
                            input_ids=torch.tensor([list(prompts[0][:prefix])]), logits_to_keep=1)
        cache.batch_repeat_interleave(len(prompts))
    else:
        prefix = 0
    input_ids, own_mask = left_pad([p[prefix:] for p in prompts], pad_id)
    attention_mask = torch.cat([own_mask.new_ones((len(prompts), prefix)), own_mask], dim=-1)
    # Position ids count real tokens only: a left-padded row then sees exactly the positions it would alone.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, prefix:]
    logits, cache = _forward(model, cache_name=cache_name, cache=cache, input_ids=input_ids,
                             attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=1)
    return logits, cache, attention_mask, position_ids[:, -1:]


def _mask_logits(logits: Any, states: Sequence[RowState]) -> Any:
    """Logits with every token a row's constraint forbids set to -inf (one mask per row, same order)."""
    import torch

    masks = torch.stack([state.allowed() for state in states])
    width = logits.shape[-1]
    if masks.shape[-1] < width:  # the model's vocabulary is padded past the tokenizer's: never those ids
        masks = torch.cat([masks, masks.new_zeros((len(states), width - masks.shape[-1]))], dim=-1)
    return logits.masked_fill(~masks[:, :width], float("-inf"))


def _generate_batch(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, stops: StopRule,
    pad_id: int, constraint: Constraint | None = None,
) -> list[tuple[list[int], bool]]:
    """Greedy-decode one left-padded batch; returns (new token ids without the stop, stopped).

    A stop id ends a row at once; a stop string (an end of turn of several tokens) ends it when the row's
    decoded tail completes it, and the tokens from the one it starts in are cut off.

    With a `constraint`, each row keeps its own state: before every argmax the tokens it forbids are
    masked out, and the chosen token advances it.
    """
    import torch

    cache_name = cache_argument(model)
    logits, cache, attention_mask, last_pos = _prefill(model, prompts, pad_id, cache_name=cache_name)
    results: list[tuple[list[int], bool]] = [([], False) for _ in prompts]
    states = [constraint.start() for _ in prompts] if constraint is not None else []
    active = list(range(len(prompts)))  # original row of each row still in the batch
    next_pos = last_pos + 1
    for _step in range(max_new_tokens):
        if states:
            logits = _mask_logits(logits, [states[original] for original in active])
        next_tokens = logits.argmax(dim=-1)
        keep: list[int] = []
        for row, token in enumerate(next_tokens.tolist()):
            original = active[row]
            if token in stops.ids:
                results[original] = (results[original][0], True)
                continue
            results[original][0].append(token)
            cut = stops.cut(tokenizer, results[original][0]) if stops.strings else None
            if cut is not None:
                results[original] = (results[original][0][:cut], True)
                continue
            keep.append(row)
            if states:
                states[original].advance(token)
        if not keep or _step == max_new_tokens - 1:
            break
        if len(keep) < len(active):  # drop finished rows from the batch and the cache
            index = torch.tensor(keep, dtype=torch.long)
            cache.batch_select_indices(index)
            attention_mask, next_pos, next_tokens = attention_mask[index], next_pos[index], next_tokens[index]
            active = [active[row] for row in keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=-1)
        logits, cache = _forward(model, cache_name=cache_name, cache=cache, input_ids=next_tokens[:, None],
                                 attention_mask=attention_mask, position_ids=next_pos)
        next_pos = next_pos + 1
    return results


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    stops: StopRule | None = None,
    progress: Progress | None = None,
    constraint: Constraint | None = None,
) -> tuple[list[Generation], GenerationStats]:
    """Greedy answers for token-id prompts (from `render_prompt`), in the order given.

    `stops` defaults to `stops_for(tokenizer, model)` (end of turn and eos). A `constraint`
    (honed.model.constrain: a label set, JSON, a JSON schema) restricts every row's tokens; it must
    allow one of the stop ids where an answer may end.

    Usage: `outputs, stats = generate(model, tokenizer, [render_prompt(c, tokenizer) for c in holdout],
    max_new_tokens=64)`; `outputs[0].text` is the first answer, `stats.tokens_per_s` the speed (needs a model:
    tests/unit/test_decode.py compares it with one-by-one decoding and transformers' own generate).
    """
    import torch

    stops = stops if stops is not None else stops_for(tokenizer, model)
    pad_id = pad_token_id(tokenizer, stops)
    results: list[Generation | None] = [None] * len(prompts)
    started = time.perf_counter()
    new_tokens = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in length_batches([len(p) for p in prompts], batch_size=batch_size):
                decoded = _generate_batch(model, tokenizer, [prompts[i] for i in batch], max_new_tokens=max_new_tokens,
                                          stops=stops, pad_id=pad_id, constraint=constraint)
                for i, (ids, stopped) in zip(batch, decoded):
                    text = stops.answer_text(tokenizer, ids) if stops.strings else \
                        tokenizer.decode(ids, skip_special_tokens=True).strip()
                    results[i] = Generation(text=text, token_ids=ids, stopped=stopped)
                    new_tokens += len(ids) + int(stopped)
                if progress is not None:
                    progress(len(batch))
    finally:
        model.train(was_training)
    stats = GenerationStats(len(prompts), new_tokens, time.perf_counter() - started)
    return [r for r in results if r is not None], stats


def default_max_new_tokens(target_lengths: Sequence[int], *, floor: int = 8, cap: int = 1024) -> int:
    """Room for the longest reference answer plus a margin (half of it, at least 16 tokens), capped.

    Derived from the holdout targets so a base model that never stops cannot take forever, while one that
    answers in a wordier format (pretty-printed JSON) still has room to finish.

    >>> default_max_new_tokens([10, 20])
    37
    """
    longest = max(target_lengths, default=0)
    return max(floor, min(cap, longest + max(16, math.ceil(longest / 2)) + 1))
