"""`honed monitor RUN --canary --endpoint URL`: replay fixed holdout examples against the served model.

The canary set is the first `size` examples of the run's evaluation (eval/tuned.jsonl, in holdout order):
each is sent, as `honed eval` rendered it (the holdout conversation up to its answer), to any
OpenAI-compatible endpoint with greedy decoding, scored with the evaluation's per-example main metric,
and compared with the tuned model's own score on the same example (paired bootstrap, as in eval). A
significant drop is `degraded`: a wrong adapter, a bad export or a changed server shows up here.

Usage: `run_canary("runs/demo", endpoint="http://127.0.0.1:8000/v1")` gives a result whose `.status,
.difference` read e.g. `('ok', {'value': 0.0, 'low': 0.0, 'high': 0.0})` (it needs an evaluated run and a
server: tests/unit/test_monitor_loop.py replays one against a right and a wrong model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from honed.data.read import sha256_file
from honed.errors import ConfigError
from honed.evaluate.metrics import resolve_metrics
from honed.evaluate.run_eval import read_examples
from honed.evaluate.stats import paired_difference, resample_indices
from honed.evaluate.endpoint import answer
from honed.evaluate.systems import System
from honed.runs.rundir import EvalSummary, RunDir


@dataclass
class CanaryResult:
    endpoint: str
    model: str
    metric: str
    size: int
    evaluated: float  # the tuned model's mean score at eval time, on the canary examples
    served: float  # the endpoint's mean score now
    difference: dict[str, float]  # served - evaluated, paired 95% interval
    identical: float  # share of outputs identical to eval's
    status: str  # ok | degraded
    worst: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_canary(run_dir: str | Path, *, endpoint: str, model: str | None = None, size: int = 32, seed: int = 0,
               progress: Callable[[int], None] | None = None) -> CanaryResult:
    """Replay the canary examples against `endpoint` (model name default: the run's name)."""
    run = RunDir(run_dir).require_run()
    summary = run.read_summary()
    rows = run.read_eval_rows("tuned")[:size]
    metric = canary_metric(summary, rows)
    conversations = _holdout(run, summary)
    score = resolve_metrics([metric], schema=summary.schema_ or {})[metric]
    name = model or run.read_run().name or run.name
    system = System(name="served", model="", kind="endpoint", url=endpoint, endpoint_model=name)
    max_tokens = int(summary.decoding.get("max_new_tokens") or 256)
    outputs = answer(system, [conversations[row["id"]] for row in rows], max_tokens=max_tokens, progress=progress)[0]
    served = [float(score(r["reference"], o)) for r, o in zip(rows, outputs)]
    evaluated = [float(r["scores"][metric]) for r in rows]
    diff = paired_difference(served, evaluated, indices=resample_indices(len(rows), seed=seed))
    worst = sorted(range(len(rows)), key=lambda i: served[i] - evaluated[i])[:3]
    return CanaryResult(
        endpoint=endpoint, model=name, metric=metric, size=len(rows),
        evaluated=sum(evaluated) / len(rows), served=sum(served) / len(rows), difference=diff.to_json(),
        identical=sum(o.strip() == r["output"].strip() for o, r in zip(outputs, rows)) / len(rows),
        status="degraded" if diff.high < 0 else "ok",
        worst=[{"id": rows[i]["id"], "prompt": rows[i]["prompt"], "reference": rows[i]["reference"],
                "evaluated": rows[i]["output"], "served": outputs[i]} for i in worst if served[i] < evaluated[i]],
    )


def canary_metric(summary: EvalSummary, rows: list[dict[str, Any]]) -> str:
    """The evaluation's main metric when it is scored per example, else its first per-example metric."""
    if not rows:
        raise ConfigError("the evaluation has no examples to replay; run `honed eval` on a holdout first")
    per_example = [m for m in [summary.main_metric, *summary.metrics] if m in rows[0].get("scores", {})]
    if not per_example:
        raise ConfigError("the evaluation recorded no per-example scores; run `honed eval` again")
    return per_example[0]


def _holdout(run: RunDir, summary: EvalSummary) -> list[Any]:
    """The holdout eval used, checked unchanged (sha256), as eval read it (ids index this list)."""
    if summary.holdout is None:
        raise ConfigError(f"{run.path}: the evaluation recorded no holdout file; run `honed eval` again")
    path = Path(summary.holdout.path)
    if not path.is_file() or sha256_file(path) != summary.holdout.sha256:
        raise ConfigError(f"{path}: the holdout the evaluation used is gone or changed (sha256); "
                          f"the canary replays it: restore it or run `honed eval {run.path}` again")
    return read_examples(path, reading=run.config().data)
