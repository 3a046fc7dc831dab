"""`honed monitor RUN --traffic LOG`: compare recent traffic with the run's training data, window by window.

    monitor_run("runs/demo", MonitorSettings(traffic="runs/demo/requests.jsonl"))
      -> MonitorReport(windows=[WindowReport(name="2026-12-01", count=812, status="ok", drift=..., ...)])

Per window: input drift (on prompt embeddings from the tuned model, honed.monitor.drift: an MMD permutation
test for any change and a novelty test for more prompts unlike training than training itself has), the
traffic prompts least like any training prompt, simple shifts (length, unseen words, script) and output
health (honed.monitor.health). Status: `degraded` when output health crossed a limit, else `drift` when
both drift tests reject at `alpha`, else `ok` (a rejection by MMD alone is listed as a change of mix).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from honed.data.read import load_or_fail
from honed.errors import ConfigError
from honed.monitor.drift import least_like, window_drift
from honed.monitor.embed import embed_texts
from honed.monitor.health import output_health
from honed.monitor.settings import MonitorSettings
from honed.monitor.shifts import simple_shifts
from honed.monitor.traffic import TrafficItem, read_traffic
from honed.runs.rundir import RunDir

DURATION = re.compile(r"^(\d+)([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
OnProgress = Callable[[str, int, int], None]


@dataclass
class WindowReport:
    name: str
    count: int
    status: str
    reasons: list[str]
    drift: dict[str, Any] | None
    least_like: list[dict[str, Any]]
    shifts: dict[str, Any] | None
    health: dict[str, Any]


@dataclass
class MonitorReport:
    run: str
    traffic: str
    reference: int
    embedder: str
    alpha: float
    windows: list[WindowReport] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def alarm(self) -> bool:
        return any(w.status != "ok" for w in self.windows)


def parse_window(spec: str) -> tuple[str, Any]:
    """`auto`, `all`, a duration (`30m`, `6h`, `1d`, `1w`) or a request count (`200`).

    >>> parse_window("6h"), parse_window("200"), parse_window("all")
    (('time', datetime.timedelta(seconds=21600)), ('count', 200), ('all', None))
    """
    spec = spec.strip().lower()
    if spec in ("auto", "all"):
        return spec, None
    if spec.isdigit() and int(spec) > 0:
        return "count", int(spec)
    match = DURATION.match(spec)
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"--window {spec!r}: use auto, all, a duration like 30m, 6h, 1d, 1w, "
                          "or a number of requests like 200")
    return "time", timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


def split_windows(items: Sequence[TrafficItem], spec: str) -> list[tuple[str, list[TrafficItem]]]:
    """Group traffic into named windows, in time (or file) order."""
    kind, size = parse_window(spec)
    if kind == "auto":
        kind, size = ("time", timedelta(days=1)) if items and all(i.ts for i in items) else ("all", None)
    if kind == "all":
        return [("all", list(items))]
    if kind == "count":
        return [(f"#{start + 1}-{min(start + size, len(items))}", list(items[start : start + size]))
                for start in range(0, len(items), size)]
    if not all(i.ts for i in items):
        raise ConfigError(f"--window {spec}: the traffic has no timestamps (a data file, not a request log); "
                          "use --window all or a number of requests like --window 200")
    groups: dict[datetime, list[TrafficItem]] = {}
    for item in sorted(items, key=lambda i: i.ts):  # type: ignore[arg-type, return-value]
        groups.setdefault(_window_start(item.ts, size), []).append(item)  # type: ignore[arg-type]
    return [(_window_name(start, size), group) for start, group in groups.items()]


def _window_start(ts: datetime, size: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    ts = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    return epoch + ((ts - epoch) // size) * size


def _window_name(start: datetime, size: timedelta) -> str:
    return start.strftime("%Y-%m-%d") if size >= timedelta(days=1) else start.strftime("%Y-%m-%dT%H:%M")


@dataclass
class Reference:
    """The training side: sampled training prompts, their embeddings, and all training responses."""

    prompts: list[str]
    vectors: np.ndarray
    responses: list[str]


def monitor_run(run_dir: str | Path, settings: MonitorSettings, *, on_progress: OnProgress | None = None) -> MonitorReport:
    """Compare the traffic in `settings.traffic` with the run's training data, window by window.

    Usage: `monitor_run("runs/demo", MonitorSettings(traffic="runs/demo/requests.jsonl")).windows`, each with
    its `name` and `status`, e.g. '2026-12-01' and 'ok' (embeds with the run's model:
    tests/unit/test_monitor.py).
    """
    run = RunDir(run_dir).require_run()
    if settings.traffic is None:
        raise ConfigError("pass --traffic LOG (the request log or a data file), or --canary to replay examples")
    schema = _read_schema(settings.schema)
    items = read_traffic(settings.traffic)
    if not items:
        raise ConfigError(f"{settings.traffic}: no requests in the traffic file; nothing to monitor")
    windows = split_windows(items, settings.window)
    model, tokenizer, embedder = _embedder(run, settings)
    reference = _reference(run, settings, model=model, tokenizer=tokenizer, on_progress=on_progress)
    report = MonitorReport(run=str(run.path.resolve()), traffic=str(Path(settings.traffic).resolve()),
                           reference=len(reference.prompts), embedder=embedder, alpha=settings.alpha)
    for name, group in windows:
        vectors = embed_texts(model, tokenizer, [i.prompt for i in group],
                              progress=progress_counter(on_progress, f"embedding window {name}", len(group)))
        report.windows.append(_window_report(name, group, vectors, reference, settings, schema=schema))
    return report


def _read_schema(path: str | None) -> dict[str, Any] | None:
    """--schema, read and checked before any model loads."""
    from honed.evaluate.run_eval import read_schema

    return read_schema(path) if path else None


def _embedder(run: RunDir, settings: MonitorSettings) -> tuple[Any, Any, str]:
    from honed.model.loading import load_model, load_tokenizer
    from honed.model.run import load_run_model

    if settings.embed_model:
        return load_model(settings.embed_model), load_tokenizer(settings.embed_model), settings.embed_model
    model, tokenizer = load_run_model(run, checkpoint=settings.checkpoint)
    return model, tokenizer, f"the run's tuned model ({settings.checkpoint} checkpoint)"


def _reference(run: RunDir, settings: MonitorSettings, *, model: Any, tokenizer: Any,
               on_progress: OnProgress | None) -> Reference:
    path = run.train_file()
    if path is None:
        raise ConfigError(f"{run.path}: the run's training file is gone; monitoring compares traffic with it: "
                          "restore the file named in data.json")
    conversations = load_or_fail(path).conversations
    responses = [c.response_text() for c in conversations]
    prompts = [c.user_text() or c.prompt_text() for c in conversations]
    if len(prompts) > settings.max_reference:
        prompts = random.Random(settings.seed).sample(prompts, settings.max_reference)
    vectors = embed_texts(model, tokenizer, prompts,
                          progress=progress_counter(on_progress, "embedding training prompts", len(prompts)))
    return Reference(prompts, vectors, responses)


def _window_report(
    name: str, group: list[TrafficItem], vectors: np.ndarray, reference: Reference, settings: MonitorSettings, *,
    schema: dict[str, Any] | None,
) -> WindowReport:
    health = output_health(group, train_responses=reference.responses, schema=schema)
    drift, reasons, shown = None, list(health.problems), []
    if len(group) >= settings.min_window:
        drift = window_drift(reference.vectors, vectors, alpha=settings.alpha, permutations=settings.permutations,
                             seed=settings.seed).to_json()
        if drift["drifted"]:
            reasons.append(f"input drift: {drift['novel_share']:.0%} of prompts are unlike any training prompt "
                           f"(training itself: {drift['novel_expected']:.0%}; p {drift['novel_p_value']:.4f}) and "
                           f"MMD p {drift['p_value']:.4f}, both < alpha {settings.alpha}")
        elif drift["mix_changed"]:
            reasons.append(f"the mix of prompts changed (MMD p {drift['p_value']:.4f}) but no more of them are "
                           f"unlike training than training itself ({drift['novel_share']:.0%} vs "
                           f"{drift['novel_expected']:.0%}): not counted as drift")
    else:
        reasons.append(f"too few prompts to test drift ({len(group)} < {settings.min_window})")
    for index, similarity in least_like(reference.vectors, vectors, k=settings.shown):
        shown.append({"where": group[index].request_id or group[index].where, "prompt": group[index].prompt,
                      "similarity": round(similarity, 4)})
    status = "degraded" if health.problems else "drift" if drift and drift["drifted"] else "ok"
    shifts = simple_shifts(reference.prompts, [i.prompt for i in group]).to_json()
    return WindowReport(name=name, count=len(group), status=status, reasons=reasons, drift=drift,
                        least_like=shown, shifts=shifts, health=health.to_json())


def progress_counter(on_progress: OnProgress | None, label: str, total: int) -> Callable[[int], None] | None:
    """A `progress(count)` that adds up counts and reports `label`'s running total to `on_progress`."""
    if on_progress is None:
        return None
    done = [0]

    def advance(count: int) -> None:
        done[0] += count
        on_progress(label, done[0], total)

    return advance
