"""The loop back to training: canaries against a served model, traffic -> drafts -> review (tiny model)."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.helpers import TINY
from honed.cli import app
from honed.config import load_config
from honed.model.prompt import render_prompt
from honed.data.types import Conversation
from honed.model.decode import generate
from honed.evaluate.run_eval import EvalSettings, evaluate_run
from honed.model.run import load_run_model
from honed.monitor.canary import run_canary
from honed.monitor.from_traffic import FromTrafficSettings, traffic_to_data
from honed.monitor.review import review_file
from honed.runs.rundir import RunDir
from honed.train.loop import train




def make_run(root: Path, name: str, answer: str) -> Path:
    # its own runs, not the shared trained_run: the canary needs a run that learnt one specific answer
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": answer}]}
            for i in range(48)]
    data = root / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [f"model={TINY}", f"data.train={data}", "batch_size=8", "epochs=6", "lr=0.01", "num_threads=1",
                 "data.holdout_fraction=0.25", "lora.dropout=0"]
    train(load_config(None, overrides=overrides), out=root / name, console=Console(file=io.StringIO()))
    return root / name


class ModelServer:
    """A minimal OpenAI-compatible chat endpoint over one run's model (stdlib HTTP, greedy decoding)."""

    def __init__(self, run: Path) -> None:
        self.model, self.tokenizer = load_run_model(RunDir(run))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = server.answer(body["messages"], body.get("max_tokens") or 32)
                reply = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, messages: list[dict], max_tokens: int) -> str:
        conversation = Conversation.from_json({"messages": messages + [{"role": "assistant", "content": ""}]})
        prompt = render_prompt(conversation, self.tokenizer)
        return generate(self.model, self.tokenizer, [prompt], max_new_tokens=max_tokens, batch_size=1)[0][0].text

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loop")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONED_HOME", str(root / "home"))
        made = {"yes": make_run(root, "yes", "yes"), "no": make_run(root, "no", "no")}
        evaluate_run(made["yes"], EvalSettings(baselines="none", threads=1))
    return made


def test_the_canary_passes_the_right_model_and_flags_a_wrong_adapter(runs):
    assert RunDir(runs["yes"]).read_summary().systems["tuned"].metrics["exact_match"].value == 1.0
    right, wrong = ModelServer(runs["yes"]), ModelServer(runs["no"])
    try:
        ok = run_canary(runs["yes"], endpoint=right.url)
        bad = run_canary(runs["yes"], endpoint=wrong.url)
    finally:
        right.close()
        wrong.close()
    assert ok.status == "ok" and ok.identical == 1.0 and ok.served == ok.evaluated == 1.0
    assert bad.status == "degraded" and bad.difference["high"] < 0 and bad.worst


def test_canary_cli_exit_codes(runs):
    wrong = ModelServer(runs["no"])
    try:
        result = CliRunner().invoke(app, ["monitor", str(runs["yes"]), "--canary", "--endpoint", wrong.url, "--strict"])
    finally:
        wrong.close()
    assert result.exit_code == 1 and "DEGRADED" in result.output
    down = CliRunner().invoke(app, ["monitor", str(runs["yes"]), "--canary", "--endpoint", "http://127.0.0.1:9/v1"])
    assert down.exit_code == 2 and "cannot connect" in down.output


