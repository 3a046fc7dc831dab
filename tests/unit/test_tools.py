"""honed.model.tools: a template's tool-call format learned from the template, and answers read back; and
honed.serve.toolcalls: the prefill a tool_choice forces, and a tool-calling answer as OpenAI's message and chunk."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from honed.model.template import CHATML
from honed.model.tools import CallFormat, ToolCall, call_format, check_arguments, parse_calls
from honed.serve.schemas import ApiError, Limits, parse_request
from honed.serve.toolcalls import answer_message, prefill, tool_chunk
from tests.helpers import TINY

HERMES = CallFormat("<tool_call>", "</tool_call>", "name", "arguments")
# Llama 3.1 writes a bare JSON object with the arguments under "parameters"
LLAMA31 = ("{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' }}"
           "{% if m.get('tool_calls') %}{% for c in m['tool_calls'] %}"
           "{{ {'name': c['function']['name'], 'parameters': c['function']['arguments']} | tojson }}{% endfor %}"
           "{% else %}{{ m['content'] }}{% endif %}{{ '<|eot_id|>' }}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


@pytest.fixture()
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY)


def test_the_format_is_learned_from_the_template(tokenizer) -> None:
    tokenizer.chat_template = CHATML
    assert call_format(tokenizer, "<|im_end|>") == HERMES
    tokenizer.chat_template = LLAMA31
    assert call_format(tokenizer, "<|eot_id|>") == CallFormat("", "", "name", "parameters")


def test_a_template_that_writes_no_tool_calls_has_no_format(tokenizer) -> None:
    assert call_format(tokenizer, "<|im_end|>") is None  # the tiny model's own ChatML drops tool_calls


def test_calls_are_read_back_with_the_text_before_them() -> None:
    text = 'Checking.\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>\n' \
           '<tool_call>\n{"name": "g", "arguments": "{\\"y\\": 2}"}\n</tool_call>'
    parsed = parse_calls(text, HERMES)
    assert parsed.content == "Checking."
    assert parsed.calls == [ToolCall("f", {"x": 1}), ToolCall("g", {"y": 2})]


@pytest.mark.parametrize("text", ["just words", '<tool_call>\n{"name": "f", "arguments": {"x": 1}',
                                  '<tool_call>\n{"name": "f"}\n</tool_call>', '<tool_call>\n[1, 2]\n</tool_call>'])
def test_anything_but_a_whole_call_is_plain_content(text: str) -> None:
    parsed = parse_calls(text, HERMES)
    assert parsed.calls == [] and parsed.content == text


def test_arguments_are_checked_against_the_tools_schema() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]
    assert check_arguments(ToolCall("f", {"x": 1}), tools) is None
    assert "do not match" in check_arguments(ToolCall("f", {"x": "one"}), tools)
    assert "not among" in check_arguments(ToolCall("g", {}), tools)


@pytest.mark.parametrize(("extra", "param", "says"), [
    ({"tool_choice": "required"}, "tool_choice", "`tools` is empty"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice", "not among"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "logprobs": True}, "tools", "logprobs"),
])
def test_tool_choice_that_cannot_be_met_is_a_400(extra: dict, param: str, says: str) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}).encode()
    with pytest.raises(ApiError) as caught:
        parse_request(body, limits=Limits())
    assert caught.value.param == param and says in caught.value.message


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SERVED = SimpleNamespace(name="m", tool_format=HERMES)  # what toolcalls reads of a ServedModel


def _request(**extra):
    body = {"model": "m", "messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER], **extra}
    return parse_request(json.dumps(body).encode(), limits=Limits())


def test_tool_choice_decides_what_the_answer_starts_with() -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert prefill(_request(tool_choice=named), SERVED) == '<tool_call>\n{"name": "get_weather", "arguments": '
    assert prefill(_request(tool_choice="required"), SERVED) == "<tool_call>\n"
    assert prefill(_request(), SERVED) == "" and prefill(_request(tool_choice="auto"), SERVED) == ""
    assert prefill(_request(tool_choice="none"), SERVED) == ""


def test_a_finished_tool_call_streams_as_one_chunk_of_tool_calls() -> None:
    text = 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    chunk = tool_chunk(text, _request(), SERVED, response_id="chatcmpl-1", index=2, finish_reason="stop")
    choice = chunk["choices"][0]
    assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == "m" and choice["index"] == 2
    assert choice["finish_reason"] == "tool_calls" and choice["delta"]["content"] == "Let me look."
    call = choice["delta"]["tool_calls"][0]
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert answer_message(text, _request(), SERVED)[1][0]["function"] == call["function"]


def test_an_answer_that_is_no_valid_call_streams_as_content() -> None:
    bad = '<tool_call>\n{"name": "get_weather", "arguments": {"city": 3}}\n</tool_call>'  # breaks the schema
    for text in ("Sunny.", bad):
        chunk = tool_chunk(text, _request(), SERVED, response_id="chatcmpl-1", index=0, finish_reason="length")
        assert chunk["choices"][0]["delta"] == {"content": text} and chunk["choices"][0]["finish_reason"] == "length"
        assert answer_message(text, _request(), SERVED) == (text, None)
