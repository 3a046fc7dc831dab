"""`honed data from-traffic LOG --out new.jsonl`: logged requests as training data drafts, ready for review.

Each kept request becomes one canonical chat example: the request's messages plus a draft answer (the
served model's own output, or a teacher model's answer from any OpenAI-compatible endpoint), marked
`"honed": {"review": "unreviewed", ...}` until `honed data review` accepts, edits or rejects it.

Left out: /v1/completions requests (a raw prompt, often an lm-eval scoring request, is not a chat to train
on) and requests that offered tools (the log names the tools, not their definitions, so the example could
not be rendered as the model saw it); both are counted.

Kept: chat requests that completed, since `--since`, not repeating a prompt already kept or already in the
run's training or holdout data (normalised: lower-cased, whitespace collapsed); with `--uncertain N` only the N the
model was least sure of (lowest mean token log-probability, recorded by the server: active learning).

Usage: `traffic_to_data(FromTrafficSettings(log="runs/demo/requests.jsonl", out="new.jsonl")).written`,
the number of drafts written (tests/unit/test_monitor_loop.py's from-traffic tests run it on a served run's
log).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from honed.atomic import write_text_atomic
from honed.data.read import load_or_fail
from honed.errors import ConfigError
from honed.monitor.settings import FromTrafficSettings
from honed.monitor.traffic import TrafficItem, content_text, is_request_log, read_traffic
from honed.runs.rundir import RunDir

UNREVIEWED = "unreviewed"
DRAFT_MAX_TOKENS = 512


@dataclass
class FromTrafficResult:
    read: int
    left_out: int  # /v1/completions and tool-calling requests
    duplicates: int
    in_training: int
    written: int
    out: Path
    drafted_by: str


def traffic_to_data(settings: FromTrafficSettings) -> FromTrafficResult:
    """Filter, deduplicate and draft the logged requests; write them atomically as chat JSONL."""
    out = Path(settings.out)
    if out.exists() and not settings.force:
        raise ConfigError(f"--out {out} already exists; choose another file or pass --force to replace it")
    log = Path(settings.log)
    if log.is_file() and not is_request_log(log):
        raise ConfigError(f"{log}: not a request log of `honed serve` (see docs/request-log.md); "
                          "from-traffic turns logged requests into data")
    items = [i for i in read_traffic(log) if i.finish_reason != "error" and i.prompt.strip()]
    read = len(items)
    items = [i for i in items if i.endpoint == "chat" and not i.tools]
    left_out = read - len(items)
    items = since(items, settings.since)
    items, duplicates = _unique(items)
    seen = training_prompt_keys(_run_for(settings, items))
    kept = [i for i in items if prompt_key(i.prompt) not in seen]
    in_training = len(items) - len(kept)
    if settings.uncertain is not None:
        kept = least_sure(kept, settings.uncertain)
    drafter = Drafter.from_spec(settings.draft_with)
    rows = [example_row(item, drafter) for item in kept]
    write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return FromTrafficResult(read, left_out, duplicates, in_training, len(rows), out, drafter.name)


def prompt_key(text: str) -> str:
    """The normalised prompt two requests share when they ask the same thing."""
    return re.sub(r"\s+", " ", text.strip().lower())


def since(items: Sequence[TrafficItem], when: str | None) -> list[TrafficItem]:
    """Requests at or after `when` (an ISO date or date-time, UTC unless it says otherwise)."""
    if when is None:
        return list(items)
    try:
        start = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--since {when!r}: use an ISO date like 2026-12-01 or 2026-12-01T09:00") from exc
    start = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
    return [i for i in items if i.ts is not None and i.ts >= start]


def _unique(items: Sequence[TrafficItem]) -> tuple[list[TrafficItem], int]:
    kept: dict[str, TrafficItem] = {}
    for item in items:
        kept.setdefault(prompt_key(item.prompt), item)
    return list(kept.values()), len(items) - len(kept)


def _run_for(settings: FromTrafficSettings, items: Sequence[TrafficItem]) -> RunDir | None:
    if settings.run:
        return RunDir(settings.run).require_run()
    logged = {i.run for i in items if i.run}
    if len(logged) == 1 and RunDir(next(iter(logged))).is_run():
        return RunDir(next(iter(logged)))
    return None


def training_prompt_keys(run: RunDir | None) -> set[str]:
    """Normalised prompts of the run's training and holdout data (a holdout prompt trained on would leak
    into the evaluation); empty when there is no run or its files are gone."""
    if run is None:
        return set()
    files = [run.train_file(), run.data_dir / "holdout.jsonl"]
    keys: set[str] = set()
    for path in (f for f in files if f is not None and f.is_file() and f.stat().st_size > 0):
        keys |= {prompt_key(c.user_text() or c.prompt_text()) for c in load_or_fail(path).conversations}
    return keys


def least_sure(items: Sequence[TrafficItem], count: int) -> list[TrafficItem]:
    """The `count` requests with the lowest mean token log-probability (those without one are left out)."""
    scored = [i for i in items if i.mean_logprob is not None]
    if items and not scored:
        raise ConfigError("--uncertain: the log records no mean_logprob for these requests; "
                          "serve with `honed serve` (it records one) or drop --uncertain")
    return sorted(scored, key=lambda i: i.mean_logprob)[:count]  # type: ignore[arg-type, return-value]


def example_row(item: TrafficItem, drafter: Drafter) -> dict[str, Any]:
    """The request's messages + the draft answer, with the review marker and where it came from."""
    return {
        "messages": [dict(m) for m in item.messages] + [{"role": "assistant", "content": drafter.draft(item)}],
        "honed": {"review": UNREVIEWED, "request_id": item.request_id, "ts": item.ts.isoformat() if item.ts else None,
                  "drafted_by": drafter.name, "mean_logprob": item.mean_logprob},
    }


@dataclass
class Drafter:
    """Where draft answers come from: the served model's logged output, or an OpenAI-compatible endpoint."""

    name: str
    url: str | None = None
    model: str | None = None

    @classmethod
    def from_spec(cls, spec: str | None) -> Drafter:
        """None -> the logged output; `endpoint:URL[#model]` -> ask that endpoint."""
        if spec is None:
            return cls("served model (logged output)")
        if not spec.startswith("endpoint:") or not spec.removeprefix("endpoint:").startswith(("http://", "https://")):
            raise ConfigError(f"--draft-with {spec!r}: write endpoint:URL[#model], e.g. "
                              "endpoint:http://127.0.0.1:8001/v1#teacher")
        url, _, model = spec.removeprefix("endpoint:").partition("#")
        return cls(f"endpoint {url}" + (f" ({model})" if model else ""), url=url, model=model or None)

    def draft(self, item: TrafficItem) -> str:
        if self.url is None:
            return item.output or ""
        from honed.data.types import Conversation, Message
        from honed.evaluate.endpoint import answer
        from honed.evaluate.systems import System

        messages = tuple(Message(str(m.get("role")), content_text(m.get("content"))) for m in item.messages)
        system = System(name="teacher", model="", kind="endpoint", url=self.url, endpoint_model=self.model)
        return answer(system, [Conversation(messages)], max_tokens=DRAFT_MAX_TOKENS)[0][0]
