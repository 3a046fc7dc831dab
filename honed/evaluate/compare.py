"""`honed compare`: runs side by side, from the files `honed train` and `honed eval` wrote.

    compare_runs(["runs/a", "runs/b"]) -> {
        "runs": [{name, path, model, method, data: {train: {sha256, count}, holdout: {...}}, eval: {...}}],
        "config_differences": {"lr": [0.0002, 0.0001], ...},
        "metrics": {"field_f1_micro": {"a": {value, low, high}, "b": {...}}, ...},
        "disagreements": {"count": 17, "same_holdout": true, "examples": [{id, prompt, reference, outputs}]},
    }

Only the tuned system of each run is compared; each run's own summary keeps its baselines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from honed.config import flatten_config
from honed.errors import ConfigError
from honed.evaluate.metrics import CORPUS, LEGACY_FIELD_METRICS, normalize_text
from honed.evaluate.stats import corpus_difference, paired_difference, resample_indices
from honed.runs.rundir import EvalSummary, RunDir

TUNED = "tuned"


def config_differences(configs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Config keys whose values are not the same in every run (a key missing in a run reads None).

    >>> config_differences([{"lr": 1, "seed": 0}, {"lr": 2, "seed": 0}])
    {'lr': [1, 2]}
    """
    flat = [flatten_config(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k), default=str) for f in flat}) > 1}


def _load_eval(run: RunDir) -> tuple[EvalSummary, list[dict[str, Any]]]:
    return run.read_summary(), run.read_eval_rows(TUNED)


def _run_entry(run: RunDir, summary: EvalSummary) -> dict[str, Any]:
    record, data, config = run.read_run(), run.read_data(), run.config()
    files = {part: {k: getattr(entry, k, None) for k in ("path", "sha256", "count")}
             for part, entry in (("train", data.train), ("holdout", data.holdout))}
    return {
        "name": record.name or run.name, "path": str(run.path), "model": config.model,
        "method": config.method, "status": record.status, "best_checkpoint": record.best_checkpoint,
        "data": files,
        "eval": {"holdout": summary.holdout.model_dump() if summary.holdout else None,
                 "main_metric": summary.main_metric, "verdict": summary.verdict, "checkpoint": summary.checkpoint},
    }


def disagreements(names: Sequence[str], rows: Sequence[Sequence[dict[str, Any]]], *, limit: int) -> dict[str, Any]:
    """Holdout examples where the runs' tuned outputs differ (compared normalised), the first `limit` listed."""
    n = min(len(r) for r in rows) if rows else 0
    differing = [i for i in range(n) if len({normalize_text(r[i]["output"]) for r in rows}) > 1]
    examples = [
        {"id": rows[0][i]["id"], "prompt": rows[0][i]["prompt"], "reference": rows[0][i]["reference"],
         "outputs": {name: r[i]["output"] for name, r in zip(names, rows)},
         "scores": {name: r[i]["scores"] for name, r in zip(names, rows)}}
        for i in differing[:limit]
    ]
    return {"count": len(differing), "of": n, "examples": examples}


def _unique_names(runs: Sequence[RunDir]) -> list[str]:
    names = [r.read_run().name or r.name for r in runs]
    return [f"{n} ({r.path})" if names.count(n) > 1 else n for n, r in zip(names, runs)]


def compare_runs(run_dirs: Sequence[str | Path], *, limit: int = 10) -> dict[str, Any]:
    """Data versions, config differences, tuned metrics with intervals, and disagreeing examples.

    Usage: `compare_runs(["runs/a", "runs/b"])["disagreements"]["count"]` gives e.g. 17 (two evaluated runs:
    tests/unit/test_compare.py and tests/unit/test_rundir.py compare copies of a stored run).
    """
    if len(run_dirs) < 2:
        raise ConfigError("compare needs at least two run directories, e.g. honed compare runs/a runs/b")
    runs = [RunDir(d).require_run() for d in run_dirs]
    loaded = [_load_eval(run) for run in runs]
    names = _unique_names(runs)
    metric_names = list(dict.fromkeys(LEGACY_FIELD_METRICS.get(m, m) for summary, _ in loaded for m in summary.metrics))
    metrics = {
        m: {name: _interval(summary, m) for name, (summary, _) in zip(names, loaded)} for m in metric_names
    }
    holdout_hashes = {summary.holdout.sha256 if summary.holdout else None for summary, _ in loaded}
    same = len(holdout_hashes) == 1 and len({summary.n for summary, _ in loaded}) == 1
    disagree = disagreements(names, [rows for _, rows in loaded], limit=limit) if same else {
        "count": None, "of": None, "examples": []}
    disagree["same_holdout"] = same
    changes = version_changes(names, loaded, main=loaded[0][0].main_metric) if same else {}
    return {
        "runs": [_run_entry(run, summary) for run, (summary, _) in zip(runs, loaded)],
        "names": names,
        "config_differences": config_differences([run.config_fields() for run in runs]),
        "metrics": metrics,
        "disagreements": disagree,
        "changes": changes,
    }


def version_changes(names: Sequence[str], loaded: Sequence[tuple[EvalSummary, list[dict[str, Any]]]], *,
                    main: str, seed: int = 0) -> dict[str, Any]:
    """Each later run against the first (the old version) on the same holdout: paired differences of every
    metric both evaluations have (per-example scores, or corpus metrics recomputed on resampled outputs),
    and a verdict on the main metric: better, worse, or no significant difference."""
    old_rows = loaded[0][1]
    references = [r["reference"] for r in old_rows]
    indices = resample_indices(len(old_rows), seed=seed)
    out: dict[str, Any] = {}
    for name, (summary, rows) in zip(names[1:], loaded[1:]):
        diffs = {}
        for metric in (m for m in summary.metrics if m in loaded[0][0].metrics):
            diff = _paired(metric, references, rows, old_rows, indices=indices)
            if diff is not None:
                diffs[metric] = diff.to_json()
        out[f"{name} - {names[0]}"] = {"differences": diffs, "verdict": _change_verdict(main, diffs.get(main))}
    return out


def _paired(metric: str, references: list[str], new: list[dict[str, Any]], old: list[dict[str, Any]], *,
            indices: Any) -> Any:
    if metric in new[0].get("scores", {}) and metric in old[0].get("scores", {}):
        return paired_difference([r["scores"][metric] for r in new], [r["scores"][metric] for r in old], indices=indices)
    if metric in CORPUS:
        return corpus_difference(CORPUS[metric], references, [r["output"] for r in new], [r["output"] for r in old],
                                 indices=indices)
    return None


def _change_verdict(metric: str, diff: dict[str, float] | None) -> str:
    if diff is None:
        return f"no paired comparison of {metric} is possible (not scored per example in both runs)"
    interval = f"{diff['value']:+.3f}, 95% CI {diff['low']:+.3f} to {diff['high']:+.3f}"
    if diff["low"] > 0:
        return f"better: {metric} {interval}"
    if diff["high"] < 0:
        return f"worse: {metric} {interval}"
    return f"no significant difference: {metric} {interval}"


def _interval(summary: EvalSummary, metric: str) -> dict[str, float] | None:
    """The tuned model's `metric`; a summary of honed 0.1 holds field_f1_mean under its old name field_f1."""
    metrics = summary.systems[TUNED].metrics
    old = [name for name, new in LEGACY_FIELD_METRICS.items() if new == metric]
    found = metrics.get(metric) or next((metrics[name] for name in old if name in metrics), None)
    return found.model_dump() if found else None
