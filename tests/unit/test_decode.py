"""Batched generation must give exactly what one-by-one greedy decoding gives (left padding, KV cache)."""

from __future__ import annotations

from typing import Any

import torch

from honed.model.prompt import render_prompt
from honed.data.types import Conversation, Message
from honed.model.decode import default_max_new_tokens, generate, length_batches, stops_for
from honed.model.stops import StopRule


def _prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(3, 427, (n,), generator=generator).tolist() for n in [3, 17, 9, 30, 5, 12, 1, 25]]


def _one_by_one(model: object, tokenizer: object, prompts: list[list[int]], **kwargs: object) -> list[list[int]]:
    return [generate(model, tokenizer, [p], batch_size=1, **kwargs)[0][0].token_ids for p in prompts]


def test_batched_equals_one_by_one(tiny_model: Any, tiny_tokenizer: Any) -> None:
    model, tokenizer = tiny_model, tiny_tokenizer
    prompts = _prompts()
    batched, stats = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=8)
    assert [g.token_ids for g in batched] == _one_by_one(model, tokenizer, prompts, max_new_tokens=12)
    assert stats.prompts == 8 and stats.new_tokens == sum(len(g.token_ids) + g.stopped for g in batched)


def test_batched_equals_transformers_generate(tiny_model: Any, tiny_tokenizer: Any) -> None:
    model, tokenizer = tiny_model, tiny_tokenizer
    prompts = _prompts()[:4]
    ours, _ = generate(model, tokenizer, prompts, max_new_tokens=10, batch_size=4, stops=StopRule(frozenset({2})))
    for prompt, mine in zip(prompts, ours):
        theirs = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=2)
        assert mine.token_ids == [t for t in theirs[0, len(prompt) :].tolist() if t != 2]


def test_rows_that_stop_early_leave_the_batch_and_others_are_unchanged(
    tiny_model: Any, tiny_tokenizer: Any
) -> None:
    model, tokenizer = tiny_model, tiny_tokenizer
    prompts = _prompts()
    free, _ = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=8, stops=StopRule(frozenset()))
    stop = free[0].token_ids[2]  # a token row 0 emits at step 3: rows now stop at different steps
    batched, _ = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=8, stops=StopRule(frozenset({stop})))
    assert batched[0].stopped and len(batched[0].token_ids) <= 2
    assert any(not g.stopped for g in batched), "the test needs rows that run on"
    assert [g.token_ids for g in batched] == _one_by_one(
        model, tokenizer, prompts, max_new_tokens=12, stops=StopRule(frozenset({stop}))
    )
    for cut, full in zip(batched, free):  # a stopped row is the free row's prefix up to the stop token
        assert full.token_ids[: len(cut.token_ids)] == cut.token_ids


def test_stop_token_is_the_templates_end_of_turn(tiny_model: Any, tiny_tokenizer: Any) -> None:
    model, tokenizer = tiny_model, tiny_tokenizer
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stops_for(tokenizer, model).ids


def test_rendered_prompts_in_original_order(tiny_model: Any, tiny_tokenizer: Any) -> None:
    model, tokenizer = tiny_model, tiny_tokenizer
    convs = [
        Conversation(messages=(Message("user", "hello " * n), Message("assistant", "x"))) for n in (1, 6, 3)
    ]
    prompts = [render_prompt(c, tokenizer) for c in convs]
    batched, _ = generate(model, tokenizer, prompts, max_new_tokens=5, batch_size=2)
    assert [g.token_ids for g in batched] == _one_by_one(model, tokenizer, prompts, max_new_tokens=5)


def test_length_batches_and_max_new_tokens() -> None:
    assert length_batches([5, 1, 9, 2], batch_size=2) == [[2, 0], [3, 1]]
    assert default_max_new_tokens([10, 20]) == 37
    assert default_max_new_tokens([]) == 17


def _labelled(n: int, labels: str) -> list[Conversation]:
    return [
        Conversation(messages=(Message("system", "S"), Message("user", f"q{i}"), Message("assistant", labels[i % len(labels)])))
        for i in range(n)
    ]


