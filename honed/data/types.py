"""The one canonical example type.

Every reader converts its input into `Conversation`s at the edge; everything downstream (report, split,
render, training, evaluation) sees only this type. The JSON form is OpenAI's chat fine-tuning format:
`{"messages": [{"role": ..., "content": ..., "weight": 0|1}], "tools": [...]}`.

Plain text for language-model fine-tuning (`{"text": ...}`) is a Conversation with one message of role
"text": no chat template, every token trained (see honed.data.render). It has no prompt/response split,
so `last_assistant_index()` is None and the whole text is its "prompt" for duplicate and leakage checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
TEXT_ROLE = "text"  # the one message of a plain-text example; never a chat role


@dataclass(frozen=True)
class Source:
    """Where an example came from: a file and a 1-based line (row number for CSV/Parquet)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Message:
    """One turn. `weight` 0 masks an assistant turn out of the loss (OpenAI's format); None means default.

    `tool_calls`, `tool_call_id` and `name` are kept intact and handed to the chat template as they are.
    """

    role: str
    content: str
    weight: int | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def trainable(self) -> bool:
        """An assistant turn is trained on unless its weight is 0."""
        return self.role == "assistant" and self.weight != 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.weight is not None:
            out["weight"] = self.weight
        if self.tool_calls is not None:
            out["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out

    def to_template(self) -> dict[str, Any]:
        """The dict a Hugging Face chat template expects (no `weight`: templates don't know it)."""
        out = self.to_json()
        out.pop("weight", None)
        return out


@dataclass(frozen=True)
class Conversation:
    """A list of messages, optional tool definitions, and where it came from.

    >>> c = Conversation(messages=(Message("user", "Hi"), Message("assistant", "Hello!")))
    >>> c.prompt_text(), c.response_text()
    ('user: Hi', 'Hello!')
    """

    messages: tuple[Message, ...]
    tools: list[dict[str, Any]] | None = None
    source: Source | None = field(default=None, compare=False)

    @property
    def plain(self) -> bool:
        """True for a plain-text example (`{"text": ...}`): rendered without a chat template."""
        return len(self.messages) == 1 and self.messages[0].role == TEXT_ROLE

    @classmethod
    def from_text(cls, text: str, *, source: Source | None = None) -> Conversation:
        """A plain-text example: `Conversation.from_text("Once upon a time").plain` is True."""
        return cls(messages=(Message(TEXT_ROLE, text),), source=source)

    def to_json(self) -> dict[str, Any]:
        if self.plain:
            return {"text": self.messages[0].content}
        out: dict[str, Any] = {"messages": [m.to_json() for m in self.messages]}
        if self.tools is not None:
            out["tools"] = self.tools
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any], *, source: Source | None = None) -> Conversation:
        """Build from the canonical JSON form, assumed valid (readers validate before calling this)."""
        if "messages" not in obj and isinstance(obj.get("text"), str):
            return cls.from_text(obj["text"], source=source)
        messages = tuple(
            Message(
                role=m["role"],
                content=m.get("content") or "",
                weight=m.get("weight"),
                tool_calls=m.get("tool_calls"),
                tool_call_id=m.get("tool_call_id"),
                name=m.get("name"),
            )
            for m in obj["messages"]
        )
        return cls(messages=messages, tools=obj.get("tools"), source=source)

    def last_assistant_index(self) -> int | None:
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i].role == "assistant":
                return i
        return None

    def prompt_messages(self) -> tuple[Message, ...]:
        """The messages before the last assistant turn (all of them when there is none)."""
        end = self.last_assistant_index()
        return self.messages if end is None else self.messages[:end]

    def prompt_text(self) -> str:
        """Everything before the last assistant turn, as `role: content` lines (for display: duplicate and
        leakage checks use `honed.data.dedup.prompt_key`, which gives the same text, or it normalized)."""
        return "\n".join(f"{m.role}: {m.content}" for m in self.prompt_messages())

    def user_text(self) -> str:
        """The last user message before the last assistant turn (the part that varies between examples)."""
        for m in reversed(self.prompt_messages()):
            if m.role == "user":
                return m.content
        return ""

    def response_text(self) -> str:
        """The last assistant turn's content: the target a single-turn example teaches."""
        end = self.last_assistant_index()
        return "" if end is None else self.messages[end].content

    def system_text(self) -> str | None:
        first = self.messages[0] if self.messages else None
        return first.content if first is not None and first.role == "system" else None
