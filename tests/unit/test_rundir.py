"""The run-directory contract (honed.runs.rundir): typed records, old run directories, damaged files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from honed.atomic import atomic_folder, write_json_atomic
from honed.config import TrainConfig, config_to_yaml, load_config
from honed.errors import ConfigError
from honed.evaluate.compare import compare_runs
from honed.runs.rundir import DataRecord, EvalSummary, RunDir, RunRecord, checkpoint_name

V1 = Path(__file__).parents[1] / "assets" / "run-v1"  # written by honed 0.1 (no schema_version)


def test_a_run_directory_from_before_schema_versions_still_loads():
    run = RunDir(V1)
    record, data, summary = run.read_run(), run.read_data(), run.read_summary()
    assert record.schema_version == data.schema_version == summary.schema_version == 1
    assert record.status == "completed" and record.best_checkpoint == "checkpoints/step-000004"
    assert record.best["step"] == 4 and record.first_eval["holdout_loss"] > record.best["holdout_loss"]
    assert data.train.count == 6 and data.holdout.count == 2 and data.split.holdout_fraction == 0.25
    assert summary.main_metric == "label_accuracy" and set(summary.systems) == {"tuned", "base"}
    assert summary.systems["tuned"].metrics["exact_match"].high >= summary.systems["tuned"].metrics["exact_match"].low
    assert summary.differences["tuned - base"]["label_accuracy"].value == 0.0
    assert len(run.read_eval_rows("tuned")) == 2 and len(run.read_metrics()) >= 4
    assert record.machine is None  # recorded since train's `machine` field; older runs have none


def test_a_v1_summary_round_trips_to_the_same_json_plus_a_version():
    original = json.loads((V1 / "eval" / "summary.json").read_text())
    again = RunDir(V1).read_summary().to_json()
    assert again.pop("schema_version") == 1
    assert again == original


def test_old_runs_compare_with_each_other(tmp_path):
    for name in ("a", "b"):
        shutil.copytree(V1, tmp_path / name)
    report = compare_runs([tmp_path / "a", tmp_path / "b"])
    assert report["disagreements"]["same_holdout"] and report["disagreements"]["count"] == 0
    assert report["runs"][0]["data"]["train"]["count"] == 6


def test_records_write_and_read_back(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_run(RunRecord(name="r", status="running", model="m"))
    run.write_data(DataRecord())
    assert run.read_run().status == "running" and run.read_run().schema_version == 2
    assert json.loads(run.run_json.read_text())["schema_version"] == 2
    assert run.read_data().train is None


def test_a_missing_run_json_reads_as_unknown(tmp_path):
    assert RunDir(tmp_path).read_run().status == "unknown"


@pytest.mark.parametrize("text", ["{\"name\": \"x\", \"stat", "[1, 2]", "{\"name\": \"x\", \"status\": \"flying\"}"])
def test_a_damaged_run_json_is_one_clear_error(tmp_path, text):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(ConfigError, match="run.json"):
        RunDir(tmp_path).read_run()


def test_the_config_is_the_typed_train_config_read_once():
    run = RunDir(V1)
    config = run.config()
    assert isinstance(config, TrainConfig) and config.lr == 0.0002 and config.data.holdout_fraction == 0.25
    assert run.base_model() == config.model == "/tmp/wt-old/tests/assets/tiny-llama"
    assert run.config() is config  # validated once per RunDir
    fields = run.config_fields()
    assert fields["lora"]["r"] == 16 and fields["adam_betas"] == [0.9, 0.999]
    assert fields["tracking"] == [] and fields["data"]["strict"] is False  # fields v1 never wrote read as defaults


def test_writing_the_config_replaces_the_one_read(tmp_path):
    run = RunDir(tmp_path)
    run.write_config(config_to_yaml(load_config(None, overrides=["lr=0.001"])))
    assert run.config().lr == 0.001
    run.write_config(config_to_yaml(load_config(None, overrides=["lr=0.002", "model=other"])))
    assert run.config().lr == 0.002 and run.base_model() == "other"


@pytest.mark.parametrize("text, match", [
    ("- 1\n- 2\n", "should be a mapping"),
    ("model: [unclosed\n", "not valid YAML"),
    ("model: m\nlearning_rate: 0.1\nlora:\n  r: 0\n", "2 problem"),
])
def test_a_damaged_config_yaml_is_one_config_error_naming_it(tmp_path, text, match):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match) as caught:
        RunDir(tmp_path).config()
    assert str(tmp_path / "config.yaml") in caught.value.message
    if match == "2 problem":  # every problem listed, by field
        assert sorted(d.split(":")[0] for d in caught.value.details) == ["learning_rate", "lora.r"]


def test_checkpoints_are_listed_in_step_order_and_temp_folders_never(tmp_path):
    run = RunDir(tmp_path)
    for step in (10, 2, 100):
        run.checkpoint(step).mkdir(parents=True)
    (run.checkpoints / ".tmp-step-000200-x").mkdir()
    assert [p.name for p in run.checkpoint_dirs()] == [checkpoint_name(s) for s in (2, 10, 100)]
    assert run.latest_checkpoint().name == "step-000100"


def test_summary_requires_an_evaluation(tmp_path):
    with pytest.raises(ConfigError, match="honed eval"):
        RunDir(tmp_path).read_summary()


def test_atomic_folder_leaves_nothing_on_error_and_replaces_whole_on_success(tmp_path):
    target = tmp_path / "final"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"] and (target / "old.txt").is_file()
    with atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_write_json_atomic_keeps_unicode(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"k": "é"})
    assert "é" in (tmp_path / "x.json").read_text(encoding="utf-8")


def test_eval_summary_keeps_unknown_fields():
    summary = EvalSummary.model_validate({"n": 1, "main_metric": "m", "metrics": ["m"], "systems": {}, "extra": 3})
    assert summary.to_json()["extra"] == 3


def test_a_second_writer_is_refused_with_the_owner_and_the_lock_dies_with_its_process(tmp_path):
    from tests.helpers import lock_held_elsewhere

    run = RunDir(tmp_path / "r")
    with run.lock("train"):
        with pytest.raises(ConfigError, match=r"in use: honed train, pid \d+"):
            run.lock("export").acquire()
    run.write_run(RunRecord(name="r", status="running"))
    with lock_held_elsewhere(run.path) as holder:
        assert run.status() == "running"
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
            run.lock("train").acquire()
    assert run.status() == "stale"  # killed: the kernel dropped the lock
    with run.lock("train"):  # and the run can be taken over
        pass
