"""Every request field `honed serve` implements, through the official `openai` client against a started
server; each test fails if the field were accepted and ignored.

The tiny random model is served as an export (no training): its answers are gibberish, but they are
deterministic under greedy decoding, which is all these tests need.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import openai
import pytest
import torch
from openai import OpenAI

from honed.serve.app import Settings
from honed.serve.engine import Engine
from honed.serve.loading import load_targets
from honed.serve.requestlog import RequestLog
from honed.serve.schemas import Limits
from honed.serve.server import ServerThread

TINY = str(Path(__file__).parents[2] / "tests" / "assets" / "tiny-llama")
SCHEMA = {
    "type": "object",
    "properties": {"category": {"enum": ["billing", "account", "bug"]}, "urgent": {"type": "boolean"}},
    "required": ["category", "urgent"],
    "additionalProperties": False,
}
FREE = {"temperature": 0, "extra_body": {"ignore_eos": True}}  # greedy, always max_tokens long
SEEDED = {"temperature": 1.5, "seed": 5, "extra_body": {"ignore_eos": True}}  # varied text, yet repeatable


@pytest.fixture(scope="module")
def served():
    return load_targets([f"tiny={TINY}"])


@pytest.fixture(scope="module")
def client(served):
    settings = Settings(limits=Limits(max_tokens=200, max_n=4), request_log=RequestLog(enabled=False))
    with ServerThread(served, Engine(max_batch=16), settings=settings) as url:
        yield OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)


def chat(client: OpenAI, text: str = "The app crashes", **kwargs):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}], **kwargs)


def test_logprobs_in_openai_shape_also_streamed(client) -> None:
    reply = chat(client, max_tokens=8, logprobs=True, top_logprobs=3, **FREE)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens == 8
    for entry in entries:
        assert entry.logprob < 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen token is the most likely
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
    assert bytes(b for e in entries for b in e.bytes).decode("utf-8", "replace") == reply.choices[0].message.content
    chunks = list(chat(client, max_tokens=8, logprobs=True, top_logprobs=3, stream=True, **FREE))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in entries]
    assert chat(client, max_tokens=4, **FREE).choices[0].logprobs is None


def test_json_schema_and_json_object_constrain_the_answer(client) -> None:
    free = chat(client, max_tokens=40, temperature=0).choices[0].message.content
    with pytest.raises(ValueError):
        json.loads(free)  # the random model alone does not write JSON
    fmt = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": True}}
    answer = chat(client, max_tokens=120, temperature=0, response_format=fmt).choices[0]
    assert answer.finish_reason == "stop"
    jsonschema.validate(json.loads(answer.message.content), SCHEMA)
    sampled = chat(client, max_tokens=120, temperature=1, seed=3, response_format=fmt).choices[0].message.content
    jsonschema.validate(json.loads(sampled), SCHEMA)
    anything = chat(client, max_tokens=150, temperature=0, response_format={"type": "json_object"}).choices[0]
    if anything.finish_reason == "stop":
        assert isinstance(json.loads(anything.message.content), dict)
    else:
        assert anything.message.content.startswith("{")
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, max_tokens=4, response_format={"type": "json_schema", "json_schema": {"name": "x",
                                                    "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}})
    assert caught.value.param == "response_format"


def test_stop_strings_across_token_boundaries(client) -> None:
    reply = chat(client, max_tokens=16, logprobs=True, **SEEDED)
    text, tokens = reply.choices[0].message.content, [e.token for e in reply.choices[0].logprobs.content]
    at = next((i for i in range(2, len(tokens) - 1) if tokens[i].strip() and tokens[i + 1].strip()
               and "\ufffd" not in tokens[i] + tokens[i + 1]), None)
    if at is None:
        pytest.skip("no two printable neighbouring tokens in the tiny model's answer")
    stop = tokens[at][-1] + tokens[at + 1][0]  # ends one token, starts the next
    cut = chat(client, max_tokens=16, stop=["never-in-the-answer", stop], **SEEDED).choices[0]
    assert cut.message.content == text[: text.index(stop)] and cut.finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       chat(client, max_tokens=16, stop=["never-in-the-answer", stop], stream=True, **SEEDED) if c.choices)
    assert streamed == cut.message.content


def test_seed_repeats_a_sampled_answer(client) -> None:
    def sampled(seed: int) -> str:
        return chat(client, max_tokens=16, temperature=1.5, seed=seed, extra_body={"ignore_eos": True}).choices[0].message.content

    assert sampled(7) == sampled(7)
    assert len({sampled(s) for s in (1, 2, 3)}) > 1


def test_penalties_change_a_repetitive_greedy_answer(client) -> None:
    reply = chat(client, max_tokens=30, logprobs=True, **FREE)
    tokens = [e.token for e in reply.choices[0].logprobs.content]
    if len(set(tokens)) == len(tokens):
        pytest.skip("the greedy answer repeats no token, so a penalty has nothing to act on")
    for field in ("frequency_penalty", "presence_penalty"):
        penalized = chat(client, max_tokens=30, logprobs=True, **{field: 2.0}, **FREE)
        other = [e.token for e in penalized.choices[0].logprobs.content]
        assert other != tokens and len(set(other)) >= len(set(tokens)), field


def test_logit_bias_bans_the_greedy_token(client, served) -> None:
    first = chat(client, max_tokens=1, logprobs=True, **FREE).choices[0].logprobs.content[0]
    token_id = served[0].tokenizer.convert_tokens_to_ids(served[0].tokenizer.convert_ids_to_tokens(
        served[0].tokenizer(first.token, add_special_tokens=False)["input_ids"][0]))
    banned = chat(client, max_tokens=1, logprobs=True, logit_bias={str(token_id): -100}, **FREE).choices[0]
    assert banned.logprobs.content[0].token != first.token
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, max_tokens=1, logit_bias={"999999": 5})
    assert caught.value.param == "logit_bias"


def test_n_choices_and_max_completion_tokens(client) -> None:
    reply = chat(client, max_completion_tokens=5, n=3, temperature=1.5, seed=11, extra_body={"ignore_eos": True})
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len({c.message.content for c in reply.choices}) > 1  # each choice samples on its own
    assert reply.usage.completion_tokens == 15 and {c.finish_reason for c in reply.choices} == {"length"}
    chunks = list(chat(client, max_completion_tokens=5, n=3, temperature=1.5, seed=11, stream=True,
                       extra_body={"ignore_eos": True}))
    streamed = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
                for i in range(3)}
    assert streamed == {c.index: c.message.content for c in reply.choices}
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, max_tokens=2, n=5)
    assert caught.value.param == "n"


def test_unknown_and_refused_fields_are_400s(client) -> None:
    for extra in ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
                  {"reasoning_effort": "high"}, {"extra_body": {"min_tokens": 3}}):
        with pytest.raises(openai.BadRequestError) as caught:
            chat(client, max_tokens=2, **extra)
        name = next(iter(extra["extra_body"])) if "extra_body" in extra else next(iter(extra))
        assert caught.value.param == name
    assert chat(client, max_tokens=2, user="u", store=False, metadata={"k": "v"}, logprobs=False).choices


def test_completions_prompts_echo_and_prompt_logprobs(client, served) -> None:
    one = client.completions.create(model="tiny", prompt="the app", max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    assert one.object == "text_completion" and one.usage.completion_tokens == 6 and one.choices[0].text
    tokenizer, model = served[0].tokenizer, served[0].model
    ids = tokenizer("the app")["input_ids"]
    same = client.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    assert same.choices[0].text == one.choices[0].text
    two = client.completions.create(model="tiny", prompt=["the app", "a bill"], max_tokens=3, temperature=0)
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].text == one.choices[0].text[: len(two.choices[0].text)]
    scored = client.completions.create(model="tiny", prompt="the app crashes", max_tokens=0, echo=True, logprobs=1,
                                       temperature=0)
    choice = scored.choices[0]
    assert choice.text == "the app crashes" and choice.logprobs.token_logprobs[0] is None
    full = tokenizer("the app crashes")["input_ids"]
    with torch.inference_mode():
        expected = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].float(), -1)
    want = [expected[i, t].item() for i, t in enumerate(full[1:])]
    assert choice.logprobs.token_logprobs[1:] == pytest.approx(want, abs=1e-4)
    assert scored.usage.completion_tokens == 0 and len(choice.logprobs.tokens) == len(full)
    streamed = list(client.completions.create(model="tiny", prompt="the app", max_tokens=6, temperature=0, stream=True,
                                              echo=True, extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "the app" + one.choices[0].text
