"""`honed compare`: runs side by side, from the files `honed train` and `honed eval` wrote.

    compare_runs(["runs/a", "runs/b"]) -> {
        "runs": [{name, path, model, method, data: {train: {sha256, count}, holdout: {...}}, eval: {...}}],
        "config_differences": {"lr": [0.0002, 0.0001], ...},
        "metrics": {"field_f1": {"a": {value, low, high}, "b": {...}}, ...},
        "disagreements": {"count": 17, "same_holdout": true, "examples": [{id, prompt, reference, outputs}]},
    }

Only the tuned system of each run is compared; each run's own summary keeps its baselines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from honed.errors import ConfigError
from honed.evaluate.metrics import normalize_text

TUNED = "tuned"


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"lora": {"r": 8}} -> {"lora.r": 8}.

    >>> flatten({"lora": {"r": 8}, "lr": 1e-4})
    {'lora.r': 8, 'lr': 0.0001}
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def config_differences(configs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Config keys whose values are not the same in every run (a key missing in a run reads None).

    >>> config_differences([{"lr": 1, "seed": 0}, {"lr": 2, "seed": 0}])
    {'lr': [1, 2]}
    """
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k), default=str) for f in flat}) > 1}


def _load_eval(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary_path = run_dir / "eval" / "summary.json"
    if not summary_path.is_file():
        raise ConfigError(f"{run_dir}: no evaluation yet ({summary_path} is missing); run `honed eval {run_dir}` first")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    rows_path = run_dir / "eval" / f"{TUNED}.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return summary, rows


def _run_entry(info: Any, summary: dict[str, Any]) -> dict[str, Any]:
    data = {part: {k: (info.data.get(part) or {}).get(k) for k in ("path", "sha256", "count")}
            for part in ("train", "holdout")}
    return {
        "name": info.name, "path": str(info.path), "model": info.model, "method": info.method,
        "status": info.run.get("status"), "best_checkpoint": info.run.get("best_checkpoint"),
        "data": data,
        "eval": {"holdout": summary.get("holdout"), "main_metric": summary.get("main_metric"),
                 "verdict": summary.get("verdict"), "checkpoint": summary.get("checkpoint")},
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


def _unique_names(infos: Sequence[Any]) -> list[str]:
    names = [i.name for i in infos]
    return [f"{n} ({i.path})" if names.count(n) > 1 else n for n, i in zip(names, infos)]


def compare_runs(run_dirs: Sequence[str | Path], *, limit: int = 10) -> dict[str, Any]:
    """Data versions, config differences, tuned metrics with intervals, and disagreeing examples.

    >>> report = compare_runs(["runs/a", "runs/b"])  # doctest: +SKIP
    >>> report["disagreements"]["count"]  # doctest: +SKIP
    17
    """
    from honed.runs import load_run

    if len(run_dirs) < 2:
        raise ConfigError("compare needs at least two run directories, e.g. honed compare runs/a runs/b")
    infos = [load_run(d) for d in run_dirs]
    loaded = [_load_eval(Path(d)) for d in run_dirs]
    names = _unique_names(infos)
    metric_names = list(dict.fromkeys(m for summary, _ in loaded for m in summary.get("metrics", [])))
    metrics = {
        m: {name: summary["systems"][TUNED]["metrics"].get(m) for name, (summary, _) in zip(names, loaded)}
        for m in metric_names
    }
    holdout_hashes = {(summary.get("holdout") or {}).get("sha256") for summary, _ in loaded}
    same = len(holdout_hashes) == 1 and len({summary.get("n") for summary, _ in loaded}) == 1
    disagree = disagreements(names, [rows for _, rows in loaded], limit=limit) if same else {
        "count": None, "of": None, "examples": []}
    disagree["same_holdout"] = same
    return {
        "runs": [_run_entry(info, summary) for info, (summary, _) in zip(infos, loaded)],
        "names": names,
        "config_differences": config_differences([info.config for info in infos]),
        "metrics": metrics,
        "disagreements": disagree,
    }
