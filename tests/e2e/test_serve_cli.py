"""`honed serve`, `honed chat` and `honed --version` through the real CLI (an HF folder served as an export)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from openai import OpenAI

from honed import __version__
from honed.serve.server import free_port
from tests.helpers import ROOT, TINY, cli


def test_version() -> None:
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"honed {__version__}"


def test_engine_vllm_without_vllm_is_one_clear_error() -> None:
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    result = cli("serve", TINY, "--engine", "vllm", "--no-log")
    assert result.exit_code == 2 and "pip install vllm" in result.output and "Traceback" not in result.output


def test_serve_refuses_a_folder_that_is_not_a_model(tmp_path) -> None:
    result = cli("serve", str(tmp_path), "--no-log")
    assert result.exit_code == 2 and "not a Hugging Face model folder" in result.output


def test_precision_is_checked_before_anything_loads(monkeypatch) -> None:
    wrong = cli("serve", TINY, "--precision", "fp16", "--no-log")
    assert wrong.exit_code == 2 and "use fp32 or bf16" in wrong.output
    other_engine = cli("serve", TINY, "--engine", "llama.cpp", "--precision", "bf16", "--no-log")
    assert other_engine.exit_code == 2 and "applies to the torch engine" in other_engine.output
    monkeypatch.setattr("honed.machine.cpu_has_fast_bf16", lambda: False)  # an AVX2-only CPU
    slow = cli("serve", TINY, "--precision", "bf16", "--device", "cpu", "--no-log")
    assert slow.exit_code == 2 and "slower than fp32" in slow.output and "Traceback" not in slow.output


def test_bf16_weights_serve_in_bf16() -> None:
    from honed.model.batch import Row, RunningBatch, Sampling
    from honed.serve.loading import load_targets

    (served,) = load_targets([TINY], dtype="bfloat16")
    assert {p.dtype for p in served.model.parameters()} == {torch.bfloat16}
    batch = RunningBatch(served.model, pad_id=served.pad_id)
    batch.admit([Row(prompt_ids=[1, 2, 3], sampling=Sampling(max_tokens=2))])
    assert len(batch.choose()) == 1


def test_chat_once_and_interactive() -> None:
    once = cli("chat", TINY, "--prompt", "hello", "--max-tokens", "6", "--device", "cpu")
    assert once.exit_code == 0, once.output
    assert len(once.stdout) > 1 and once.stdout.endswith("\n")  # the answer (6 tokens, greedy) and a newline
    again = cli("chat", TINY, "--prompt", "hello", "--max-tokens", "6")
    assert again.stdout == once.stdout  # greedy by default: the same answer
    session = cli("chat", TINY, "--max-tokens", "6", "--system", "be brief", "--device", "cpu",
                  stdin="hello\n/reset\n/bogus\n/quit\n")
    assert session.exit_code == 0, session.output
    assert "(conversation reset)" in session.stdout and "unknown command /bogus" in session.stdout


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else "server exited"
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the server did not come up")


def test_sigterm_drains_in_flight_requests_and_exits(tmp_path) -> None:
    port, log = free_port(), tmp_path / "requests.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HONED_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [sys.executable, "-m", "honed", "serve", f"tiny={TINY}", "--port", str(port), "--request-log", str(log),
         "--max-tokens-limit", "120", "--device", "cpu"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process)
        client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=120, temperature=0, stream=True,
                                                extra_body={"ignore_eos": True})
        chunks = [next(iter(stream))]
        threading.Timer(0.0, process.send_signal, args=(signal.SIGTERM,)).start()
        chunks += list(stream)  # the in-flight answer still completes
        assert chunks[-1].choices[0].finish_reason == "length"
        # uvicorn re-raises the SIGTERM it caught once it has drained: "terminated by SIGTERM", cleanly
        assert process.wait(60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["completion_tokens"] == 120 and entry["error"] is None and entry["model"] == "tiny"
    assert entry["run"] is None and entry["checkpoint"] == str(Path(TINY).resolve())
