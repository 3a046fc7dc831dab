"""honed.model.tools: a template's tool-call format learned from the template, and answers read back."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from honed.model.template import CHATML
from honed.model.tools import CallFormat, ToolCall, call_format, check_arguments, parse_calls
from honed.serve.schemas import ApiError, Limits, parse_request
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
