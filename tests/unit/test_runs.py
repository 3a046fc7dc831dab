"""Run directories (honed.runs.rundir), loading a trained model, and the SQLite registry."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from honed.config import load_config
from honed.errors import ConfigError, HonedError
from honed.model.run import load_run_model
from honed.runs.registry import get_run, list_runs, registry_path
from honed.runs.rundir import RunDir
from honed.train.loop import train

from tests.helpers import TINY


@pytest.fixture
def data(tmp_path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": f"{i}!"}]} for i in range(16)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_run(tmp_path: Path, data: Path, name: str, *overrides: str):
    base = [f"model={TINY}", f"data.train={data}", "batch_size=4", "epochs=1", "lr=0.01", "num_threads=1"]
    config = load_config(None, overrides=base + list(overrides))
    return train(config, out=tmp_path / name, console=Console(file=io.StringIO()))


def test_load_trained_model_applies_the_adapter(tmp_path, data):
    result = make_run(tmp_path, data, "lora", "lora.dropout=0")
    model, tokenizer = load_run_model(RunDir(result.run_dir), checkpoint="best")
    from honed.model.loading import load_model

    ids = torch.tensor([tokenizer("<|im_start|>user\nsay 3<|im_end|>\n")["input_ids"]])
    with torch.no_grad():
        tuned = model(ids).logits
        plain = load_model(TINY)(ids).logits
    assert not model.training and not hasattr(model, "peft_config")  # merged for inference
    assert not torch.allclose(tuned, plain)


def test_load_trained_model_full_and_checkpoint_names(tmp_path, data):
    result = make_run(tmp_path, data, "full", "method=full", "save_every=1", "keep_last=10")
    run = RunDir(result.run_dir)
    model, _ = load_run_model(run, checkpoint="checkpoints/step-000002")
    assert model.config.vocab_size == 427
    assert run.resolve_checkpoint("final") == result.run_dir / "final"
    assert run.resolve_checkpoint("last").name == "step-000004"
    with pytest.raises(HonedError, match="no weights"):
        run.resolve_checkpoint("checkpoints/step-000099")
    with pytest.raises(ConfigError, match="must be inside"):
        run.resolve_checkpoint("../../etc")


def test_load_run_reads_the_contract_files(tmp_path, data):
    result = make_run(tmp_path, data, "info")
    run = RunDir(result.run_dir)
    record, config, data_record = run.read_run(), run.config(), run.read_data()
    assert record.status == "completed" and config.model == run.base_model() == str(Path(TINY).resolve())
    assert config.lr == 0.01 and config.epochs == 1 and config.data.train == str(data.resolve())
    assert run.config_fields()["lora"] == config.lora.model_dump()  # the raw fields, for compare and trackers
    assert data_record.train.count + data_record.holdout.count == 16
    assert record.schema_version == data_record.schema_version == 2
    with pytest.raises(ConfigError, match="not a honed run directory"):
        RunDir(tmp_path).config()


def test_registry_records_every_run(tmp_path, data):
    make_run(tmp_path, data, "first")
    make_run(tmp_path, data, "second", "method=full")
    assert registry_path() == tmp_path / "home" / "runs.db"
    runs = list_runs()
    assert {r["name"] for r in runs} == {"first", "second"}
    second = get_run("second")
    assert second["status"] == "completed" and second["method"] == "full"
    assert second["config"]["method"] == "full" and len(second["data"]["train"]["sha256"]) == 64
    assert "holdout_loss" in second["best"]
    assert get_run(str(tmp_path / "first"))["name"] == "first"
    with pytest.raises(HonedError, match="no run named"):
        get_run("third")


def test_from_run_continues_from_the_parents_weights_mixes_old_data_and_records_lineage(tmp_path, data):
    from typer.testing import CliRunner

    from honed.cli import app

    parent = make_run(tmp_path, data, "v1", "lora.dropout=0")
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"new {i}"},
                                                      {"role": "assistant", "content": f"{i}?"}]}) + "\n" for i in range(8)))
    args = ["train", "--from-run", str(parent.run_dir), "--data", str(more), "--mix-old", "0.5",
            "--out", str(tmp_path / "v2"), "--max-steps", "1", "--set", "num_threads=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    child = RunDir(tmp_path / "v2")
    config, data_record = child.config(), child.read_data()
    assert child.read_run().parent == str(parent.run_dir.resolve())
    assert config.init_from.endswith("checkpoints/step-000004") and config.lr == 0.01  # inherited
    assert config.parent_run == str(parent.run_dir.resolve()) and config.data.train == str(more.resolve())
    assert data_record.mixed.count == 4 and data_record.train.count == 12  # 8 new + 4 of the parent's
    assert data_record.holdout.path == str((parent.run_dir / "data" / "holdout.jsonl").resolve())  # same holdout
    listed = CliRunner().invoke(app, ["runs", "list"])
    assert "v1" in listed.output.split("v2", 1)[1]  # v2's row names its parent
    before_training = [json.loads(line) for line in child.metrics_jsonl.read_text().splitlines()][0]
    assert before_training["holdout_loss"] == pytest.approx(parent.best["holdout_loss"], rel=1e-5)  # parent's weights


def test_a_continuation_that_makes_the_holdout_worse_keeps_the_parents_weights_as_best(tmp_path, data):
    # Step 0 of a --from-run continuation (the parent's weights) is a best-checkpoint candidate: trained
    # hard on answers that contradict the parent's holdout, the run's best is step 0 and final/ the parent's.
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from honed.cli import app

    parent = make_run(tmp_path, data, "v1", "lora.dropout=0")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"say {i}"},
                                                       {"role": "assistant", "content": f"no {i * 3}"}]}) + "\n" for i in range(8)))
    args = ["train", "--from-run", str(parent.run_dir), "--data", str(wrong), "--out", str(tmp_path / "v2"),
            "--max-steps", "2", "--lr", "0.2", "--set", "eval_every=1", "--set", "num_threads=1", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    child = json.loads(result.stdout)
    assert child["last_eval"]["holdout_loss"] > child["first_eval"]["holdout_loss"]  # the continuation hurt
    assert child["best"] == {"step": 0, **child["first_eval"]}
    assert child["best_checkpoint"] == "checkpoints/step-000000"
    run = RunDir(tmp_path / "v2")
    assert run.resolve_checkpoint("best") == run.checkpoint(0)
    parents = load_file(str(RunDir(parent.run_dir).resolve_checkpoint("best") / "adapter_model.safetensors"))
    final = load_file(str(run.final / "adapter_model.safetensors"))
    assert final.keys() == parents.keys() and all(torch.equal(final[k], parents[k]) for k in final)


def test_from_run_refuses_an_unfinished_parent_and_mix_old_alone(tmp_path, data):
    from typer.testing import CliRunner

    from honed.cli import app

    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("model: x\n")
    result = CliRunner().invoke(app, ["train", "--from-run", str(tmp_path / "half"), "--data", str(data),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "never finished" in result.output
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--mix-old", "0.5", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--from-run" in result.output


def test_runs_list_marks_killed_and_deleted_runs(tmp_path, data):
    import shutil

    from honed.runs.registry import record_run

    gone = make_run(tmp_path, data, "gone")
    shutil.rmtree(gone.run_dir)
    killed = RunDir(tmp_path / "killed")
    shutil.copytree(make_run(tmp_path, data, "tmp").run_dir, killed.path)
    killed.write_run(killed.read_run().model_copy(update={"status": "running", "name": "killed"}))
    record_run(killed)
    statuses = {r["name"]: r["status"] for r in list_runs()}
    assert statuses["gone"] == "missing" and statuses["killed"] == "stale" and statuses["tmp"] == "completed"
