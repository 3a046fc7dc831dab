"""The request log: one JSON line per completed request, in the format fixed by docs/request-log.md.

`honed monitor` and `honed data from-traffic` read it, so the fields and their meaning are agreed there;
change both together. Each record is appended with a single `write` of one line and a `flush`, under a
lock (lines from concurrent requests never interleave); a line holds no character that str.splitlines()
breaks at (U+2028, U+2029 and NEL are written as JSON escapes). The file is opened by name for every
record, so moving it away (rotation) simply starts a new one.

    log = RequestLog()  # each model's own runs/<name>/requests.jsonl
    log.append(served, record(response_id=..., ts=arrival_timestamp(), served=served, ...))
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from honed.serve.loading import ServedModel

VERSION = 1
# Line breaks to str.splitlines() (which the readers use) that json.dumps leaves raw with ensure_ascii=False.
# They can only occur inside JSON strings, where their \u escape means the same character.
_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\u2028\u2029\x85"}


def arrival_timestamp() -> str:
    """UTC now as ISO 8601 with milliseconds and a Z, e.g. 2026-12-01T23:59:01.123Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(
    *,
    response_id: str,
    ts: str,
    served: ServedModel,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    output: str,
    finish_reason: str,
    error: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    latency_ms: float,
    ttft_ms: float | None,
    mean_logprob: float | None,
    stream: bool,
) -> dict[str, Any]:
    """One line of the request log, with every field of format version 1 in the documented order."""
    return {
        "v": VERSION, "id": response_id, "ts": ts, "model": served.name,
        "run": str(served.run) if served.run is not None else None, "checkpoint": served.checkpoint,
        "messages": messages, "params": params, "output": output, "finish_reason": finish_reason,
        "error": error, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "latency_ms": round(latency_ms, 3), "ttft_ms": round(ttft_ms, 3) if ttft_ms is not None else None,
        "mean_logprob": round(mean_logprob, 6) if mean_logprob is not None else None, "stream": stream,
    }


def json_line(entry: dict[str, Any]) -> str:
    """`entry` as one line of UTF-8 JSON: no character in it that any line splitter breaks at.

    >>> print(json_line({"output": "a" + chr(0x2028) + "b"}), end="")
    {"output": "a\\u2028b"}
    """
    return json.dumps(entry, ensure_ascii=False).translate(_LINE_BREAKS) + "\n"


class RequestLog:
    """Where records go: each model's own log (default), one `--request-log` file, or nowhere (`--no-log`)."""

    def __init__(self, *, single: str | Path | None = None, enabled: bool = True) -> None:
        self.single = Path(single) if single is not None else None
        self.enabled = enabled
        self._lock = threading.Lock()

    def path_for(self, served: ServedModel) -> Path | None:
        if not self.enabled:
            return None
        return self.single if self.single is not None else served.default_log

    def append(self, served: ServedModel, entry: dict[str, Any]) -> None:
        """Append one record as one line (a failure to log never fails the request: it is reported)."""
        path = self.path_for(served)
        if path is None:
            return
        line = json_line(entry)
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
