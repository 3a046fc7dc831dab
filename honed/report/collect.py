"""Read one run directory into a `RunView`: everything the report shows, read only through `RunDir`.

Nothing here assumes a fixed list of systems or metrics: the page shows whatever summary.json holds
(tuned, base, few-shot-K, majority, tuned+labels, ... and any metric), so a newer `honed eval` that adds
systems or metrics needs no change here.

>>> import tempfile
>>> from honed.config import config_to_yaml, load_config
>>> with tempfile.TemporaryDirectory() as folder:  # a run train started, not evaluated yet
...     RunDir(folder).write_config(config_to_yaml(load_config(None, overrides=["lr=0.001"])))
...     view = read_run_view(folder, data_check=False)
...     view.config["lr"], [c.key for c in view.config_changes], view.verdict.startswith("Not evaluated yet")
(0.001, ['lr'], True)
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from honed.errors import HonedError
from honed.runs.rundir import DataRecord, EvalSummary, RunDir, RunRecord

NOT_EVALUATED = "Not evaluated yet: run `honed eval {path}` to compare the tuned model with the base model."


@dataclass
class ConfigChange:
    """A config field whose value in the run differs from honed's default."""

    key: str
    default: Any
    value: Any


@dataclass
class DataCheck:
    """The `honed data check` findings on the run's train (and holdout) files, or why there are none."""

    report: Any | None = None  # honed.data.report.Report
    error: str | None = None


@dataclass
class RunView:
    """One run as the report sees it. `summary` is None until `honed eval` ran."""

    run: RunDir
    record: RunRecord
    data: DataRecord
    config: dict[str, Any]  # RunDir.config_fields(): every field, as plain values
    metrics: list[dict[str, Any]]
    summary: EvalSummary | None
    rows: dict[str, list[dict[str, Any]]]  # system -> eval/<system>.jsonl rows (systems whose file exists)
    config_changes: list[ConfigChange] = field(default_factory=list)
    data_check: DataCheck = field(default_factory=DataCheck)
    curve: Any | None = None  # honed.curve.Curve when the run is a point of a learning curve (`honed curve`)
    curve_error: str | None = None  # why a curve.json next to the run could not be read

    @property
    def name(self) -> str:
        return self.record.name or self.run.name

    @property
    def verdict(self) -> str:
        if self.summary is None or not self.summary.verdict:
            return NOT_EVALUATED.format(path=self.run.path)
        return self.summary.verdict

    @property
    def systems(self) -> list[str]:
        """Evaluated systems in summary order (tuned first, as `honed eval` writes them)."""
        return list(self.summary.systems) if self.summary else []

    @property
    def duration(self) -> str | None:
        return duration_text(self.record.started_at, self.record.finished_at)

    @property
    def machine(self) -> str:
        return machine_text(self.record)


def duration_text(started: str | None, finished: str | None) -> str | None:
    """'3 min 12 s' between two ISO timestamps, or None when either is missing or unreadable.

    >>> duration_text("2026-12-01T10:00:00+00:00", "2026-12-01T11:02:03+00:00")
    '1 h 2 min 3 s'
    """
    try:
        seconds = int((datetime.fromisoformat(str(finished)) - datetime.fromisoformat(str(started))).total_seconds())
    except (TypeError, ValueError):
        return None
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if hours or minutes else "", f"{secs} s"]
    return " ".join(p for p in parts if p)


def machine_text(record: RunRecord) -> str:
    """The machine the run trained on, as run.json records it (`machine`), else where the report is made."""
    from honed.machine import machine_text as recorded

    return recorded(record.machine) or (
        f"not recorded by the run (report made on {platform.node() or 'this machine'}: "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()})")


def config_changes(config: dict[str, Any]) -> list[ConfigChange]:
    """Config fields the run set to something other than honed's default (in the run's key order).

    >>> [c.key for c in config_changes({"lr": 0.001, "seed": 0, "lora": {"r": 8}})]
    ['lr', 'lora.r']
    """
    from honed.config import TrainConfig
    from honed.config import flatten_config as flatten

    defaults = flatten(TrainConfig().model_dump(mode="json"))
    changes = []
    for key, value in flatten(config).items():
        default = defaults.get(key)
        if key in defaults and _same(default, value):
            continue
        changes.append(ConfigChange(key, default, value))
    return changes


def _same(a: Any, b: Any) -> bool:
    # YAML gives lists where the model dumps tuples ("adam_betas"), and ints where defaults are floats.
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _read_rows(run: RunDir, summary: EvalSummary | None) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for system in summary.systems if summary else []:
        if run.eval_rows_path(system).is_file():
            rows[system] = run.read_eval_rows(system)
    return rows


def read_run_view(path: str | Path, *, data_check: bool = True) -> RunView:
    """Everything the report shows about one run; `data_check` also runs `honed data check` on its files.

    A run that is not a run directory is a ConfigError; a run without an evaluation is fine (the page
    says so), and so is a run whose data files are gone (the data section says so).
    """
    run = RunDir(path).require_run()
    summary = run.read_summary() if run.has_summary() else None
    fields = run.config_fields()
    view = RunView(
        run=run, record=run.read_run(), data=run.read_data(), config=fields, metrics=run.read_metrics(),
        summary=summary, rows=_read_rows(run, summary), config_changes=config_changes(fields),
    )
    if data_check:
        view.data_check = check_run_data(run)
    view.curve, view.curve_error = _learning_curve(run)
    return view


def _learning_curve(run: RunDir) -> tuple[Any | None, str | None]:
    """(the learning curve the run is part of, None), or (None, why its curve.json cannot be read)."""
    from honed.curve import curve_of_run

    try:
        return curve_of_run(run.path), None
    except HonedError as exc:
        return None, exc.message


def check_run_data(run: RunDir) -> DataCheck:
    """`honed data check` on the files the run trained and held out on, with the run's model and length.

    The run directory stores no data check of its own, so it is measured here, the same way the command
    does; any problem (a file that is gone, rows that no longer parse) is shown instead of the findings.
    """
    from honed.data.check import run_check
    from honed.evaluate.run_eval import reading_of

    train = run.train_file()
    if train is None:
        return DataCheck(error="the training file recorded in data.json is gone; nothing to check")
    try:
        holdout = _holdout_or_none(run)
        config = run.config()
        fmt, columns = reading_of(train, config.data)
        report = run_check(str(train), holdout=str(holdout) if holdout else None, model=config.model,
                           max_length=config.max_length, fmt=fmt, columns=columns)
    except HonedError as exc:
        return DataCheck(error=exc.message)
    return DataCheck(report=report)


def _holdout_or_none(run: RunDir) -> Path | None:
    try:
        holdout = run.holdout_file()
    except HonedError:  # trained without a holdout
        return None
    return holdout if holdout.is_file() else None
