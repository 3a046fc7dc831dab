"""Rich tables for `honed eval` and `honed compare` (printing only; the numbers come from summary.json)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from honed.runs.rundir import EvalSummary, Interval


def _cell(interval: Interval | dict[str, float] | None) -> str:
    if not interval:
        return "-"
    value = interval if isinstance(interval, Interval) else Interval.model_validate(interval)
    return f"{value.value:.3f} [{value.low:.3f}, {value.high:.3f}]"


def _diff_cell(interval: Interval) -> str:
    mark = " *" if interval.low > 0 or interval.high < 0 else ""
    return f"{interval.value:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]{mark}"


def eval_table(summary: EvalSummary) -> Table:
    """Metrics x systems (value [95% CI]), then the memorised share and generation tokens/s."""
    systems = summary.systems
    title = f"{summary.n} holdout examples; main metric {summary.main_metric}; value [95% CI]"
    nonempty = (summary.model_extra or {}).get("nonempty_n")
    if nonempty:
        title += f"; nonempty/ = on the {nonempty} references that are not empty"
    table = Table(title=title)
    table.add_column("metric")
    for system in systems:
        table.add_column(system, justify="right")
    for name in summary.metrics:
        table.add_row(name, *[_cell(data.metrics.get(name)) for data in systems.values()])
    table.add_row("unfinished", *[str(data.unfinished) for data in systems.values()])
    table.add_row("memorised", *[f"{data.memorised:.1%}" for data in systems.values()])
    table.add_row("tokens/s", *[f"{data.generation.get('tokens_per_s', 0):.0f}" for data in systems.values()])
    return table


def differences_table(summary: EvalSummary) -> Table:
    """tuned - baseline per metric with the paired 95% CI; * marks an interval that excludes 0."""
    table = Table(title="paired differences, value [95% CI] (* = significant)")
    table.add_column("metric")
    for label in summary.differences:
        table.add_column(label, justify="right")
    for name in summary.metrics:
        table.add_row(name, *[_diff_cell(diffs[name]) for diffs in summary.differences.values()])
    return table


def compare_tables(report: dict[str, Any]) -> list[Any]:
    """Runs (data hashes), config differences, metrics with intervals, and disagreeing examples (tables or lines)."""
    names = report["names"]
    runs = Table(title="runs")
    for column in ("run", "model", "method", "train sha256 (count)", "holdout sha256 (count)", "eval holdout"):
        runs.add_column(column)
    for name, run in zip(names, report["runs"]):
        train, hold = run["data"]["train"], run["data"]["holdout"]
        eval_hold = (run["eval"]["holdout"] or {})
        runs.add_row(name, str(run["model"]), str(run["method"]),
                     f"{str(train['sha256'])[:12]} ({train['count']})", f"{str(hold['sha256'])[:12]} ({hold['count']})",
                     f"{str(eval_hold.get('sha256'))[:12]} ({eval_hold.get('count')})")
    config = Table(title="config differences")
    config.add_column("key")
    for name in names:
        config.add_column(name)
    for key, values in report["config_differences"].items():
        config.add_row(key, *[str(v) for v in values])
    metrics = Table(title="tuned model, value [95% CI]")
    metrics.add_column("metric")
    for name in names:
        metrics.add_column(name, justify="right")
    for metric, by_run in report["metrics"].items():
        metrics.add_row(metric, *[_cell(by_run.get(name)) for name in names])
    tables: list[Any] = [runs, config if report["config_differences"] else "config: identical", metrics]
    disagree = report["disagreements"]
    if not disagree["same_holdout"]:
        tables.append("the runs were evaluated on different holdouts: no example-by-example comparison")
    elif not disagree["count"]:
        tables.append(f"the runs agree on all {disagree['of']} holdout examples")
    else:
        examples = Table(title=f"examples where the runs disagree: {disagree['count']} of {disagree['of']}")
        examples.add_column("id")
        examples.add_column("prompt")
        examples.add_column("reference")
        for name in names:
            examples.add_column(name)
        for ex in disagree["examples"]:
            examples.add_row(str(ex["id"]), ex["prompt"], ex["reference"], *[ex["outputs"][n] for n in names])
        tables.append(examples)
    for label, change in report.get("changes", {}).items():
        table = Table(title=f"{label}: paired differences on the same holdout, value [95% CI] (* = significant)")
        table.add_column("metric")
        table.add_column("difference", justify="right")
        for metric, diff in change["differences"].items():
            table.add_row(metric, _diff_cell(Interval.model_validate(diff)))
        tables += [table, f"{label}: {change['verdict']}"]
    return tables


def curve_table(curve: Any, *, this_run: str | None = None) -> Table:
    """A learning curve (honed.curve.Curve): one row per data share, the main metric [95% CI]; `this_run`'s
    row marked (the run `honed eval` just evaluated)."""
    from pathlib import Path

    holdout = Path(*Path(curve.holdout).parts[-3:])  # OUT/data/holdout.jsonl: the one holdout of every point
    table = Table(title=f"learning curve: {curve.main_metric} on {holdout}, value [95% CI]")
    for column in ("share", "examples", curve.main_metric, "holdout loss", "run"):
        table.add_column(column)
    mine = curve.point_of(this_run) if this_run is not None else None
    for p in curve.points:
        loss = f"{p.holdout_loss:.4f}" if p.holdout_loss is not None else "-"
        table.add_row(f"{p.fraction:.0%}", str(p.examples), _cell(p.metric), loss,
                      p.run + ("  <- this run" if p is mine else ""))
    return table
