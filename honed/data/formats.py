"""Record formats -> the canonical chat form, with every fault named by field.

A *record* is one parsed row: a JSON object from a JSONL line or a JSON array element, or a
`{column: value}` dict from a CSV/Parquet row. Each supported format turns a record into the canonical
OpenAI chat dict (`{"messages": [...], "tools": [...]}`) or says what is wrong with it:

- openai-chat:        `{"messages": [{"role", "content", "weight"?, "tool_calls"?, ...}], "tools"?}`;
                      `content` may be OpenAI content parts `[{"type": "text", "text": ...}]`, joined with
                      newlines (an image or audio part is a fault: honed trains on text).
- sharegpt:           `{"conversations": [{"from", "value"}], "system"?, "tools"?}` (honed.data.sharegpt).
- prompt-completion:  `{"prompt", "completion"}` -> user + assistant. The chat template renders it and
                      only the assistant turn (the completion) is trained on. TRL's conversational form
                      (both are message lists) is the prompt messages, then the completion's, trained on.
- alpaca:             `{"instruction", "input"?, "output", "system"?, "history"?}` -> (system) + earlier
                      turns from `history` ([[instruction, response], ...]) + user + assistant; the user
                      turn is `instruction + "\\n\\n" + input` when input is not empty.
- text:               `{"text"}` (plus metadata such as `id`): plain text, no chat template, all trained.
- columns:            any record + a ColumnMapping (`--prompt-col`, `--response-col`, `--system`,
                      `--system-col`).

A fault is `(field, message)`: `("messages[2].role", "unknown role 'bot'; use one of ...")`. These are
plain per-record checks (a dict lookup or an isinstance each): reading 100k rows must stay fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from honed.data.types import ROLES

Fault = tuple[str | None, str]  # (field or None, message saying what is wrong and how to fix it)

CHAT = "openai-chat"
SHAREGPT = "sharegpt"
PROMPT_COMPLETION = "prompt-completion"
ALPACA = "alpaca"
TEXT = "text"
COLUMNS = "columns"
KINDS = (CHAT, SHAREGPT, PROMPT_COMPLETION, ALPACA, TEXT, COLUMNS)
# Keys that may sit beside `text` in a plain-text record without making it something else.
TEXT_METADATA = frozenset(
    {"id", "meta", "metadata", "source", "url", "title", "timestamp", "date", "lang", "language"}
)

ALLOWED_ROLES = ", ".join(ROLES)
EXCERPT_CHARS = 60


@dataclass(frozen=True)
class ColumnMapping:
    """Which record fields (CSV/Parquet columns, or JSON keys) hold the prompt and the response.

    >>> ColumnMapping("text", "category", system_col="persona")
    ColumnMapping(prompt_col='text', response_col='category', system=None, system_col='persona')
    """

    prompt_col: str
    response_col: str
    system: str | None = None
    system_col: str | None = None  # a column holding each row's own system prompt (wins over `system`)


def clip(text: str, limit: int = EXCERPT_CHARS) -> str:
    """Shorten text for an error message: never print a 10 MB line."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} chars)"


