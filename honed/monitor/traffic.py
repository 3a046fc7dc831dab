"""Traffic to monitor: the request log `honed serve` writes (docs/request-log.md), or any data file honed reads.

    read_traffic("runs/demo/requests.jsonl") -> [TrafficItem(where="requests.jsonl:1", prompt=..., output=..., ts=...)]

A request log line becomes one item: the prompt is the last user message, the output what the model
answered. Any other file (chat JSONL, CSV, ...) is read like training data: the prompt is the last user
turn before the answer and the output the assistant's answer, without timestamps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from honed.data.read import load_or_fail
from honed.errors import DataError

REQUEST_LOG_VERSION = 1
REQUEST_LOG_KEYS = {"v", "messages", "output"}


@dataclass(frozen=True)
class TrafficItem:
    """One request (or one example of a traffic file): what came in and what the model said."""

    where: str  # "requests.jsonl:12" (request id in `request_id`), or "traffic.jsonl:3"
    prompt: str
    output: str | None = None
    messages: tuple[dict[str, Any], ...] = ()
    ts: datetime | None = None
    request_id: str | None = None
    model: str | None = None
    run: str | None = None  # the run directory that answered (request log)
    finish_reason: str | None = None
    latency_ms: float | None = None
    mean_logprob: float | None = None
    endpoint: str = "chat"  # "completions": a /v1/completions request (a raw prompt, no chat)
    tools: bool = False  # the answer could call tools (the log names them; their definitions are not kept)


def read_traffic(path: str | Path) -> list[TrafficItem]:
    """Every request of a request log, or every example of a data file, in file order.

    >>> import tempfile
    >>> asked = [{"role": "user", "content": "App crashes on start"}]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     log = Path(folder) / "requests.jsonl"
    ...     record = {"v": 1, "messages": asked, "output": '{"category": "bug"}'}
    ...     _ = log.write_text(json.dumps(record) + "\\n")
    ...     items = read_traffic(log)
    >>> items[0].where, items[0].prompt, items[0].output
    ('requests.jsonl:1', 'App crashes on start', '{"category": "bug"}')
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; pass the request log of `honed serve` or a data file with --traffic")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; pass the request log of `honed serve` or a data file")
    if is_request_log(path):
        return read_request_log(path)
    conversations = load_or_fail(path).conversations
    return [
        TrafficItem(
            where=f"{path.name}:{c.source.line}" if c.source and c.source.line else f"{path.name}#{i + 1}",
            prompt=c.user_text() or c.prompt_text(),
            output=c.response_text() if c.last_assistant_index() is not None else None,
            messages=tuple(m.to_json() for m in c.messages),
        )
        for i, c in enumerate(conversations)
    ]


def is_request_log(path: Path) -> bool:
    """True when the first JSON line of a .jsonl file has the request log's keys."""
    if path.suffix.lower() != ".jsonl":
        return False
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(first, dict) and REQUEST_LOG_KEYS <= set(first)
    return False


def read_request_log(path: Path) -> list[TrafficItem]:
    """Parse a request log; a torn last line (a write in progress) is skipped, any other bad line is an error."""
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    items = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == last:
                continue
            raise DataError(f"{path}:{i + 1}: not valid JSON ({exc.msg}); the request log is damaged: "
                            "remove or fix the line") from exc
        items.append(_request_item(record, where=f"{path.name}:{i + 1}", path=path))
    return items


def _request_item(record: Any, *, where: str, path: Path) -> TrafficItem:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise DataError(f"{where}: not a request log record (no messages list); see docs/request-log.md")
    version = record.get("v", 1)
    if not isinstance(version, int) or version > REQUEST_LOG_VERSION:
        raise DataError(f"{path}: request log version {version!r} is newer than this honed reads "
                        f"({REQUEST_LOG_VERSION}); upgrade honed")
    messages = tuple(m for m in record["messages"] if isinstance(m, dict))
    users = [m for m in messages if m.get("role") == "user"]
    params = record.get("params") if isinstance(record.get("params"), dict) else {}
    return TrafficItem(
        where=where,
        prompt=content_text(users[-1].get("content")) if users else "",
        output=record.get("output"),
        messages=messages,
        ts=_parse_ts(record.get("ts")),
        request_id=record.get("id"),
        model=record.get("model"),
        run=record.get("run"),
        finish_reason=record.get("finish_reason"),
        latency_ms=record.get("latency_ms"),
        mean_logprob=record.get("mean_logprob"),
        endpoint=str(params.get("endpoint") or "chat"),
        tools=bool(params.get("tools")),
    )


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI content-parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
