"""What an unrecognised record most looks like, and the exact flag that reads it (the detector's error)."""

from __future__ import annotations

from honed.data.formats import ALPACA, CHAT, PROMPT_COMPLETION, SHAREGPT

PROMPT_NAMES = (
    "prompt",
    "question",
    "instruction",
    "query",
    "input",
    "text",
    "problem",
    "context",
    "source",
    "human",
    "user",
)
RESPONSE_NAMES = (
    "completion",
    "response",
    "answer",
    "output",
    "target",
    "label",
    "category",
    "reply",
    "solution",
    "chosen",
    "gpt",
    "assistant",
    "summary",
)
NEEDED_KEYS = {
    CHAT: ("messages",),
    SHAREGPT: ("conversations",),
    PROMPT_COMPLETION: ("prompt", "completion"),
    ALPACA: ("instruction", "output"),
}


def closest_format(keys: list[str]) -> str:
    """What an unrecognised record's keys (or a table's columns) most look like, and the flag that reads it.

    >>> closest_format(["question", "answer"])
    'read it with --prompt-col question --response-col answer'
    >>> closest_format(["instruction", "answer"])[:44]
    "closest format: alpaca, which needs 'output'"
    """
    lowered = {k.lower(): k for k in keys if isinstance(k, str)}
    prompt = next((lowered[n] for n in PROMPT_NAMES if n in lowered), None)
    response = next((lowered[n] for n in RESPONSE_NAMES if n in lowered and lowered[n] != prompt), None)
    if prompt is not None and response is not None:
        flag = f"read it with --prompt-col {prompt} --response-col {response}"
    elif "text" in lowered:
        flag = "for plain-text (language-model) training pass --format text, else --prompt-col/--response-col"
    else:
        flag = "read it with --prompt-col NAME --response-col NAME"
    best, overlap = None, 0
    for kind, needed in NEEDED_KEYS.items():
        have = sum(1 for name in needed if name in lowered)
        if have > overlap:
            best, overlap = kind, have
    if best is None:
        return flag
    missing = " and ".join(repr(n) for n in NEEDED_KEYS[best] if n not in lowered)
    return f"closest format: {best}, which needs {missing}; {flag}"
