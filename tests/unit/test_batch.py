"""Continuous batching must decode exactly what one-by-one greedy decoding gives, whenever rows join."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from honed.model.decode import generate
from honed.model.stops import StopRule
from honed.model.batch import Row, RunningBatch, Sampling, sample_token


def _prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(3, 427, (n,), generator=generator).tolist() for n in [4, 19, 7, 30, 2, 11]]


def _decode_staggered(model: object, prompts: list[list[int]], *, steps: int, join_at: dict[int, list[int]]) -> list[list[int]]:
    """Run a RunningBatch where prompt i joins at step join_at[...]; every row decodes `steps` tokens."""
    batch = RunningBatch(model, pad_id=0)
    out: dict[int, list[int]] = {}
    with torch.inference_mode():
        for step in range(100):
            new = [Row(prompt_ids=prompts[i], sampling=Sampling(max_tokens=steps), payload=i) for i in join_at.get(step, [])]
            if new:
                batch.admit(new)
            if not batch.rows:
                if step > max(join_at):
                    break
                continue
            keep = []
            for row, (token, logprob, _top) in zip(batch.rows, batch.choose()):
                assert logprob <= 0.0
                out.setdefault(row.payload, []).append(token)
                keep.append(len(out[row.payload]) < steps)
            batch.keep(keep)
            if batch.rows:
                batch.advance()
    return [out[i] for i in range(len(prompts))]


def test_rows_joining_mid_decode_match_one_by_one(tiny_model: Any, tiny_tokenizer: Any) -> None:
    model, tokenizer = tiny_model, tiny_tokenizer
    prompts = _prompts()
    alone = [generate(model, tokenizer, [p], max_new_tokens=10, batch_size=1, stops=StopRule(frozenset()))[0][0].token_ids for p in prompts]
    staggered = _decode_staggered(model, prompts, steps=10, join_at={0: [0, 1], 3: [2], 4: [3, 4], 12: [5]})
    assert staggered == alone


def test_finished_rows_leave_and_padding_is_trimmed(tiny_model: Any) -> None:
    model = tiny_model
    long, short = [5] * 40, [7, 8]
    batch = RunningBatch(model, pad_id=0)
    with torch.inference_mode():
        batch.admit([Row(prompt_ids=long, sampling=Sampling(max_tokens=4)), Row(prompt_ids=short, sampling=Sampling(max_tokens=4))])
        batch.choose()
        batch.keep([False, True])  # the long row finishes: its 38 columns of the short row's padding go too
        assert batch.mask is not None and batch.mask.shape == (1, 2)
        assert batch.cache.layers[0].keys.shape[-2] == 2
        batch.advance()
        batch.choose()
        batch.keep([False])
    assert len(batch) == 0 and batch.cache is None


def test_sampling_is_seeded_and_top_p_keeps_the_nucleus() -> None:
    logits = torch.tensor([2.0, 1.9, -5.0, -5.0])
    settings = Sampling(max_tokens=1, temperature=1.0, top_p=0.9)
    draws = [sample_token(logits, sampling=settings, generator=torch.Generator().manual_seed(s)) for s in range(50)]
    assert set(draws) == {0, 1}  # the tail beyond 90% of the mass is never drawn
    again = [sample_token(logits, sampling=settings, generator=torch.Generator().manual_seed(s)) for s in range(50)]
    assert draws == again


def _first_pick(model: object, prompt: list[int], sampling: Sampling, **row: object):
    batch = RunningBatch(model, pad_id=0)
    with torch.inference_mode():
        batch.admit([Row(prompt_ids=prompt, sampling=sampling, **row)])
        return batch.choose()[0], batch


def test_logit_bias_and_penalties_change_only_the_rows_that_ask(tiny_model: Any) -> None:
    model = tiny_model
    prompt = _prompts()[1]
    plain, _ = _first_pick(model, prompt, Sampling(max_tokens=1, top_logprobs=3))
    assert plain.top[0][0] == plain.token and plain.top[0][1] == pytest.approx(plain.logprob)
    banned, _ = _first_pick(model, prompt, Sampling(max_tokens=1, logit_bias=((plain.token, -100.0),)))
    assert banned.token != plain.token and banned.token == plain.top[1][0]  # the runner-up wins
    row = Row(prompt_ids=prompt, sampling=Sampling(max_tokens=1, presence_penalty=2.0))
    row.counts = {plain.token: 1}  # as if it had been generated once already
    batch = RunningBatch(model, pad_id=0)
    with torch.inference_mode():
        batch.admit([row, Row(prompt_ids=prompt, sampling=Sampling(max_tokens=1))])
        penalized, untouched = batch.choose()
    assert untouched.token == plain.token and penalized.logprob == pytest.approx(
        torch.log_softmax(batch.logits[0].float(), -1)[penalized.token].item())


def test_prompt_scores_are_the_prompts_log_likelihood(tiny_model: Any) -> None:
    model = tiny_model
    prompt = _prompts()[3]
    _, batch = _first_pick(model, prompt, Sampling(max_tokens=1, prompt_logprobs=2))
    scores = batch.rows[0].prompt_scores
    with torch.inference_mode():
        expected = torch.log_softmax(model(input_ids=torch.tensor([prompt])).logits[0].float(), -1)
    assert [s.token for s in scores] == prompt and scores[0].logprob is None
    assert [s.logprob for s in scores[1:]] == pytest.approx([expected[i, t].item() for i, t in enumerate(prompt[1:])], abs=1e-4)
    assert all(len(s.top) == 2 for s in scores[1:])