def request_log(path: Path, run: Path, prompts: list[tuple[str, float]]) -> Path:
    lines = [json.dumps({"v": 1, "id": f"chatcmpl-{i}", "ts": f"2026-12-0{1 + i % 2}T10:00:00.000Z", "model": "yes",
                         "run": str(run.resolve()), "checkpoint": "best",
                         "messages": [{"role": "user", "content": p}], "params": {}, "output": f"draft {i}",
                         "finish_reason": "stop", "error": None, "prompt_tokens": 3, "completion_tokens": 2,
                         "latency_ms": 10.0, "ttft_ms": None, "mean_logprob": lp, "stream": False})
             for i, (p, lp) in enumerate(prompts)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_from_traffic_dedupes_filters_and_picks_the_least_sure(runs, tmp_path):
    prompts = [("new question A", -0.1), ("NEW  question a", -0.2), ("question 1", -3.0), ("new question B", -2.0),
               ("new question C", -1.0), ("new question D", -0.5)]
    log = request_log(tmp_path / "requests.jsonl", runs["yes"], prompts)
    out = tmp_path / "new.jsonl"
    result = traffic_to_data(FromTrafficSettings(log=str(log), out=str(out), uncertain=2))
    assert (result.read, result.duplicates) == (6, 1)
    assert result.in_training == 1  # "question 1" is in the run's training data (or its holdout: split off)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["messages"][0]["content"] for r in rows] == ["new question B", "new question C"]
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": "draft 3"}
    assert rows[0]["honed"]["review"] == "unreviewed" and rows[0]["honed"]["request_id"] == "chatcmpl-3"
    since = traffic_to_data(FromTrafficSettings(log=str(log), out=str(tmp_path / "b.jsonl"), since="2026-12-02"))
    assert since.read == 6 and since.written == 3  # ids 1, 3 and 5 arrived on the 2nd; 0 (same prompt as 1) before


def test_from_traffic_leaves_out_completions_and_tool_requests(runs, tmp_path):
    log = request_log(tmp_path / "requests.jsonl", runs["yes"], [("a chat", -1.0), ("Question: 2+2? Answer: 4", -1.0),
                                                                 ("weather?", -1.0)])
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    lines[1]["params"] = {"endpoint": "completions"}
    lines[2]["params"] = {"tools": ["get_weather"], "tool_choice": "auto"}
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "new.jsonl"
    result = traffic_to_data(FromTrafficSettings(log=str(log), out=str(out)))
    assert (result.read, result.left_out, result.written) == (3, 2, 1)
    assert json.loads(out.read_text())["messages"][0]["content"] == "a chat"


def test_from_traffic_drafts_with_a_teacher_endpoint(runs, tmp_path):
    log = request_log(tmp_path / "requests.jsonl", runs["yes"], [("brand new prompt", -1.0)])
    teacher = ModelServer(runs["no"])
    try:
        traffic_to_data(FromTrafficSettings(log=str(log), out=str(tmp_path / "t.jsonl"),
                                            draft_with=f"endpoint:{teacher.url}#teacher"))
    finally:
        teacher.close()
    row = json.loads((tmp_path / "t.jsonl").read_text())
    assert row["messages"][-1]["content"] == "no" and "teacher" in row["honed"]["drafted_by"]


def test_review_saves_after_every_decision_and_writes_training_data(runs, tmp_path, monkeypatch):
    prompts = [(f"fresh prompt {i}", -1.0) for i in range(4)]
    log = request_log(tmp_path / "requests.jsonl", runs["yes"], prompts)
    drafts = tmp_path / "new.jsonl"
    traffic_to_data(FromTrafficSettings(log=str(log), out=str(drafts)))
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nprintf 'fixed answer' > \"$1\"\n")
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    result = CliRunner().invoke(app, ["data", "review", str(drafts)], input="a\ne\nr\n")  # then input ends
    assert result.exit_code == 0, result.output
    assert "1 accepted, 1 edited, 1 rejected, 1 left" in result.output
    reviewed = [json.loads(line) for line in (tmp_path / "new.reviewed.jsonl").read_text().splitlines()]
    assert [r["messages"][-1]["content"] for r in reviewed] == ["draft 0", "fixed answer"]
    again = review_file(drafts, decide=lambda row, n, total: ("accept", None))
    assert (again.accepted, again.left) == (2, 0)
    check = CliRunner().invoke(app, ["data", "check", str(tmp_path / "new.reviewed.jsonl"), "--model", TINY])
    assert check.exit_code == 0, check.output


@pytest.mark.parametrize("args, message", [
    (["--draft-with", "teacher"], "endpoint:URL"),
    (["--since", "yesterday"], "--since"),
])
def test_from_traffic_bad_options(runs, tmp_path, args, message):
    log = request_log(tmp_path / "requests.jsonl", runs["yes"], [("p", -1.0)])
    result = CliRunner().invoke(app, ["data", "from-traffic", str(log), "--out", str(tmp_path / "o.jsonl"), *args])
    assert result.exit_code == 2 and message in result.output


def test_from_traffic_refuses_a_plain_data_file_and_an_existing_out(runs, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}) + "\n")
    result = CliRunner().invoke(app, ["data", "from-traffic", str(data), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "not a request log" in result.output
    result = CliRunner().invoke(app, ["data", "from-traffic", str(data), "--out", str(data)])
    assert result.exit_code == 2 and "already exists" in result.output


def test_compare_old_and_new_versions_gives_paired_intervals_and_a_verdict(runs):
    from honed.evaluate.compare import compare_runs

    holdout = RunDir(runs["yes"]).holdout_file()
    evaluate_run(runs["no"], EvalSettings(baselines="none", threads=1, data=str(holdout)))
    report = compare_runs([runs["yes"], runs["no"]])
    change = report["changes"]["no - yes"]
    assert change["differences"]["exact_match"]["value"] == -1.0
    assert change["verdict"].startswith("worse: chrf")  # one repeated answer is no label set: free-text main metric
    result = CliRunner().invoke(app, ["compare", str(runs["yes"]), str(runs["no"])])
    assert result.exit_code == 0 and "no - yes: worse" in result.output
