"""`honed serve` through the real `openai` client against a real uvicorn server on 127.0.0.1.

Two tiny runs, a copy of the shared one and one trained with another lr, are made once for the module;
one server serves both adapters on one base model.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from honed.model.prompt import render_prompt
from honed.data.types import Conversation, Message
from honed.model.decode import generate
from honed.model.run import load_run_model
from honed.runs.rundir import RunDir
from honed.serve.app import Settings
from honed.serve.engine import Engine
from honed.serve.loading import load_targets
from honed.serve.requestlog import RequestLog
from honed.serve.schemas import Limits
from honed.serve.server import ServerThread
from tests.helpers import DATA, FAST, ROOT, TINY, cli, copy_run

KEY = "test-key"
LIMITS = Limits(max_body_bytes=64 * 1024, max_tokens=400, max_prompt_tokens=400)


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in RunDir(run).requests_log.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def runs(trained_run, tmp_path_factory) -> tuple[Path, Path]:
    """a: a copy of the shared run (serving writes its request log); b: the same but for --lr 5e-3."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONED_HOME", str(root / "home"))
        result = cli("train", "--data", DATA, "--model", TINY, "--out", str(root / "b"), "--lr", "5e-3",
                     *FAST, "--json")
        assert result.exit_code == 0, result.output
    return copy_run(trained_run, root / "a"), root / "b"


@pytest.fixture(scope="module")
def served(runs):
    return load_targets([str(runs[0]), str(runs[1])])


@pytest.fixture(scope="module")
def url(served):
    with ServerThread(served, Engine(max_batch=32), settings=Settings(api_key=KEY, limits=LIMITS)) as base:
        yield base


@pytest.fixture()
def client(url) -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def ask(client: OpenAI, model: str, text: str, **kwargs):
    messages = [{"role": "user", "content": text}]
    return client.chat.completions.create(model=model, messages=messages, temperature=0, **kwargs)


def test_one_base_model_carries_both_adapters(served) -> None:
    assert [s.name for s in served] == ["a", "b"]
    assert served[0].model is served[1].model and served[0].adapter != served[1].adapter


def test_one_run_on_its_base_is_served_merged(runs) -> None:
    """Alone on its base, the adapter is merged into the weights, as `honed eval` loads the run: no peft
    wrapper, no adapter to switch, and the same weights as the evaluation's model."""
    (alone,) = load_targets([str(runs[0])])
    assert alone.adapter is None and not hasattr(alone.model, "peft_config")
    evaluated, _ = load_run_model(RunDir(runs[0]))
    served_weights, eval_weights = alone.model.state_dict(), evaluated.state_dict()
    assert served_weights.keys() == eval_weights.keys()
    assert all(served_weights[k].equal(eval_weights[k]) for k in eval_weights)


def test_completion_usage_and_request_log(client, runs) -> None:
    before = len(read_log(runs[0])) if RunDir(runs[0]).requests_log.exists() else 0
    reply = ask(client, "a", "App crashes when I log in", max_tokens=12, seed=3)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == "a" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5 and 1 <= reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    entry = read_log(runs[0])[before]
    documented = (ROOT / "docs" / "request-log.md").read_text(encoding="utf-8")
    fields = [line.split("`")[1] for line in documented.splitlines() if line.startswith("| `")]
    assert list(entry) == fields  # exactly the documented fields, in order
    assert entry["v"] == 1 and entry["id"] == reply.id and entry["run"] == str(runs[0].resolve())
    assert entry["output"] == choice.message.content and entry["finish_reason"] == choice.finish_reason
    assert entry["params"] == {"max_tokens": 12, "temperature": 0.0, "top_p": 1.0, "stop": None, "seed": 3}
    assert entry["messages"] == [{"role": "user", "content": "App crashes when I log in"}]
    assert entry["completion_tokens"] == reply.usage.completion_tokens and entry["stream"] is False
    assert entry["mean_logprob"] < 0 and entry["ttft_ms"] is None and entry["ts"].endswith("Z")


