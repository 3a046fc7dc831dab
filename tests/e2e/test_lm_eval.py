"""lm-eval (EleutherAI's evaluation harness) against `honed serve`, as a user runs it: a subprocess.

`--model local-completions` runs a log-likelihood task through POST /v1/completions (token-id prompts,
`echo`, `logprobs`), and `--model local-chat-completions --apply_chat_template` a generation task through
POST /v1/chat/completions. The tasks are local (tests/assets/lm_eval: YAML + JSONL, no hub download).
Each test checks that the requests reached the server (request log, /metrics), so lm-eval cannot have
skipped them, and that what lm-eval scored is what the server answered: the log-likelihoods equal the
served model's own, the generations equal the logged outputs.

The commands are the README's ("Benchmarks through lm-eval"). Needs `pip install -e '.[harness]'`.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

from honed.model.run import load_run_model
from honed.runs.rundir import RunDir
from honed.serve.app import Settings
from honed.serve.engine import Engine
from honed.serve.loading import load_targets
from honed.serve.server import ServerThread
from tests.helpers import ROOT, copy_run

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[harness]')")
pytestmark = pytest.mark.slow

TASKS = "tests/assets/lm_eval"  # relative: the task YAMLs name their JSONL relative to the repository root
KEY = "test-key"
NAME = "triage"


def task_docs() -> list[dict]:
    lines = (ROOT / TASKS / "triage.jsonl").read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines if line]


def task_choices() -> list[str]:
    return list(yaml.safe_load((ROOT / TASKS / "triage_choice.yaml").read_text(encoding="utf-8"))["doc_to_choice"])


def read_log(run: Path) -> list[dict]:
    path = RunDir(run).requests_log
    lines = path.read_text(encoding="utf-8").split("\n") if path.exists() else []
    return [json.loads(line) for line in lines if line]


def answered(url: str) -> float:
    """`honed_requests_total{model=NAME,status="200"}` from /metrics (0 before the first request)."""
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    match = re.search(rf'^honed_requests_total\{{model="{NAME}",status="200"\}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory) -> Path:
    """The module's copy of the shared run (serving writes its request log), served as NAME."""
    return copy_run(trained_run, tmp_path_factory.mktemp("runs") / NAME)


@pytest.fixture(scope="module")
def url(run):
    with ServerThread(load_targets([str(run)]), Engine(max_batch=8), settings=Settings(api_key=KEY)) as base:
        yield base


def lm_eval(args: list[str], out: Path) -> tuple[dict, list[dict]]:
    """Run `python -m lm_eval ARGS` in the repository root; its results JSON and logged samples."""
    env = {**os.environ, "OPENAI_API_KEY": KEY, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(out / "datasets-cache")}  # no hub look-ups; the local JSONL read afresh
    done = subprocess.run([sys.executable, "-m", "lm_eval", *args, "--include_path", TASKS, "--output_path",
                           str(out / "results"), "--log_samples"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    [results] = (out / "results").rglob("results_*.json")
    [samples] = (out / "results").rglob("samples_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").split("\n") if line]
    return json.loads(results.read_text(encoding="utf-8")), rows


def continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) under the run's own model, split into tokens as lm-eval splits them
    (the whole text encoded, the context's tokens cut off)."""
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logprobs = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
    return sum(float(logprobs[i - 1, whole[i]]) for i in range(start, len(whole)))


def test_loglikelihood_task_through_completions(run, url, tmp_path) -> None:
    before_log, before_count = len(read_log(run)), answered(url)
    results, samples = lm_eval(["--model", "local-completions", "--model_args",
                                f"base_url={url}/v1/completions,model={NAME},tokenizer={run}/final,"
                                "tokenizer_backend=huggingface", "--tasks", "honed_triage_choice"], tmp_path)
    acc = results["results"]["honed_triage_choice"]["acc,none"]
    assert math.isfinite(acc) and 0.0 <= acc <= 1.0
    asked = len(task_docs()) * len(task_choices())  # one request per (document, choice)
    log = read_log(run)[before_log:]
    assert len(log) == asked and answered(url) - before_count == asked
    assert all(e["params"]["endpoint"] == "completions" and e["finish_reason"] == "length" for e in log)
    # What lm-eval scored is the served model's log-likelihood of each choice, not a misread slice.
    model, tokenizer = load_run_model(RunDir(run))
    assert len(samples) == len(task_docs())
    for sample in samples[:3]:
        for i, choice in enumerate(task_choices()):
            request = sample["arguments"][f"gen_args_{i}"]
            assert request["arg_1"] == " " + choice
            scored = float(sample["resps"][i][0][0])  # lm-eval logs (loglikelihood, is_greedy) as strings
            assert scored == pytest.approx(continuation_logprob(model, tokenizer, request["arg_0"], request["arg_1"]),
                                           abs=2e-3)


def test_generation_task_through_chat_completions(run, url, tmp_path) -> None:
    before_log, before_count = len(read_log(run)), answered(url)
    results, samples = lm_eval(["--model", "local-chat-completions", "--model_args",
                                f"base_url={url}/v1/chat/completions,model={NAME}", "--apply_chat_template",
                                "--tasks", "honed_triage_generate"], tmp_path)
    score = results["results"]["honed_triage_generate"]["exact_match,none"]
    assert math.isfinite(score) and 0.0 <= score <= 1.0
    log = read_log(run)[before_log:]
    assert len(log) == len(task_docs()) and answered(url) - before_count == len(task_docs())
    assert all(e["id"].startswith("chatcmpl-") and e["params"]["stop"] == ["\n"] for e in log)
    # Each generation lm-eval scored is the answer the server logged for that document's prompt.
    logged = {e["messages"][-1]["content"]: e["output"] for e in log}
    for sample in samples:
        [prompt] = sample["arguments"]["gen_args_0"]["arg_0"]  # lm-eval's JsonChatStr, logged as [json]
        [message] = json.loads(prompt)
        assert message["role"] == "user" and sample["doc"]["ticket"] in message["content"]
        assert sample["resps"][0][0] == logged[message["content"]]