def test_few_shot_choice_is_deterministic_and_stratified() -> None:
    from honed.evaluate.run_eval import choose_shots

    train = _labelled(40, "abcd")
    first = choose_shots(train, k=4, seed=0)
    assert first == choose_shots(train, k=4, seed=0)
    assert sorted(c.response_text() for c in first) == ["a", "b", "c", "d"]  # one per label
    assert first != choose_shots(train, k=4, seed=1)
    assert len(choose_shots(train, k=6, seed=0)) == 6
    assert len(choose_shots(train[:3], k=5, seed=0)) == 3  # never more than there are


def test_few_shot_prompt_keeps_the_system_prompt_first(tiny_tokenizer: Any) -> None:
    from honed.evaluate.run_eval import with_shots

    tokenizer = tiny_tokenizer
    shots = _labelled(2, "ab")
    target = Conversation(messages=(Message("system", "S"), Message("user", "question"), Message("assistant", "a")))
    prompt = with_shots(target, shots)
    assert [m.role for m in prompt.messages] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    text = tokenizer.decode(render_prompt(prompt, tokenizer))
    assert text.count("S") >= 1 and text.index("q0") < text.index("q1") < text.index("question")
    assert text.rstrip().endswith("assistant")


def _shared_prefix_prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(7)
    prefix = torch.randint(3, 427, (20,), generator=generator).tolist()
    return [prefix + torch.randint(3, 427, (n,), generator=generator).tolist() for n in [1, 7, 3, 12, 5]]


def test_shared_prefix_is_encoded_once_and_gives_the_same_answers(
    tiny_model: Any, tiny_tokenizer: Any
) -> None:
    from honed.model.decode import common_prefix_length

    model, tokenizer = tiny_model, tiny_tokenizer
    prompts = _shared_prefix_prompts()
    assert common_prefix_length(prompts) == 20
    batched, _ = generate(model, tokenizer, prompts, max_new_tokens=10, batch_size=5, stops=StopRule(frozenset({2})))
    assert [g.token_ids for g in batched] == _one_by_one(model, tokenizer, prompts, max_new_tokens=10, stops=StopRule(frozenset({2})))
    for prompt, mine in zip(prompts, batched):  # and what transformers' own generate gives, prompt by prompt
        theirs = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=2)
        assert mine.token_ids == [t for t in theirs[0, len(prompt) :].tolist() if t != 2]


def test_shared_prefix_with_rows_stopping_early(tiny_model: Any, tiny_tokenizer: Any) -> None:
    model, tokenizer = tiny_model, tiny_tokenizer
    prompts = _shared_prefix_prompts() + [_shared_prefix_prompts()[0][:20] + [5, 6]]
    free, _ = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=6, stops=StopRule(frozenset()))
    stop = free[1].token_ids[3]
    batched, _ = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=6, stops=StopRule(frozenset({stop})))
    assert any(g.stopped for g in batched)
    assert [g.token_ids for g in batched] == _one_by_one(model, tokenizer, prompts, max_new_tokens=12, stops=StopRule(frozenset({stop})))


def test_generation_uses_the_supported_cache_argument(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """transformers 5.24 deprecates `past_key_values` (FutureWarning, removed in 5.40): honed passes `cache`."""
    import warnings

    from honed.model.decode import cache_argument

    model, tokenizer = tiny_model, tiny_tokenizer
    assert cache_argument(model) == "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # any deprecation on the generation path fails the test
        batched, _ = generate(model, tokenizer, _shared_prefix_prompts(), max_new_tokens=6, batch_size=5)
    assert all(len(g.token_ids) <= 6 for g in batched)


def test_a_peft_wrapped_model_gets_the_cache_through_its_kwargs(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """During training the scorer generates with the LoRA-wrapped model: same tokens as the bare model
    (LoRA starts as a no-op), and the cache argument is read off the base model."""
    import copy

    import peft

    from honed.model.decode import cache_argument

    model, tokenizer = tiny_model, tiny_tokenizer
    wrapped = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert cache_argument(wrapped) == "cache"
    prompts = _prompts()[:4]
    ours, _ = generate(wrapped, tokenizer, prompts, max_new_tokens=8, batch_size=4)
    bare, _ = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=4)
    assert [g.token_ids for g in ours] == [g.token_ids for g in bare]