def type_name(value: Any) -> str:
    """The JSON name of a Python value's type, as the user wrote it in the file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def keys_found(record: dict[str, Any]) -> str:
    names = [clip(str(k), 30) for k in list(record)[:12]]
    more = f", ... ({len(record)} keys)" if len(record) > 12 else ""
    return ", ".join(names) + more if names else "none"


def detect_kind(record: dict[str, Any]) -> str | None:
    """The format a record's keys say it is in, or None when no known keys are there.

    >>> detect_kind({"conversations": [{"from": "human", "value": "Hi"}]})
    'sharegpt'
    """
    from honed.data.sharegpt import looks_like_sharegpt_messages

    if "messages" in record:
        return SHAREGPT if looks_like_sharegpt_messages(record["messages"]) else CHAT
    if "conversations" in record:
        return SHAREGPT
    if "prompt" in record and "completion" in record:
        return PROMPT_COMPLETION
    if "instruction" in record and "output" in record:
        return ALPACA
    if "text" in record and record.keys() - TEXT_METADATA == {"text"}:
        return TEXT
    return None


def to_chat(
    record: Any, kind: str, *, columns: ColumnMapping | None = None
) -> tuple[dict | None, list[Fault]]:
    """Convert one record of format `kind` to the canonical chat dict, or return its faults.

    >>> to_chat({"prompt": "2+2=", "completion": "4"}, "prompt-completion")
    ({'messages': [{'role': 'user', 'content': '2+2='}, {'role': 'assistant', 'content': '4'}]}, [])
    """
    if not isinstance(record, dict):
        return None, [
            (
                None,
                f'expected a JSON object like {{"messages": [...]}}, got {type_name(record)}; '
                "put one example object on each line",
            )
        ]
    if kind == CHAT:
        return _from_chat(record)
    if kind == SHAREGPT:
        from honed.data.sharegpt import from_sharegpt  # here: sharegpt builds on this module's checks

        return from_sharegpt(record)
    if kind == PROMPT_COMPLETION:
        return _from_prompt_completion(record)
    if kind == ALPACA:
        return _from_alpaca(record)
    if kind == TEXT:
        return _from_text(record)
    assert kind == COLUMNS and columns is not None, kind
    return _from_columns(record, columns)


# --- openai-chat ---------------------------------------------------------------------------------------


def chat_faults(record: dict[str, Any]) -> list[Fault]:
    """Every fault of one OpenAI-chat record (empty when it is valid).

    >>> chat_faults({"messages": [{"role": "bot", "content": "hi"}]})[0]
    ('messages[0].role', "unknown role 'bot'; use one of system, user, assistant, tool")
    """
    if "messages" not in record:
        return [(None, _missing_messages(record))]
    messages = record["messages"]
    if not isinstance(messages, list):
        return [("messages", f"must be a list of messages, got {type_name(messages)}")]
    if not messages:
        return [("messages", "empty list; add at least a user message and the assistant's reply")]
    faults: list[Fault] = []
    for i, message in enumerate(messages):
        if not _plain_and_valid(message):  # the full checks only for messages that need them
            faults.extend(_message_faults(i, message))
    if not faults:  # whole-conversation rules only make sense once every message is well formed
        faults.extend(_conversation_faults(messages))
    tools = record.get("tools")
    if tools is not None and not isinstance(tools, list):
        faults.append(("tools", f"must be a list of tool definitions, got {type_name(tools)}"))
    return faults


def _from_chat(record: dict[str, Any]) -> tuple[dict | None, list[Fault]]:
    messages = record.get("messages")
    has_parts = isinstance(messages, list) and any(
        isinstance(m, dict) and isinstance(m.get("content"), list) for m in messages
    )
    if has_parts:
        record, faults = join_content_parts(record)
        if faults:
            return None, faults
    faults = chat_faults(record)
    return (None if faults else record), faults


def join_content_parts(
    record: dict[str, Any], *, key: str = "messages"
) -> tuple[dict[str, Any], list[Fault]]:
    """OpenAI content parts -> one string per message: text parts joined with newlines.

    A part that is not text (image_url, input_audio, file ...) is a fault: honed trains text-only models,
    and dropping the part would silently train on a prompt that lost what it referred to.

    >>> join_content_parts({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]})
    ({'messages': [{'role': 'user', 'content': 'Hi'}]}, [])
    """
    faults: list[Fault] = []
    messages = []
    for i, message in enumerate(record[key]):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            messages.append(message)
            continue
        texts = []
        for j, part in enumerate(content):
            text = part if isinstance(part, str) else part.get("text") if isinstance(part, dict) else None
            kind = part.get("type", "text") if isinstance(part, dict) else "text"
            if kind == "text" and isinstance(text, str):
                texts.append(text)
                continue
            shown = f"a {clip(str(kind), 30)!r} part" if isinstance(part, dict) else f"a {type_name(part)}"
            fix = "honed trains on text only: remove the part (or pass --skip-invalid to leave such rows out)"
            faults.append((f"{key}[{i}].content[{j}]", f"{shown}, not text; {fix}"))
        messages.append({**message, "content": "\n".join(texts)})
    return {**record, key: messages}, faults


def renamed_faults(faults: list[Fault], where: list[str]) -> list[Fault]:
    """Faults of a converted record, with `messages[i]` renamed to where message i came from (`where[i]`)."""
    out: list[Fault] = []
    for name, message in faults:
        if name is not None and name.startswith("messages["):
            index, _, rest = name[len("messages[") :].partition("]")
            if index.isdigit() and int(index) < len(where):
                name = where[int(index)] + rest
        out.append((name, message))
    return out


def _missing_messages(record: dict[str, Any]) -> str:
    other = detect_kind(record)
    if other is not None:
        return (
            f"this record is {other} but the file is openai-chat (detected from its first record); "
            "use one format per file"
        )
    return (
        f"missing field 'messages' (keys found: {keys_found(record)}); "
        'each record needs {"messages": [{"role": ..., "content": ...}, ...]}'
    )


_PLAIN_KEYS = {"role", "content"}
_MAY_BE_EMPTY = ("system", "tool")


def _plain_and_valid(message: Any) -> bool:
    """Fast path for the common message: exactly a known role and non-empty text (see _message_faults)."""
    return (
        type(message) is dict
        and message.keys() == _PLAIN_KEYS
        and message["role"] in ROLES
        and type(message["content"]) is str
        and (
            message["role"] in _MAY_BE_EMPTY or not message["content"].isspace() and message["content"] != ""
        )
    )


def _message_faults(i: int, message: Any) -> list[Fault]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        return [(where, f"must be an object with role and content, got {type_name(message)}")]
    faults: list[Fault] = []
    role = message.get("role")
    if role is None:
        faults.append((where, f"missing field 'role'; use one of {ALLOWED_ROLES}"))
    elif not isinstance(role, str) or role not in ROLES:
        shown = repr(role) if isinstance(role, str) else json.dumps(role, ensure_ascii=False)
        faults.append((f"{where}.role", f"unknown role {clip(shown)}; use one of {ALLOWED_ROLES}"))
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not isinstance(tool_calls, list):
        faults.append((f"{where}.tool_calls", f"must be a list of tool calls, got {type_name(tool_calls)}"))
    elif tool_calls and not all(isinstance(call, dict) for call in tool_calls):
        faults.append((f"{where}.tool_calls", "every tool call must be an object"))
    faults.extend(_content_faults(where, role, message, has_tool_calls=bool(tool_calls)))
    faults.extend(_weight_faults(where, role, message.get("weight")))
    for name in ("tool_call_id", "name"):
        value = message.get(name)
        if value is not None and not isinstance(value, str):
            faults.append((f"{where}.{name}", f"must be a string, got {type_name(value)}"))
    return faults


def _content_faults(where: str, role: Any, message: dict[str, Any], *, has_tool_calls: bool) -> list[Fault]:
    content = message.get("content")
    if content is None:
        if has_tool_calls:  # an assistant turn that only calls tools needs no text
            return []
        if "content" not in message:
            return [(where, "missing field 'content'; add the message text as \"content\"")]
        return [(f"{where}.content", "is null; write the text (only a message with tool_calls may omit it)")]
    if not isinstance(content, str):
        hint = "; join the text parts into one string" if isinstance(content, list) else ""
        return [(f"{where}.content", f"must be a string, got {type_name(content)}{hint}")]
    if role in ("user", "assistant") and not has_tool_calls and not content.strip():
        return [(f"{where}.content", f"empty {role} message; write the text or remove the message")]
    return []


def _weight_faults(where: str, role: Any, weight: Any) -> list[Fault]:
    if weight is None:
        return []
    if isinstance(weight, bool) or not isinstance(weight, int) or weight not in (0, 1):
        return [(f"{where}.weight", f"must be 0 or 1, got {clip(repr(weight))}")]
    if role != "assistant":
        return [(f"{where}.weight", "only assistant messages take a weight (0 = not trained on); remove it")]
    return []


def _conversation_faults(messages: list[dict[str, Any]]) -> list[Fault]:
    assistants = [m for m in messages if m["role"] == "assistant"]
    if not assistants:
        return [("messages", "no assistant message, so nothing to learn from; add the assistant's reply")]
    if all(m.get("weight") == 0 for m in assistants):
        return [
            (
                "messages",
                "no trainable assistant turn (every assistant message has weight 0); "
                "set weight 1 on the turns to learn from",
            )
        ]
    last = messages[-1]["role"]
    if last != "assistant":
        return [
            (
                f"messages[{len(messages) - 1}]",
                f"conversation ends on a {last} message; end it with the assistant reply to learn from",
            )
        ]
    return []


# --- prompt-completion, alpaca, columns ------------------------------------------------------------------


def _text_field(
    record: dict[str, Any], name: str, *, required: bool = True
) -> tuple[str | None, Fault | None]:
    """A string field: (value, None) or (None, fault). Optional fields may be missing, null or empty."""
    value = record.get(name)
    if value is None:
        if not required:
            return "", None
        return None, (None, f"missing field '{name}' (keys found: {keys_found(record)})")
    if not isinstance(value, str):
        return None, (name, f"must be a string, got {type_name(value)}")
    if required and not value.strip():
        return None, (name, "is empty; write the text or remove the record")
    return value, None


def _from_prompt_completion(record: dict[str, Any]) -> tuple[dict | None, list[Fault]]:
    if isinstance(record.get("prompt"), list) or isinstance(record.get("completion"), list):
        return _from_conversational_pc(record)
    prompt, prompt_fault = _text_field(record, "prompt")
    completion, completion_fault = _text_field(record, "completion")
    faults = [f for f in (prompt_fault, completion_fault) if f is not None]
    if faults:
        return None, faults
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    }, []


def _from_conversational_pc(record: dict[str, Any]) -> tuple[dict | None, list[Fault]]:
    """TRL's conversational prompt-completion: the prompt's messages (not trained), then the completion's."""
    prompt, completion = record.get("prompt"), record.get("completion")
    if not isinstance(prompt, list) or not isinstance(completion, list):
        listed, other = ("prompt", "completion") if isinstance(prompt, list) else ("completion", "prompt")
        message = (
            f"must be a string, got array, while {other} is {type_name(record.get(other))}; "
            "both must be text, or both lists of messages (TRL's conversational form)"
        )
        return None, [(listed, message)]
    if not completion:
        return None, [("completion", "empty list; add the assistant message to learn from")]
    # An assistant turn inside the prompt is context, not a target (TRL trains on the completion only).
    messages: list[Any] = [
        {**m, "weight": 0} if _unweighted_assistant(m) else m for m in prompt
    ]
    messages += completion
    where = [f"prompt[{i}]" for i in range(len(prompt))]
    where += [f"completion[{i}]" for i in range(len(completion))]
    out: dict[str, Any] = {"messages": messages}
    if record.get("tools") is not None:
        out["tools"] = record["tools"]
    converted, faults = _from_chat(out)
    return converted, renamed_faults(faults, where)


