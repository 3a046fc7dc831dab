"""`honed train --nproc N`: torchrun launch, gloo on CPU, same loss curve as one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from honed.errors import ConfigError
from honed.train import distributed

from tests.helpers import TINY

ROOT = Path(__file__).parents[2]


def write_data(path: Path, n: int = 36) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": f"what is {i} plus {i % 9}?"}, {"role": "assistant", "content": str(i + i % 9)}]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def honed_train(tmp_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh process (torchrun needs a real command line to re-run)."""
    data = tmp_path / "train.jsonl"
    if not data.exists():
        write_data(data)
    command = [
        sys.executable, "-m", "honed", "train", "--data", str(data), "--holdout", str(data), "--model", TINY,
        "--out", str(tmp_path / name), "--epochs", "1",
        # 7 examples a step over 36 examples: the last step has 1, so one rank gets none and must still
        # take part in the collectives. No dropout: its random masks differ with the number of processes.
        "--set", "batch_size=7", "--set", "lora.dropout=0", "--set", "num_threads=1",
        "--set", "eval_every=3", "--set", "data.eval_max_examples=8", *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)


def curve(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process(tmp_path):
    one = honed_train(tmp_path, "one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = honed_train(tmp_path, "two", "--nproc", "2")
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    a, b = curve(tmp_path / "one"), curve(tmp_path / "two")
    # rank 0 alone writes: one line per step (plus the step-0 eval), not one per rank
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(7))
    for x, y in zip(a, b):
        assert x.get("supervised_tokens") == y.get("supervised_tokens")
        for key in ("loss", "holdout_loss", "grad_norm"):
            if key in x:
                assert abs(x[key] - y[key]) < 1e-5, (x["step"], key, x[key], y[key])
    assert a[-1]["loss"] != a[1]["loss"]  # the curve moved: the comparison is not between two constants
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["status"] == "completed"
    assert (tmp_path / "two" / "final" / "adapter_model.safetensors").is_file()
    assert "Traceback" not in two.stderr


def test_a_holdout_smaller_than_the_process_count_does_not_hang(tmp_path):
    # One holdout example over two ranks: rank 1's share is empty, yet it must join the evaluation's
    # collectives (it used to skip evaluating, and the ranks waited on each other forever).
    tiny_holdout = ("--set", "data.eval_max_examples=1", "--max-steps", "3")
    one = honed_train(tmp_path, "one", *tiny_holdout)
    assert one.returncode == 0, one.stderr[-2000:]
    two = honed_train(tmp_path, "two", *tiny_holdout, "--nproc", "2")
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    a, b = curve(tmp_path / "one"), curve(tmp_path / "two")
    assert [r["step"] for r in b] == [0, 1, 2, 3]
    for x, y in zip(a, b):
        if "holdout_loss" in x:
            assert abs(x["holdout_loss"] - y["holdout_loss"]) < 1e-5


def test_fsdp2_full_fine_tuning_on_two_gloo_processes_matches_one_process(tmp_path):
    full = ["--method", "full", "--lr", "1e-3", "--set", "max_steps=3"]
    one = honed_train(tmp_path, "one", *full)
    assert one.returncode == 0, one.stderr[-2000:]
    two = honed_train(tmp_path, "two", *full, "--set", "sharding=fsdp", "--nproc", "2")
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    a, b = curve(tmp_path / "one"), curve(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 1, 2, 3]
    for x, y in zip(a, b):
        for key in ("loss", "holdout_loss", "grad_norm"):
            if key in x:
                assert abs(x[key] - y[key]) < 1e-5, (x["step"], key, x[key], y[key])
    from safetensors.torch import load_file

    # rank 0 wrote whole weights gathered from the shards, equal to the 1-process weights
    w1 = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5


def test_nproc_is_removed_before_torchrun_parses_the_command():
    arguments = distributed.torchrun_arguments(["train", "--out", "r", "--nproc", "2", "--nproc=2"], nproc=2)
    assert arguments[arguments.index("--nproc-per-node") + 1] == "2"
    assert arguments[arguments.index("honed") + 1 :] == ["train", "--out", "r"]


def test_a_user_error_in_the_workers_is_one_message_and_exit_2(tmp_path):
    bad = tmp_path / "train.jsonl"
    # valid config, so the error only shows up inside the workers, when they read the data
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": 0}]}
    bad.write_text("".join(json.dumps(row) + "\n" for _ in range(4)))
    command = [sys.executable, "-m", "honed", "train", "--data", str(bad), "--model", TINY, "--out",
               str(tmp_path / "run"), "--nproc", "2"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("error:") == 1 and "no trainable assistant turn" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_workers_are_recognised_by_torchrun_variables(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not distributed.launched_by_torchrun()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launched_by_torchrun()


def test_backend_follows_the_device():
    assert distributed.backend_for("cpu") == "gloo"
    assert distributed.backend_for("cuda:1") == "nccl"


def test_fsdp_is_automatic_only_for_full_fine_tuning_on_gpus():
    assert distributed.use_fsdp(sharding="auto", method="full", device="cuda:0", world_size=4)
    assert not distributed.use_fsdp(sharding="auto", method="full", device="cpu", world_size=2)
    assert not distributed.use_fsdp(sharding="auto", method="lora", device="cuda:0", world_size=2)
    assert not distributed.use_fsdp(sharding="none", method="full", device="cuda:0", world_size=2)
    # asked for explicitly it also runs on the CPU (gloo), which is how the test above checks it
    assert distributed.use_fsdp(sharding="fsdp", method="full", device="cpu", world_size=2)


@pytest.mark.parametrize(("method", "world_size", "says"), [("full", 1, "--nproc"), ("lora", 2, "method: full")])
def test_asking_for_fsdp_where_it_cannot_work_is_a_clear_error(method, world_size, says):
    with pytest.raises(ConfigError, match=says):
        distributed.use_fsdp(sharding="fsdp", method=method, device="cuda:0", world_size=world_size)


def test_fsdp_refuses_what_it_does_not_support_yet():
    with pytest.raises(ConfigError, match="--resume"):
        distributed.prepare_model(
            None, sharding="fsdp", method="full", device="cpu", world_size=2, resume=True, task_metric=False
        )
    with pytest.raises(ConfigError, match="task metric"):
        distributed.prepare_model(
            None, sharding="fsdp", method="full", device="cpu", world_size=2, resume=False, task_metric=True
        )
