"""ShareGPT records -> the canonical chat form, as LLaMA-Factory and Axolotl write them.

    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}],
     "system": "You are terse.", "tools": "[{\"name\": \"get_weather\", ...}]"}

Roles: human -> user, gpt -> assistant, system -> system, function_call -> an assistant turn whose
`value` is the JSON call `{"name", "arguments"}` (or a list of them) kept as `tool_calls`, observation and
tool -> tool. `user`/`assistant` are accepted as `from` too, and so are `role`/`content` entries. The
top-level `system` becomes the first message; `tools` (a list, or a JSON string of one, as LLaMA-Factory
stores it) becomes OpenAI tool definitions. Every assistant turn is trained on, as both tools do by default.
"""

from __future__ import annotations

import json
from typing import Any

from honed.data.formats import Fault, chat_faults, renamed_faults, type_name

ROLE_OF = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
KNOWN_FROM = "human, gpt, system, function_call, observation, tool"


def sharegpt_list_key(record: dict[str, Any]) -> str:
    """The key holding the turns: `conversations`, or `messages` when its entries use from/value."""
    return "conversations" if "conversations" in record else "messages"


def looks_like_sharegpt_messages(messages: Any) -> bool:
    """True when a `messages` list holds ShareGPT turns (`from`/`value`), not OpenAI messages."""
    first = messages[0] if isinstance(messages, list) and messages else None
    return isinstance(first, dict) and "from" in first and "role" not in first


def from_sharegpt(record: dict[str, Any]) -> tuple[dict | None, list[Fault]]:
    """Convert one ShareGPT record, or return its faults named by the record's own fields.

    >>> from_sharegpt({"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]})
    ({'messages': [{'role': 'user', 'content': '2+2?'}, {'role': 'assistant', 'content': '4'}]}, [])
    """
    key = sharegpt_list_key(record)
    turns = record.get(key)
    if not isinstance(turns, list) or not turns:
        shown = "an empty list" if turns == [] else type_name(turns)
        return None, [
            (key, f'must be a non-empty list of turns like {{"from": "human", "value": ...}}, got {shown}')
        ]
    messages: list[dict[str, Any]] = []
    where: list[str] = []
    faults: list[Fault] = []
    system = record.get("system")
    if isinstance(system, str) and system.strip():
        messages.append({"role": "system", "content": system})
        where.append("system")
    elif system is not None and not isinstance(system, str):
        faults.append(("system", f"must be a string, got {type_name(system)}"))
    for i, turn in enumerate(turns):
        message, fault = _turn(f"{key}[{i}]", turn)
        if fault is not None:
            faults.append(fault)
        elif message is not None:
            messages.append(message)
            where.append(f"{key}[{i}]")
    tools, tool_fault = _tools(record.get("tools"))
    faults += [tool_fault] if tool_fault is not None else []
    if faults:
        return None, faults
    out: dict[str, Any] = {"messages": messages}
    if tools:
        out["tools"] = tools
    faults = renamed_faults(chat_faults(out), where)
    return (None, faults) if faults else (out, [])


def _turn(where: str, turn: Any) -> tuple[dict[str, Any] | None, Fault | None]:
    if not isinstance(turn, dict):
        return None, (where, f"must be an object with from and value, got {type_name(turn)}")
    speaker = turn.get("from", turn.get("role"))
    value = turn.get("value", turn.get("content"))
    if not isinstance(speaker, str) or speaker not in ROLE_OF:
        shown = repr(speaker) if speaker is not None else "missing"
        return None, (f"{where}.from", f"unknown speaker {shown}; use one of {KNOWN_FROM}")
    if not isinstance(value, str):
        return None, (f"{where}.value", f"must be a string, got {type_name(value)}")
    if speaker == "system" and not value.strip():
        return None, None  # an empty system turn carries nothing
    if speaker == "function_call":
        return _function_call(where, value)
    return {"role": ROLE_OF[speaker], "content": value}, None


def _function_call(where: str, value: str) -> tuple[dict[str, Any] | None, Fault | None]:
    """A function_call turn's value is a JSON call (or list of calls): {"name": ..., "arguments": ...}."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        return None, (
            f"{where}.value",
            (
                'a function_call value must be JSON like {"name": ..., "arguments": {...}} '
                f"({exc.msg} at character {exc.pos + 1})"
            ),
        )
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        return None, (
            f"{where}.value",
            'a function_call value must be {"name": ..., "arguments": {...}} (or a list of them)',
        )
    tool_calls = [
        {"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}}
        for c in calls
    ]
    return {"role": "assistant", "content": "", "tool_calls": tool_calls}, None


def _tools(tools: Any) -> tuple[list[dict[str, Any]] | None, Fault | None]:
    """Tool definitions as OpenAI writes them (LLaMA-Factory stores a JSON string of bare functions)."""
    if tools is None or tools == "" or tools == []:
        return None, None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as exc:
            return None, (
                "tools",
                f"a JSON string of tool definitions that does not parse ({exc.msg}); fix it",
            )
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        return None, (
            "tools",
            f"must be a list of tool definitions (or a JSON string of one), got {type_name(tools)}",
        )
    return [t if "type" in t else {"type": "function", "function": t} for t in tools], None