def _from_alpaca(record: dict[str, Any]) -> tuple[dict | None, list[Fault]]:
    instruction, f1 = _text_field(record, "instruction")
    extra, f2 = _text_field(record, "input", required=False)
    output, f3 = _text_field(record, "output")
    system, f4 = _text_field(record, "system", required=False)
    history, f5 = _alpaca_history(record.get("history"))
    faults = [f for f in (f1, f2, f3, f4, f5) if f is not None]
    if faults:
        return None, faults
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    messages += history
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return {"messages": messages}, []


def _unweighted_assistant(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "assistant" and "weight" not in message


def _alpaca_history(history: Any) -> tuple[list[dict[str, str]], Fault | None]:
    """LLaMA-Factory's `history`: [[instruction, response], ...], the turns before this one (trained on)."""
    if history is None or history == []:
        return [], None
    if not isinstance(history, list):
        return [], ("history", f"must be a list of [instruction, response] pairs, got {type_name(history)}")
    turns: list[dict[str, str]] = []
    for i, pair in enumerate(history):
        texts = isinstance(pair, list) and all(isinstance(t, str) and t.strip() for t in pair)
        if not (texts and len(pair) == 2):
            return [], (f"history[{i}]", "must be a pair of non-empty strings [instruction, response]")
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return turns, None


def _from_text(record: dict[str, Any]) -> tuple[dict | None, list[Fault]]:
    text, fault = _text_field(record, "text")
    return (None, [fault]) if fault is not None else ({"text": text}, [])


def _cell_text(record: dict[str, Any], column: str) -> tuple[str | None, Fault | None]:
    """A mapped column's value as text. Numbers become text (labels are often integers)."""
    if column not in record:
        return None, (None, f"missing field '{column}' (keys found: {keys_found(record)})")
    value = record[column]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, (column, "is empty; fill it in or remove the row")
    if not isinstance(value, str):
        return None, (column, f"must be text, got {type_name(value)}")
    return value, None


def _from_columns(record: dict[str, Any], columns: ColumnMapping) -> tuple[dict | None, list[Fault]]:
    prompt, f1 = _cell_text(record, columns.prompt_col)
    response, f2 = _cell_text(record, columns.response_col)
    system, f3 = columns.system, None
    if columns.system_col is not None:
        system, f3 = _system_cell(record, columns)
    faults = [f for f in (f1, f2, f3) if f is not None]
    if faults:
        return None, faults
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return {"messages": messages}, []


def _system_cell(record: dict[str, Any], columns: ColumnMapping) -> tuple[str | None, Fault | None]:
    """The row's own system prompt; an empty cell falls back to `--system` (or none)."""
    name = columns.system_col
    assert name is not None
    if name not in record:
        return None, (None, f"missing field '{name}' (--system-col; keys found: {keys_found(record)})")
    value = record[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        return columns.system, None
    if not isinstance(value, str):
        return None, (name, f"must be text, got {type_name(value)}")
    return value, None
