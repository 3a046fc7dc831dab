"""Readers: files in any supported format -> Conversations, with every problem located.

MINIMAL FIRST VERSION (OpenAI chat JSONL only); the full reader set lands next.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from honed.data.types import ROLES, Conversation, Source


@dataclass(frozen=True)
class Problem:
    """One located fault in the input: `file:line: [field] message`."""

    source: Source
    message: str
    field: str | None = None

    def __str__(self) -> str:
        where = f" {self.field}:" if self.field else ""
        return f"{self.source}:{where} {self.message}"


@dataclass
class ReadResult:
    conversations: list[Conversation]
    problems: list[Problem]
    format: str
    bad_rows: list[tuple[Source, str, list[Problem]]] = field(default_factory=list)


def read_conversations(path: str | Path, *, fmt: str = "auto") -> ReadResult:
    path = Path(path)
    conversations: list[Conversation] = []
    problems: list[Problem] = []
    with path.open(encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            source = Source(str(path), line_no)
            obj = json.loads(line)
            for m in obj["messages"]:
                if m["role"] not in ROLES:
                    problems.append(Problem(source, f"unknown role {m['role']!r}"))
            conversations.append(Conversation.from_json(obj, source=source))
    return ReadResult(conversations, problems, "chat")
