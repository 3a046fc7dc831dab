"""Experiment trackers: MLflow, TensorBoard, Weights & Biases, all offline-capable, all optional extras.

`--set tracking=mlflow` (or `tracking=[mlflow,tensorboard]`, or `tracking=mlflow,wandb`) in a training
config makes `honed train` and `honed eval` replay the finished run directory into each tracker:

    stage "train": the config, every line of metrics.jsonl (by step), the report as an artifact
    stage "eval":  every system's metrics with their 95% interval bounds, summary.json and the report

Where the numbers go (nothing leaves the machine unless you point a tracker elsewhere):
- mlflow: $MLFLOW_TRACKING_URI, else ./mlruns/ (SQLite mlflow.db + artifacts/; MLflow's own file store is
  in maintenance mode and refuses to start without an opt-out), experiment $MLFLOW_EXPERIMENT_NAME or
  "honed"; one MLflow run per run directory (tag honed.run_dir), reused by later stages;
- tensorboard: event files in RUN_DIR/tensorboard/ (torch.utils.tensorboard), the report copied beside;
- wandb: offline mode unless $WANDB_MODE says otherwise (`wandb sync` uploads later), project
  $WANDB_PROJECT or "honed", one W&B run per run directory (a stable id from its path).

A tracker is anything with the four methods of `Tracker`; live logging from the training loop calls
`log_metrics(step, record)` with each metrics.jsonl record as it is written.

Usage: `export_run("runs/demo", ["mlflow"], stage="train")` (each tracker is an optional extra:
tests/unit/test_report_trackers.py replays a trained run into each one installed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from honed.config import flatten_config
from honed.errors import ConfigError
from honed.runs.rundir import RunDir

TRACKERS = ("mlflow", "tensorboard", "wandb")
PACKAGES = {"mlflow": "mlflow", "tensorboard": "tensorboard", "wandb": "wandb"}  # tracker -> module to import
INSTALL = {"mlflow": "mlflow-skinny sqlalchemy alembic", "tensorboard": "tensorboard", "wandb": "wandb"}
Stage = Literal["train", "eval", "all"]


class Tracker(Protocol):
    """Where a run's numbers go. Methods are called in order: config, metrics, artifacts, close."""

    def log_config(self, config: dict[str, Any]) -> None: ...

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...

    def log_artifact(self, path: Path) -> None: ...

    def close(self) -> None: ...


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics.jsonl record, without `step` (booleans are not numbers here).

    >>> numbers({"step": 3, "loss": 1.5, "note": "x", "stopped": True})
    {'loss': 1.5}
    """
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def require_installed(names: Sequence[str], *, option: str = "tracking") -> None:
    """A ConfigError naming the pip command when a chosen tracker is unknown or its package not installed.

    >>> require_installed(["neptune"], option="--track")
    Traceback (most recent call last):
    honed.errors.ConfigError: --track: unknown tracker neptune; use one or more of mlflow, tensorboard, wandb
    """
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"{option}: unknown tracker {', '.join(unknown)}; use one or more of {', '.join(TRACKERS)}")
    missing = [n for n in names if importlib.util.find_spec(PACKAGES[n]) is None]
    if missing:
        command = " ".join(INSTALL[n] for n in missing)
        extras = ",".join(missing)
        raise ConfigError(f"{option}: {', '.join(missing)} is not installed; run `pip install {command}` "
                          f"(or `pip install 'honed[{extras}]'`), or leave it out")


# ---- MLflow ------------------------------------------------------------------------------------------------


def mlflow_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store in ./mlruns/ (MLflow's recommended local backend)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path.cwd() / 'mlruns' / 'mlflow.db').as_posix()}"


class MLflowTracker:
    """One MLflow run per run directory, found again by its `honed.run_dir` tag."""

    def __init__(self, run: RunDir) -> None:
        from mlflow.tracking import MlflowClient

        uri = mlflow_uri()
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=uri)
        self.path = str(run.path.resolve())
        self.run_id, self.new = self._find_or_create(run.name, os.environ.get("MLFLOW_EXPERIMENT_NAME", "honed"), uri)
        self.pending: list[Any] = []

    def _find_or_create(self, name: str, experiment: str, uri: str) -> tuple[str, bool]:
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            artifacts = None
            if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the working folder
                artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
            experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
        quoted = self.path.replace("\\", "\\\\").replace("'", "\\'")
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.`honed.run_dir` = '{quoted}'",
                                       max_results=1)
        if runs:
            return runs[0].info.run_id, False
        created = self.client.create_run(experiment_id, run_name=name, tags={"honed.run_dir": self.path})
        return created.info.run_id, True

    def log_config(self, config: dict[str, Any]) -> None:
        if not self.new:  # MLflow parameters cannot change once logged; the run directory's config does not
            return
        from mlflow.entities import Param

        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in flatten_config(config).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start: start + 100])

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.pending += [Metric(k, v, stamp, step) for k, v in metrics.items()]
        if len(self.pending) >= 1000:
            self._flush()

    def _flush(self) -> None:
        for start in range(0, len(self.pending), 1000):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, metrics=self.pending[start: start + 1000])
        self.pending = []

    def log_artifact(self, path: Path) -> None:
        self._flush()
        self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self._flush()
        self.client.set_terminated(self.run_id, "FINISHED")


# ---- TensorBoard -------------------------------------------------------------------------------------------


class TensorBoardTracker:
    """Event files in RUN_DIR/tensorboard/, written with torch's SummaryWriter."""

    def __init__(self, run: RunDir) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = run.tensorboard_dir
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def log_config(self, config: dict[str, Any]) -> None:
        lines = "\n".join(f"    {k}: {v}" for k, v in flatten_config(config).items())
        self.writer.add_text("config", lines)  # indented: TensorBoard renders text as Markdown

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)

    def log_artifact(self, path: Path) -> None:
        # TensorBoard has no artifact store: the file travels with the event files instead.
        if path.resolve().parent != self.folder.resolve():
            shutil.copy2(path, self.folder / path.name)
        self.writer.add_text("artifacts", f"{path.name}: {self.folder / path.name}")

    def close(self) -> None:
        self.writer.close()


