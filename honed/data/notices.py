"""Content a format does not train on, and tool calls encoded twice: counted, never dropped silently.

A text-only model trains on text. A row that also carries `images`, `audio` or `videos` (LLaMA-Factory's
multimodal fields), or whose text holds an `<image>` placeholder for a picture that is not there, trains
as text alone; a tool call whose `arguments` is a JSON string of a JSON string teaches the model to write
escaped JSON. Each is counted per code with the first place it occurs; `load_or_fail(strict=True)`
(`--strict`) refuses the data instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from honed.data.types import Source

CONTENT_FIELDS = ("images", "image", "audio", "audios", "videos", "video")
PLACEHOLDERS = ("<image>", "<video>", "<audio>")
_CONTENT_FIELDS = frozenset(CONTENT_FIELDS)


@dataclass
class Notice:
    """A kind of content that is read but not trained on as the user may expect: how often, first where."""

    code: str
    count: int
    first: Source
    message: str  # completes "N rows ...": what happens and how to fix it

    def __str__(self) -> str:
        rows = "row" if self.count == 1 else "rows"
        return f"{self.count} {rows} {self.message} (first: {self.first})"


MESSAGES = {
    "content_field": "carry a field honed does not train on ({field}): the model sees only the text; "
    "drop the field, or use a multimodal trainer",
    "placeholder": "contain a {field} placeholder that is trained as plain text with nothing behind it; "
    "remove it, or use a multimodal trainer",
    "double_encoded_arguments": "have tool-call arguments encoded twice (a JSON string of a JSON string): "
    "the model would learn to write escaped JSON; decode them once",
}


def codes_for(record: Any, canonical: dict[str, Any]) -> list[tuple[str, str]]:
    """(code, field) for each notice one row raises; `record` as read, `canonical` as converted.

    Runs on every row, so it is one pass over the messages with a cheap test first ("<" in the text).

    >>> codes_for({"images": ["a.png"]}, {"messages": [{"role": "user", "content": "<image>What is it?"}]})
    [('content_field', 'images'), ('placeholder', '<image>')]
    """
    found: list[tuple[str, str]] = []
    if isinstance(record, dict) and not _CONTENT_FIELDS.isdisjoint(record.keys()):
        found += [("content_field", name) for name in CONTENT_FIELDS if record.get(name)]
    placeholders: set[str] = set()
    double_encoded = False
    for message in canonical.get("messages") or ():
        content = message.get("content")
        if type(content) is str and "<" in content:
            placeholders.update(p for p in PLACEHOLDERS if p in content)
        calls = message.get("tool_calls")
        if calls and not double_encoded:
            double_encoded = any(_double_encoded(call) for call in calls)
    found += [("placeholder", p) for p in PLACEHOLDERS if p in placeholders]
    if double_encoded:
        found.append(("double_encoded_arguments", "arguments"))
    return found


def _double_encoded(call: Any) -> bool:
    function = call.get("function", call) if isinstance(call, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    if not isinstance(arguments, str):
        return False
    try:
        return isinstance(json.loads(arguments), str)
    except ValueError:
        return False


class Tally:
    """Notices counted over many rows: `add(source, codes)` per row, then `notices()`."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], Notice] = {}

    def add(self, source: Source, codes: list[tuple[str, str]]) -> None:
        for code, name in codes:
            notice = self.counts.get((code, name))
            if notice is None:
                message = MESSAGES[code].format(field=repr(name))
                self.counts[(code, name)] = Notice(code, 1, source, message)
            else:
                notice.count += 1

    def notices(self) -> list[Notice]:
        return list(self.counts.values())
