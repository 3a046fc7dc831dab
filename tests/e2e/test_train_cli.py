"""`honed train` and `honed runs` through the real CLI, on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import TINY, cli

FAST = ["--set", "num_threads=1", "--set", "batch_size=4"]


@pytest.fixture
def data(tmp_path) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": f"what is {i} plus {i % 9}?"}, {"role": "assistant", "content": str(i + i % 9)}]}
        for i in range(40)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_then_runs_list_and_show(tmp_path, data):
    out = tmp_path / "run"
    result = cli("train", "--data", str(data), "--model", TINY, "--out", str(out), "--epochs", "1", *FAST, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["steps"] == 9
    assert summary["first_eval"]["holdout_loss"] > 0
    listed = cli("runs", "list", "--json")
    assert listed.exit_code == 0 and [r["name"] for r in json.loads(listed.stdout)] == ["run"]
    shown = cli("runs", "show", str(out), "--json")
    record = json.loads(shown.stdout)
    assert record["status"] == "completed" and record["config"]["epochs"] == 1
    table = cli("runs", "list")
    assert "completed" in table.stdout


def test_holdout_file_is_used_as_given(tmp_path, data):
    out = tmp_path / "with-holdout"
    result = cli("train", "--data", str(data), "--holdout", str(data), "--model", TINY, "--out", str(out),
                 "--set", "max_steps=2", *FAST)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "data.json").read_text())
    assert info["split"] is None and info["holdout"]["path"] == str(data.resolve()) and info["holdout"]["count"] == 40
    assert not (out / "data").exists()


def test_config_problems_are_listed_together(tmp_path, data):
    config = tmp_path / "run.yaml"
    config.write_text("lora:\n  r: -1\nwarmup: 0.1\n")
    result = cli("train", "--data", str(data), "--out", str(tmp_path / "x"), "--config", str(config), "--lr", "5")
    assert result.exit_code == 2
    for field in ("lora.r:", "warmup: unknown field", "lr:"):
        assert field in result.output
    assert "Traceback" not in result.output


def test_no_supervised_tokens_exits_2(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"topic {i}: " + f"w{i} " * 100}, {"role": "assistant", "content": "ok"}]}
            for i in range(6)]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("train", "--data", str(path), "--model", TINY, "--out", str(tmp_path / "y"), "--max-length", "32",
                 "--set", "micro_batch_tokens=64", *FAST)
    assert result.exit_code == 2
    assert "no example has a supervised token" in result.output and "--max-length" in result.output


def _honed(*args: str) -> list[str]:
    return [sys.executable, "-c", "from honed.cli import app; app()", *args]


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _saved_steps(run_dir: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*")]


def test_sigkill_then_resume_reaches_the_same_losses(tmp_path, data):
    common = ["--data", str(data), "--model", TINY, "--epochs", "3", "--set", "num_threads=1",
              "--set", "batch_size=2", "--set", "save_every=3", "--set", "eval_every=9", "--set", "lora.dropout=0.1"]
    straight = tmp_path / "straight"
    subprocess.run(_honed("train", *common, "--out", str(straight)), check=True, capture_output=True)
    expected = _losses(straight)
    assert len(expected) == 54

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_honed("train", *common, "--out", str(killed)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and max(_saved_steps(killed), default=0) < 6:
        time.sleep(0.005)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    assert not (killed / "final").exists()

    resumed = subprocess.run(_honed("train", "--out", str(killed), "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoints/step-0000" in resumed.stdout
    got = _losses(killed)
    assert got.keys() == expected.keys()
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, abs=1e-5), step
    assert json.loads((killed / "run.json").read_text())["status"] == "completed"


def test_csv_with_a_column_mapping_and_skipped_invalid_rows(tmp_path):
    csv = tmp_path / "intents.csv"
    csv.write_text("text,category\n" + "".join(f"card {i} was declined,card_declined_{i % 3}\n" for i in range(20)))
    out = tmp_path / "csv-run"
    result = cli("train", "--data", str(csv), "--model", TINY, "--out", str(out), "--set", "max_steps=2",
                 "--set", "data.prompt_col=text", "--set", "data.response_col=category", *FAST)
    assert result.exit_code == 0, result.output

    jsonl = tmp_path / "some-bad.jsonl"
    good = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]})
            for i in range(12)]
    jsonl.write_text("\n".join(good[:5] + ["{not json"] + good[5:]) + "\n")
    refused = cli("train", "--data", str(jsonl), "--model", TINY, "--out", str(tmp_path / "bad"), *FAST)
    assert refused.exit_code == 2 and "some-bad.jsonl:6" in refused.output
    skipped = cli("train", "--data", str(jsonl), "--model", TINY, "--out", str(tmp_path / "skip"), "--skip-invalid",
                  "--set", "max_steps=2", *FAST)
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 invalid row(s)" in skipped.output


def test_threads_flag_sets_torch_threads_for_the_run(tmp_path, data):
    import torch

    before = torch.get_num_threads()
    try:
        result = cli("train", "--data", str(data), "--model", TINY, "--out", str(tmp_path / "t"), "--threads", "1",
                     "--max-steps", "1", "--set", "batch_size=4", "--no-report")
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1  # the loop applied --threads (the rule would use every usable core)
        assert "num_threads: 1" in (tmp_path / "t" / "config.yaml").read_text()
    finally:
        torch.set_num_threads(before)
