"""honed eval --baselines: retrieved few-shot, an OpenAI-compatible endpoint (a real local server), an exported
model folder and the constant majority answer, side by side through the real CLI on the tiny model."""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import pytest

from tests.helpers import ROOT, TINY, cli, copy_run

_spec = importlib.util.spec_from_file_location("chat_server", ROOT / "tests" / "assets" / "chat_server.py")
chat_server = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(chat_server)  # type: ignore[union-attr]


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("HONED_ENDPOINT_API_KEY", "secret")
    monkeypatch.delenv("HONED_ENDPOINT_TIMEOUT", raising=False)


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory) -> Path:
    """The module's copy of the shared run: each test's eval writes into its eval/."""
    return copy_run(trained_run, tmp_path_factory.mktemp("runs") / "support")


def _holdout(run: Path, n: int) -> list[dict]:
    return [json.loads(line) for line in (run / "data" / "holdout.jsonl").read_text().splitlines()[:n]]


def test_knn_endpoint_export_and_majority_side_by_side(run) -> None:
    holdout = _holdout(run, 6)
    table = {row["messages"][-2]["content"]: row["messages"][-1]["content"] for row in holdout}  # a perfect endpoint
    with chat_server.ChatServer(table, api_key="secret") as server:
        result = cli("eval", str(run), "--limit", "6", "--batch-size", "4", "--max-new-tokens", "8", "--json",
                     "--baselines", f"few-shot-knn:2,endpoint:oracle={server.url}#oracle-1,export:{TINY}")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert list(summary["systems"]) == ["tuned", "few-shot-knn-2", "oracle", "export-tiny-llama", "majority"]
    assert set(summary["differences"]) == {f"tuned - {s}" for s in list(summary["systems"])[1:]}
    oracle = summary["systems"]["oracle"]
    assert oracle["kind"] == "endpoint" and oracle["model"] == "oracle-1" and oracle["url"] == server.url
    assert oracle["metrics"]["field_f1_micro"]["value"] == 1.0 and oracle["metrics"]["exact_match"]["value"] == 1.0
    assert summary["differences"]["tuned - oracle"]["field_f1_micro"]["high"] <= 0
    sent = server.requests[0]
    assert sent["messages"] == holdout[0]["messages"][:-1]  # the same messages the base model is rendered from
    assert sent["temperature"] == 0 and sent["max_tokens"] == 8 and sent["model"] == "oracle-1"
    assert summary["systems"]["export-tiny-llama"]["path"] == TINY
    majority = summary["systems"]["majority"]
    assert majority["kind"] == "constant" and majority["answer"] == summary["majority_answer"]
    rows = [json.loads(line) for line in (run / "eval" / "oracle.jsonl").read_text().splitlines()]
    assert [r["output"] for r in rows] == [r["reference"] for r in rows]
    knn_rows = [json.loads(line) for line in (run / "eval" / "few-shot-knn-2.jsonl").read_text().splitlines()]
    assert len(knn_rows) == 6
    # a prompted base model's answer ends after its first JSON value (the stop a prompting user sets); the
    # tuned model is scored exactly as it answers, as it is served
    assert summary["decoding"]["baseline_answer_end"] == "json"
    assert summary["decoding"]["baseline_prompt"] == "chat template"  # the tiny model ships its own template
    assert all(r["raw_output"].lstrip().startswith(r["output"]) for r in knn_rows if "raw_output" in r)
    tuned_rows = [json.loads(line) for line in (run / "eval" / "tuned.jsonl").read_text().splitlines()]
    assert not any("raw_output" in r for r in tuned_rows)


def test_tables_show_every_baseline(run) -> None:
    result = cli("eval", str(run), "--limit", "4", "--batch-size", "4", "--max-new-tokens", "4",
                 "--baselines", "none")
    assert result.exit_code == 0, result.output
    assert "majority" in result.stdout  # a column of the metrics table and of the differences table
    assert result.stdout.count("majority") >= 2 and "paired differences" in result.stdout


def test_bad_baselines_exit_2_in_one_line(run, tmp_path, monkeypatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    cases = [
        ("few-shot-knn:0", "few-shot-knn:K with K a whole number >= 1"),
        ("endpoint:bad", "write endpoint:NAME=URL[#model]"),
        (f"export:{tmp_path / 'missing'}", "no such file or folder"),
        (f"endpoint:down=http://127.0.0.1:{closed}/v1", "endpoint down (http://127.0.0.1"),
    ]
    for spec, message in cases:
        result = cli("eval", str(run), "--limit", "2", "--baselines", spec)
        assert result.exit_code == 2, (spec, result.output)
        assert message in result.output and "Traceback" not in result.output
    with chat_server.ChatServer({}, api_key="other") as server:
        result = cli("eval", str(run), "--limit", "2", "--baselines", f"endpoint:x={server.url}")
    assert result.exit_code == 2 and "HTTP 401" in result.output and "Traceback" not in result.output