# ---- Weights & Biases --------------------------------------------------------------------------------------


class WandbTracker:
    """A W&B run in offline mode (unless $WANDB_MODE says otherwise), resumed by an id made from the path."""

    def __init__(self, run: RunDir) -> None:
        import wandb

        run_id = hashlib.sha256(str(run.path.resolve()).encode()).hexdigest()[:16]
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "honed"), name=run.name, id=run_id,
                              resume="allow", mode=os.environ.get("WANDB_MODE", "offline"), dir=str(run.path))

    def log_config(self, config: dict[str, Any]) -> None:
        self.run.config.update(flatten_config(config), allow_val_change=True)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def log_artifact(self, path: Path) -> None:
        artifact = self.wandb.Artifact(f"{self.run.id}-{path.stem}".replace(".", "-"), type="report")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self) -> None:
        self.run.finish()


OPENERS = {"mlflow": MLflowTracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker}


def open_trackers(names: Sequence[str], run: RunDir) -> list[Tracker]:
    """One tracker per name, each pointed at `run` (a ConfigError when one is unknown or not installed)."""
    require_installed(names)
    return [OPENERS[name](run) for name in dict.fromkeys(names)]


# ---- replaying a run directory -----------------------------------------------------------------------------


def eval_metrics(run: RunDir) -> dict[str, float]:
    """`eval/<system>/<metric>` (and `_low`, `_high`) for every system and metric in summary.json."""
    summary = run.read_summary()
    out: dict[str, float] = {}
    for system, data in summary.systems.items():
        for metric, interval in data.metrics.items():
            key = f"eval/{system}/{metric}"
            out.update({key: interval.value, f"{key}_low": interval.low, f"{key}_high": interval.high})
    return out


def replay(run: RunDir, trackers: Sequence[Tracker], *, stage: Stage = "all", report: Path | None = None) -> None:
    """Send what `stage` produced in `run` to every tracker (see the module docstring), then close them."""
    try:
        if stage in ("train", "all"):
            for tracker in trackers:
                tracker.log_config(run.config_fields())
            for record in run.read_metrics():
                if isinstance(record.get("step"), int):
                    for tracker in trackers:
                        tracker.log_metrics(record["step"], numbers(record))
        if stage in ("eval", "all") and run.has_summary():
            step = run.read_run().steps or 0
            values = eval_metrics(run)
            for tracker in trackers:
                tracker.log_metrics(step, values)
                tracker.log_artifact(run.summary_json)
        if report is not None and report.is_file():
            for tracker in trackers:
                tracker.log_artifact(report)
    finally:
        for tracker in trackers:
            tracker.close()


def export_run(
    run_dir: str | Path, names: Sequence[str], *, stage: Stage = "all", report: Path | None = None
) -> list[str]:
    """Replay a run directory into the named trackers; returns where each one wrote, for the user.

    Usage: `export_run("runs/demo", ["tensorboard"], stage="all")` returns
    `['tensorboard: runs/demo/tensorboard']` (tests/unit/test_report_trackers.py).
    """
    if not names:
        return []
    run = RunDir(run_dir).require_run()
    replay(run, open_trackers(names, run), stage=stage, report=report)
    where = {"mlflow": f"mlflow: {mlflow_uri()}", "tensorboard": f"tensorboard: {run.tensorboard_dir}",
             "wandb": f"wandb ({os.environ.get('WANDB_MODE', 'offline')}): {run.path / 'wandb'}"}
    return [where[name] for name in dict.fromkeys(names)]
