"""Trackers get a run's config, per-step metrics, eval metrics and report; read back from their own files.

MLflow and TensorBoard are installed with the test extra; a tracker whose package is missing is skipped.
"""

from __future__ import annotations

import importlib.util

import pytest
from test_report_render import make_run  # the same hand-made run directory as the render tests

from honed.errors import ConfigError
from honed.report.render import render_report
from honed.report.trackers import export_run, require_installed

STEPS = list(range(0, 7))


def test_mlflow_local_store_holds_config_steps_eval_and_report(tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'honed[mlflow]')")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = make_run(tmp_path / "r")
    report = render_report([run.path], data_check=False)
    assert export_run(run.path, ["mlflow"], stage="train", report=report) == [
        f"mlflow: sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"]
    export_run(run.path, ["mlflow"], stage="eval", report=report)  # the same MLflow run is reused
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("honed")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.data.params["lr"] == "0.0002" and found.data.params["lora.r"] == "8"
    assert found.data.tags["honed.run_dir"] == str(run.path.resolve())
    loss = client.get_metric_history(found.info.run_id, "loss")
    assert [m.step for m in loss] == STEPS[1:] and loss[0].value == pytest.approx(2.7)
    assert [m.step for m in client.get_metric_history(found.info.run_id, "holdout_loss")] == [0, 2, 4, 6]
    tuned = run.read_summary().systems["tuned"].metrics["label_accuracy"]
    assert found.data.metrics["eval/tuned/label_accuracy"] == pytest.approx(tuned.value)
    assert found.data.metrics["eval/majority/label_f1_weighted_high"] > 0
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"report.html", "summary.json"} <= artifacts
    assert (tmp_path / "mlruns" / "artifacts").is_dir()


def test_tensorboard_event_files_hold_the_metrics(tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'honed[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = make_run(tmp_path / "r")
    report = render_report([run.path], data_check=False)
    assert export_run(run.path, ["tensorboard"], stage="all", report=report) == [f"tensorboard: {run.tensorboard_dir}"]
    events = EventAccumulator(str(run.tensorboard_dir))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"loss", "lr", "holdout_loss", "tokens_per_s", "eval/base/macro_f1"} <= set(scalars)
    assert [e.step for e in events.Scalars("loss")] == STEPS[1:]
    assert events.Scalars("eval/base/macro_f1")[0].step == 6
    assert (run.tensorboard_dir / "report.html").read_text() == report.read_text()


def test_wandb_offline_run(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'honed[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = make_run(tmp_path / "r")
    export_run(run.path, ["wandb"], stage="all")
    assert list((run.path / "wandb").glob("offline-run-*"))


def test_unknown_or_missing_trackers_are_one_clear_message() -> None:
    with pytest.raises(ConfigError, match="unknown tracker neptune; use one or more of mlflow, tensorboard, wandb"):
        require_installed(["mlflow", "neptune"])
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match=r"wandb is not installed; run `pip install wandb`"):
            require_installed(["wandb"])