def test_streamed_equals_non_streamed(client, runs) -> None:
    whole = ask(client, "b", "Refund please", max_tokens=10)
    stream = ask(client, "b", "Refund please", max_tokens=10, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens and not chunks[-1].choices
    entry = read_log(runs[1])[-1]
    assert entry["stream"] is True and entry["ttft_ms"] is not None and entry["output"] == text


def test_models_list_and_adapters_by_name(client, runs) -> None:
    assert {m.id for m in client.models.list().data} == {"a", "b"}
    prompts = ["The invoice is wrong", "Cannot reset my password"]
    for run, name in zip(runs, ("a", "b")):
        model, tokenizer = load_run_model(RunDir(run))  # the evaluation's path: LoRA merged, batched greedy
        ids = [render_prompt(Conversation(messages=(Message("user", p),)), tokenizer) for p in prompts]
        expected, _ = generate(model, tokenizer, ids, max_new_tokens=8)
        for prompt, want in zip(prompts, expected):
            got = ask(client, name, prompt, max_tokens=8).choices[0].message.content
            assert got.strip() == want.text
    a, b = (read_log(run)[-1] for run in runs)
    assert a["model"] == "a" and b["model"] == "b" and a["mean_logprob"] != b["mean_logprob"]


def test_wrong_api_key_is_401(url) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        ask(OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0), "a", "hi", max_tokens=2)
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"


def test_oversized_body_is_413(client) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "a", "x" * (100 * 1024), max_tokens=2)
    assert caught.value.status_code == 413 and "limit" in caught.value.message


def test_limits_are_400_in_openai_shape(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "a", "hi", max_tokens=1000)
    assert caught.value.param == "max_tokens" and "limit of 400" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "a", "word " * 600, max_tokens=4)
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        ask(client, "nope", "hi", max_tokens=2)
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "a", "hi", max_tokens=2, n=9)
    assert caught.value.param == "n"


def _health(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url + "/health") as response:
        return json.loads(response.read())


def test_a_disconnecting_client_frees_its_slot(client, url, runs) -> None:
    stream = ask(client, "a", "Tell me everything", max_tokens=400, stream=True, extra_body={"ignore_eos": True})
    for count, _ in enumerate(stream):
        if count == 2:
            break
    stream.close()
    deadline = time.monotonic() + 30
    while _health(url)["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _health(url)["running"] == 0
    deadline = time.monotonic() + 10
    while read_log(runs[0])[-1]["error"] != "client disconnected" and time.monotonic() < deadline:
        time.sleep(0.05)
    entry = read_log(runs[0])[-1]
    assert entry["error"] == "client disconnected" and entry["finish_reason"] == "error"
    assert entry["completion_tokens"] < 400


def test_32_concurrent_requests_match_sequential_greedy(client) -> None:
    prompts = [f"ticket {i}: " + "the app " * (i % 7) + "fails" for i in range(32)]
    models = ["a" if i % 3 else "b" for i in range(32)]

    def one(i: int) -> str:
        return ask(client, models[i], prompts[i], max_tokens=16).choices[0].message.content

    sequential = [one(i) for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        concurrent = list(pool.map(one, range(32)))
    assert concurrent == sequential


def test_metrics_and_health(url, client) -> None:
    import urllib.request

    ask(client, "a", "hi", max_tokens=2)
    with urllib.request.urlopen(url + "/metrics") as response:
        text = response.read().decode()
    assert 'honed_requests_total{model="a",status="200"}' in text
    for name in ("honed_completion_tokens_total", "honed_request_latency_seconds_bucket", "honed_queue_depth",
                 "honed_running_requests"):
        assert name in text
    assert _health(url)["status"] == "ok"


def test_a_full_queue_answers_429_at_once(served) -> None:
    with ServerThread(served, Engine(max_batch=1, max_queue=0), settings=Settings(request_log=RequestLog(enabled=False))) as base:
        with pytest.raises(openai.RateLimitError):
            ask(OpenAI(base_url=base + "/v1", api_key="none", max_retries=0), "a", "hi", max_tokens=2)


def test_stop_strings_cut_the_answer(client) -> None:
    free = ask(client, "a", "Tell me", max_tokens=12, extra_body={"ignore_eos": True}).choices[0].message.content
    if len(free) < 4:
        pytest.skip("the tiny model's answer is too short to cut")
    stop = free[2:4]
    cut = ask(client, "a", "Tell me", max_tokens=12, stop=[stop], extra_body={"ignore_eos": True})
    assert cut.choices[0].message.content == free[: free.index(stop)] and cut.choices[0].finish_reason == "stop"
