"""honed monitor: drift on prompt embeddings, output health, windows, and bad input (tiny model)."""

from __future__ import annotations

import io
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.helpers import TINY
from honed.cli import app
from honed.config import load_config
from honed.monitor.drift import window_drift
from honed.monitor.embed import embed_texts
from honed.monitor.traffic import read_traffic
from honed.monitor.watch import MonitorSettings, monitor_run, parse_window, split_windows
from honed.train.loop import train


PRODUCTS = ["app", "website", "invoice", "login page", "printer", "router", "card", "order", "account", "parcel"]
PROBLEMS = ["crashes on start", "is very slow", "shows an error", "charged me twice", "does not load",
            "was never delivered", "keeps logging me out", "is broken again", "looks wrong", "froze"]
OTHER = ["translate 'good morning' into French", "what is 17 times 23", "write a haiku about the sea",
         "name three prime numbers", "how many legs does a spider have", "capital of Peru?",
         "sort these words: pear, apple, fig", "convert 5 miles to km", "spell 'necessary' backwards",
         "who painted the Mona Lisa"]


def support_prompt(rng: random.Random) -> str:
    return f"Hi, my {rng.choice(PRODUCTS)} {rng.choice(PROBLEMS)}. Order {rng.randint(100, 999)}."


def support_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": support_prompt(rng)},
                          {"role": "assistant", "content": json.dumps({"category": rng.choice(["bug", "billing"])})}]}
            for _ in range(n)]


def log_line(prompt: str, output: str, ts: datetime, i: int) -> str:
    return json.dumps({"v": 1, "id": f"chatcmpl-{i}", "ts": ts.isoformat().replace("+00:00", "Z"), "model": "run",
                       "run": None, "checkpoint": "best", "messages": [{"role": "user", "content": prompt}],
                       "params": {}, "output": output, "finish_reason": "stop", "error": None,
                       "prompt_tokens": 10, "completion_tokens": 5, "latency_ms": 100.0 + i, "ttft_ms": None,
                       "mean_logprob": -0.5, "stream": False})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    # its own run, not the shared trained_run: the traffic below is drawn from the same prompts as its data
    root = tmp_path_factory.mktemp("monitor")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in support_rows(120, seed=0)))
    overrides = [f"model={TINY}", f"data.train={data}", "batch_size=16", "max_steps=2", "num_threads=1",
                 "data.holdout_fraction=0.1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONED_HOME", str(root / "home"))
        train(load_config(None, overrides=overrides), out=root / "run", console=Console(file=io.StringIO()))
    return root / "run"


@pytest.fixture
def traffic(tmp_path) -> Path:
    """Day 1: support prompts, valid JSON answers. Day 2: another task. Day 3: support prompts, broken JSON."""
    rng = random.Random(1)
    start = datetime(2026, 11, 1, 9, tzinfo=timezone.utc)
    lines = []
    for day, kind in enumerate(["same", "other", "broken"]):
        for i in range(40):
            ts = start + timedelta(days=day, minutes=i)
            prompt = rng.choice(OTHER) + f" ({rng.randint(1, 99)})" if kind == "other" else support_prompt(rng)
            output = '{"category": "bug"' if kind == "broken" else '{"category": "bug"}'
            lines.append(log_line(prompt, output, ts, len(lines)))
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n" + '{"v": 1, "id": "torn', encoding="utf-8")  # a write in progress
    return path


def test_monitor_flags_the_foreign_day_and_the_broken_outputs(run_dir, traffic):
    report = monitor_run(run_dir, MonitorSettings(traffic=str(traffic)))
    assert [(w.name, w.count) for w in report.windows] == [("2026-11-01", 40), ("2026-11-02", 40), ("2026-11-03", 40)]
    same, other, broken = report.windows
    assert same.status == "ok" and not same.drift["drifted"]
    assert other.status == "drift" and other.drift["p_value"] < 0.01
    assert other.shifts["oov_share"] > 0.5 > same.shifts["oov_share"]
    assert broken.status == "degraded" and broken.health["json_valid"] == 0.0
    assert any("json_valid" in r for r in broken.reasons)
    assert report.windows[0].health["latency_p50_ms"] is not None


