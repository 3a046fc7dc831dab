"""Output health from logged outputs, per window: is the served model still answering like it was trained?

The task kind comes from the training responses (JSON objects, labels, or free text):
- JSON tasks: share of outputs that parse as JSON (and that match the schema, when one is given);
- label tasks: label distribution vs training (chi-square) and the share of labels never seen in training;
- every task: refusal-like outputs, empty outputs, outputs cut off by max_tokens, latency p50/p95.

A window is `degraded` when one of these crosses its documented limit (HEALTH_LIMITS).

>>> outputs = ['{"category": "bug"}'] * 6 + ["Sorry, here is some text"] * 4
>>> window = [TrafficItem(where=f"requests.jsonl:{i + 1}", prompt="...", output=o)
...           for i, o in enumerate(outputs)]
>>> health = output_health(window, train_responses=['{"category": "bug"}', '{"category": "billing"}'])
>>> health.task, health.problems
('json', ['json_valid 0.600 < 0.95'])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import chisquare

from honed.data.report import REFUSAL_RE
from honed.data.labels import looks_like_classification
from honed.evaluate.metrics import is_json_task, normalize_label, parse_json
from honed.monitor.traffic import TrafficItem

# Limits that make a window `degraded` (documented in docs/monitor.md).
HEALTH_LIMITS = {
    "json_valid_min": 0.95,  # JSON tasks: at least 95% of outputs parse
    "schema_valid_min": 0.95,
    "unseen_label_max": 0.05,  # label tasks: at most 5% of outputs are labels never trained on
    "label_p_min": 0.001,  # label distribution vs training, chi-square p-value
    "empty_max": 0.05,
    "truncated_max": 0.05,
    "refusal_excess_max": 0.05,  # refusal share above training's share by more than 5 points
}


@dataclass
class Health:
    """The output-health figures of one window (None where they do not apply) and what crossed a limit."""

    outputs: int
    task: str
    json_valid: float | None = None
    schema_valid: float | None = None
    unseen_labels: float | None = None
    label_p_value: float | None = None
    refusals: float = 0.0
    empty: float = 0.0
    truncated: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def task_kind(train_responses: Sequence[str]) -> str:
    """`json`, `labels` or `text`, decided from the training responses as eval decides its metrics."""
    if is_json_task(train_responses):
        return "json"
    return "labels" if looks_like_classification(train_responses) else "text"


def output_health(
    items: Sequence[TrafficItem], *, train_responses: Sequence[str], schema: dict[str, Any] | None = None
) -> Health:
    """Health of the outputs in `items` (items without an output are not counted)."""
    outputs = [i.output for i in items if i.output is not None]
    health = Health(outputs=len(outputs), task=task_kind(train_responses))
    if not outputs:
        return health
    n = len(outputs)
    health.empty = sum(not o.strip() for o in outputs) / n
    health.truncated = sum(i.finish_reason == "length" for i in items if i.output is not None) / n
    health.refusals = sum(bool(REFUSAL_RE.search(o)) for o in outputs) / n
    latencies = [i.latency_ms for i in items if i.latency_ms is not None]
    if latencies:
        health.latency_p50_ms = float(np.percentile(latencies, 50))
        health.latency_p95_ms = float(np.percentile(latencies, 95))
    if health.task == "json":
        _json_health(health, outputs, schema=schema)
    elif health.task == "labels":
        _label_health(health, outputs, train_responses)
    train_refusals = sum(bool(REFUSAL_RE.search(r)) for r in train_responses) / max(1, len(train_responses))
    health.problems = _problems(health, train_refusals=train_refusals)
    return health


def _json_health(health: Health, outputs: Sequence[str], *, schema: dict[str, Any] | None) -> None:
    parsed = [parse_json(o) for o in outputs]
    health.json_valid = sum(p is not None for p in parsed) / len(outputs)
    if schema:
        import jsonschema

        validator = jsonschema.Draft202012Validator(schema)
        health.schema_valid = sum(p is not None and validator.is_valid(p) for p in parsed) / len(outputs)


def _label_health(health: Health, outputs: Sequence[str], train_responses: Sequence[str]) -> None:
    trained = Counter(normalize_label(r) for r in train_responses)
    seen = Counter(normalize_label(o) for o in outputs)
    health.unseen_labels = sum(n for label, n in seen.items() if label not in trained) / len(outputs)
    labels = sorted(trained)
    observed = np.array([seen.get(label, 0) for label in labels], dtype=float)
    if observed.sum() >= 5 and len(labels) > 1:
        expected = np.array([trained[label] for label in labels], dtype=float)
        expected = expected / expected.sum() * observed.sum()
        health.label_p_value = float(chisquare(observed, expected).pvalue)


def _problems(health: Health, *, train_refusals: float) -> list[str]:
    limits = HEALTH_LIMITS
    checks = [
        (health.json_valid is not None and health.json_valid < limits["json_valid_min"],
         f"json_valid {_f(health.json_valid)} < {limits['json_valid_min']}"),
        (health.schema_valid is not None and health.schema_valid < limits["schema_valid_min"],
         f"schema_valid {_f(health.schema_valid)} < {limits['schema_valid_min']}"),
        (health.unseen_labels is not None and health.unseen_labels > limits["unseen_label_max"],
         f"unseen labels {_f(health.unseen_labels)} > {limits['unseen_label_max']}"),
        (health.label_p_value is not None and health.label_p_value < limits["label_p_min"],
         f"label distribution differs from training (chi-square p {health.label_p_value:.2g})"
         if health.label_p_value is not None else ""),
        (health.empty > limits["empty_max"], f"empty outputs {_f(health.empty)} > {limits['empty_max']}"),
        (health.truncated > limits["truncated_max"], f"truncated outputs {_f(health.truncated)} > {limits['truncated_max']}"),
        (health.refusals - train_refusals > limits["refusal_excess_max"],
         f"refusals {_f(health.refusals)} vs {_f(train_refusals)} in training"),
    ]
    return [message for failed, message in checks if failed]


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
