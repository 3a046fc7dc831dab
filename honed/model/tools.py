"""Tool calls in a model's own words: how its chat template writes one, and reading them back from an answer.

Templates write a tool call in their own format: Qwen 2.5 and honed's ChatML as
`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, Llama 3.1 as a bare
`{"name": ..., "parameters": {...}}`. Rather than a parser per family (vLLM's `--tool-call-parser`), the
format is learned from the template itself: one probe call is rendered, and the text around its JSON and
the keys holding the name and the arguments are what the model was trained to write (`call_format`).
`parse_calls` reads an answer written that way back into OpenAI `tool_calls`, and `check_arguments`
validates each call's arguments against its tool's JSON schema (jsonschema).

`call_format(tokenizer, "<|im_end|>")` learns ChatML's format from its template (tests/unit/test_tools.py);
here it is written out:

>>> fmt = CallFormat(prefix="<tool_call>", suffix="</tool_call>", name_key="name", arguments_key="arguments")
>>> parse_calls('<tool_call>\\n{"name": "f", "arguments": {"x": 1}}\\n</tool_call>', fmt)
ParsedAnswer(content='', calls=[ToolCall(name='f', arguments={'x': 1})])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PROBE_NAME = "honed_probe_function"
PROBE_ARGUMENTS = {"honed_probe_argument": 7}
PROBE_TOOL = {"type": "function", "function": {
    "name": PROBE_NAME, "description": "probe", "parameters": {
        "type": "object", "properties": {"honed_probe_argument": {"type": "integer"}}}}}


@dataclass(frozen=True)
class CallFormat:
    """How a template writes one tool call in an answer: `prefix` JSON `suffix`, JSON keys for both parts."""

    prefix: str  # text before a call's JSON object, e.g. "<tool_call>" ("" for a bare JSON object)
    suffix: str  # text after it, e.g. "</tool_call>" (both stripped: whitespace around them is not checked)
    name_key: str  # "name"
    arguments_key: str  # "arguments" (Llama 3.1: "parameters")


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ParsedAnswer:
    """An answer split into its text before the first call and the calls (empty: a plain answer)."""

    content: str
    calls: list[ToolCall]


def call_format(tokenizer: Any, end_of_turn: str) -> CallFormat | None:
    """The tool-call format of the tokenizer's chat template (whose answers end with `end_of_turn`), or None
    when it does not write tool calls."""
    call = {"id": "call_0", "type": "function", "function": {"name": PROBE_NAME, "arguments": PROBE_ARGUMENTS}}
    user = [{"role": "user", "content": "hi"}]
    try:
        prompt = tokenizer.apply_chat_template(user, tools=[PROBE_TOOL], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template([*user, {"role": "assistant", "content": "", "tool_calls": [call]}],
                                             tools=[PROBE_TOOL], tokenize=False)
    except Exception:  # a template that cannot render tool calls at all (jinja2 errors of every kind)
        return None
    if not full.startswith(prompt) or PROBE_NAME not in full[len(prompt):]:
        return None
    answer = full[len(prompt):]
    found = _probe_object(answer)
    if found is None:
        return None
    start, end, obj = found
    name_key = next((k for k, v in obj.items() if v == PROBE_NAME), None)
    arguments_key = next((k for k, v in obj.items() if _as_arguments(v) == PROBE_ARGUMENTS), None)
    if name_key is None or arguments_key is None:
        return None
    after = answer[end:].split(end_of_turn, 1)[0] if end_of_turn else answer[end:]
    return CallFormat(answer[:start].strip(), after.strip(), name_key, arguments_key)


def _probe_object(text: str) -> tuple[int, int, dict[str, Any]] | None:
    """(start, end, object) of the first JSON object in `text` that holds the probe's name."""
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict) and PROBE_NAME in obj.values():
            return start, end, obj
    return None


def _as_arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_calls(text: str, fmt: CallFormat) -> ParsedAnswer:
    """The answer's tool calls written in `fmt` (none: the whole text is content). Text before the first
    call is content; a call whose JSON does not parse, or that misses the name or the arguments, makes the
    answer plain content (the model did not write a call the client could run)."""
    decoder = json.JSONDecoder()
    first = text.find(fmt.prefix) if fmt.prefix else _first_brace(text)
    if first < 0:
        return ParsedAnswer(text, [])
    content, position, calls = text[:first].rstrip(), first, []
    while position < len(text):
        position = _skip_space(text, position)
        if position >= len(text):
            break
        if fmt.prefix:
            if not text.startswith(fmt.prefix, position):
                return ParsedAnswer(text, [])
            position = _skip_space(text, position + len(fmt.prefix))
        try:
            obj, position = decoder.raw_decode(text, position)
        except ValueError:
            return ParsedAnswer(text, [])
        arguments = _as_arguments(obj.get(fmt.arguments_key)) if isinstance(obj, dict) else None
        name = obj.get(fmt.name_key) if isinstance(obj, dict) else None
        if not isinstance(name, str) or not isinstance(arguments, dict):
            return ParsedAnswer(text, [])
        calls.append(ToolCall(name, arguments))
        position = _skip_space(text, position)
        if fmt.suffix:
            if not text.startswith(fmt.suffix, position):
                return ParsedAnswer(text, [])
            position += len(fmt.suffix)
    return ParsedAnswer(content, calls)


def _first_brace(text: str) -> int:
    stripped = text.lstrip()
    return len(text) - len(stripped) if stripped.startswith("{") else -1


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def check_arguments(call: ToolCall, tools: list[dict[str, Any]]) -> str | None:
    """Why `call` does not fit the request's tools (an unknown function, arguments against its schema), or
    None when it does."""
    import jsonschema

    by_name = {str(t.get("function", {}).get("name")): t.get("function", {}) for t in tools}
    if call.name not in by_name:
        return f"the model called {call.name!r}, which is not among the request's tools ({', '.join(by_name)})"
    schema = by_name[call.name].get("parameters") or {"type": "object"}
    try:
        jsonschema.validate(call.arguments, schema)
    except jsonschema.ValidationError as exc:
        return f"the arguments of {call.name!r} do not match its parameters schema: {exc.message}"
    except jsonschema.SchemaError as exc:
        return f"the parameters schema of {call.name!r} is not a valid JSON schema: {exc.message}"
    return None