def test_monitor_cli_json_and_strict_exit(run_dir, traffic):
    result = CliRunner().invoke(app, ["monitor", str(run_dir), "--traffic", str(traffic), "--json", "--strict"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [w["status"] for w in report["windows"]] == ["ok", "drift", "degraded"]
    assert report["windows"][1]["least_like"][0]["where"].startswith("chatcmpl-")


def test_no_false_alarms_on_same_distribution_windows(run_dir):
    """The false-alarm rate of monitor's rule, measured: 100 windows of 30 fresh same-distribution prompts at
    alpha 0.01 (each of its two tests alone stays near its level too)."""
    from honed.model.run import load_run_model
    from honed.runs.rundir import RunDir

    model, tokenizer = load_run_model(RunDir(run_dir))
    rng = random.Random(7)
    reference = embed_texts(model, tokenizer, [support_prompt(rng) for _ in range(200)])
    pool = embed_texts(model, tokenizer, [support_prompt(rng) for _ in range(600)])
    picker = np.random.default_rng(0)
    results = [window_drift(reference, pool[picker.choice(len(pool), 30, replace=False)], permutations=100, seed=k)
               for k in range(100)]
    assert sum(r.drifted for r in results) <= 5
    assert sum(r.mmd.p_value < 0.01 for r in results) <= 5
    assert sum(r.novelty.p_value < 0.01 for r in results) <= 5


def test_a_new_mix_of_familiar_prompts_is_not_drift(run_dir):
    """Only the 'charged me twice' kind of support prompt: MMD sees the changed mix, novelty sees nothing new."""
    from honed.model.run import load_run_model
    from honed.runs.rundir import RunDir

    model, tokenizer = load_run_model(RunDir(run_dir))
    rng = random.Random(3)
    reference = embed_texts(model, tokenizer, [support_prompt(rng) for _ in range(300)])
    narrow = [f"Hi, my {p} charged me twice. Order {rng.randint(100, 999)}." for p in PRODUCTS[:3] for _ in range(20)]
    foreign = [rng.choice(OTHER) + f" ({rng.randint(1, 99)})" for _ in range(60)]
    mix = window_drift(reference, embed_texts(model, tokenizer, narrow), seed=0)
    other = window_drift(reference, embed_texts(model, tokenizer, foreign), seed=0)
    assert mix.mmd.p_value < 0.01 and mix.mix_changed and not mix.drifted
    assert other.drifted and other.novelty.share > 0.5


def test_a_data_file_is_traffic_too(run_dir, tmp_path):
    path = tmp_path / "traffic.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in support_rows(30, seed=5)))
    items = read_traffic(path)
    assert len(items) == 30 and items[0].where == "traffic.jsonl:1" and items[0].ts is None
    report = monitor_run(run_dir, MonitorSettings(traffic=str(path)))
    assert [w.name for w in report.windows] == ["all"] and report.windows[0].status == "ok"


def test_windows_by_count_and_duration(traffic):
    items = read_traffic(traffic)
    assert len(items) == 120  # the torn last line is skipped
    assert [len(g) for _, g in split_windows(items, "50")] == [50, 50, 20]
    assert len(split_windows(items, "12h")) == 3
    assert parse_window("30m")[1] == timedelta(minutes=30)


@pytest.mark.parametrize("args, message", [
    (["--window", "fortnight"], "--window"),
    (["--traffic", "/nonexistent/requests.jsonl"], "no such file"),
    (["--traffic", "/"], "not a regular file"),
])
def test_bad_input_is_one_message_and_exit_2(run_dir, traffic, args, message):
    base = ["monitor", str(run_dir), "--traffic", str(traffic)]
    result = CliRunner().invoke(app, base + args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_a_damaged_or_newer_request_log_is_refused(run_dir, tmp_path):
    good = log_line("hi", "x", datetime(2026, 1, 1, tzinfo=timezone.utc), 0)
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text(good + "\n{not json\n" + good + "\n")
    newer = tmp_path / "newer.jsonl"
    newer.write_text(good.replace('"v": 1', '"v": 9') + "\n")
    for path, message in ((damaged, "damaged.jsonl:2"), (newer, "newer than this honed reads")):
        result = CliRunner().invoke(app, ["monitor", str(run_dir), "--traffic", str(path)])
        assert result.exit_code == 2 and message in result.output


def test_a_log_line_holding_unicode_line_separators_is_one_record(tmp_path):
    """JSON Lines are split on \\n only: U+2028, U+2029 and NEL inside a message (raw, as a log written before
    the writer escaped them) stay inside their record instead of tearing it."""
    from honed.monitor.traffic import read_request_log

    ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    lines = [json.dumps(json.loads(log_line(f"a\u2028b\u2029c\x85d {i}", "x", ts, i)), ensure_ascii=False)
             for i in range(2)]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = read_request_log(path)
    assert len(items) == 2 and "\u2028" in items[0].prompt
