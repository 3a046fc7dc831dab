"""`honed serve --engine llama.cpp`: a tiny run's GGUF export decoded by llama.cpp behind honed's front,
through the real `openai` client against a real uvicorn server on 127.0.0.1.

A copy of the shared tiny run is exported to GGUF (f16) once for the module; the same front then serves it
with the llama.cpp engine, and with the torch engine for the greedy comparison.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from honed.export.tools import converter_dir
from honed.runs.rundir import RunDir
from honed.serve.app import Settings
from honed.serve.schemas import Limits
from honed.serve.server import ServerThread
from tests.helpers import ROOT, cli, copy_run

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (make llama-cpp, or pip install 'honed[llamacpp]')"),
    pytest.mark.skipif(converter_dir() is None, reason="llama.cpp's GGUF converter is not installed (make gguf-tools)"),
]

KEY = "test-key"
LIMITS = Limits(max_body_bytes=64 * 1024, max_tokens=200, max_prompt_tokens=400)
HOLDOUT = 16


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in RunDir(run).requests_log.read_text(encoding="utf-8").split("\n") if line]


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the shared run and its GGUF export record (with the parity check's figures)."""
    root = tmp_path_factory.mktemp("runs")
    run = copy_run(trained_run, root / "tiny")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONED_HOME", str(root / "home"))
        result = cli("export", str(run), "--to", "gguf", "--quant", "f16", "--parity", str(HOLDOUT), "--json")
        assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


@pytest.fixture(scope="module")
def served(exported):
    from honed.serve.llamacpp import load_llamacpp_targets

    return load_llamacpp_targets([str(exported[0])], sequences=8, threads=1)


@pytest.fixture(scope="module")
def url(served):
    from honed.serve.llamacpp import LlamaCppEngine

    with ServerThread(served, LlamaCppEngine(max_batch=8), settings=Settings(api_key=KEY, limits=LIMITS)) as base:
        yield base


@pytest.fixture(scope="module")
def torch_client(exported):
    """The same run on the torch engine, for the comparisons."""
    from honed.serve.engine import Engine
    from honed.serve.loading import load_targets

    with ServerThread(load_targets([str(exported[0])]), Engine(max_batch=8), settings=Settings(limits=LIMITS)) as base:
        yield OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120)


@pytest.fixture()
def client(url) -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def ask(client: OpenAI, text: str, **kwargs):
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}], **kwargs)


def end_of_turn_id(served) -> int:
    return served[0].stops.id_list[0]


def test_it_serves_the_runs_newest_gguf_export(served, exported) -> None:
    run, record = exported
    assert served[0].name == "tiny" and served[0].run == run.resolve()
    assert served[0].checkpoint == "exports/gguf-best-f16/model-f16.gguf"
    assert Path(record["folder"]).resolve() / "model-f16.gguf" == run.resolve() / served[0].checkpoint


def test_chat_answer_usage_and_request_log(client, exported) -> None:
    run = exported[0]
    reply = ask(client, "App crashes when I log in", max_tokens=12, seed=3)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == "tiny" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and choice.message.content
    assert reply.usage.prompt_tokens > 5 and 1 <= reply.usage.completion_tokens <= 12
    entry = read_log(run)[-1]
    documented = (ROOT / "docs" / "request-log.md").read_text(encoding="utf-8")
    fields = [line.split("`")[1] for line in documented.splitlines() if line.startswith("| `")]
    assert list(entry) == fields  # exactly the documented fields, in order, as on the torch engine
    assert entry["id"] == reply.id and entry["run"] == str(run.resolve()) and entry["model"] == "tiny"
    assert entry["checkpoint"] == "exports/gguf-best-f16/model-f16.gguf"
    assert entry["output"] == choice.message.content and entry["finish_reason"] == choice.finish_reason
    assert entry["params"] == {"max_tokens": 12, "temperature": 0.0, "top_p": 1.0, "stop": None, "seed": 3}
    assert entry["completion_tokens"] == reply.usage.completion_tokens and entry["mean_logprob"] < 0


def test_streamed_equals_non_streamed(client, exported) -> None:
    whole = ask(client, "Refund please", max_tokens=10)
    stream = ask(client, "Refund please", max_tokens=10, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    entry = read_log(exported[0])[-1]
    assert entry["stream"] is True and entry["ttft_ms"] is not None and entry["output"] == text


def test_it_stops_on_the_end_of_turn_and_on_stop_strings(client, served) -> None:
    turn_end = end_of_turn_id(served)
    ended = ask(client, "Hello", max_tokens=20, logit_bias={str(turn_end): 100})
    assert ended.choices[0].finish_reason == "stop" and ended.choices[0].message.content == ""
    assert ended.usage.completion_tokens == 1  # the end of turn counts, as on the torch engine
    free = ask(client, "Tell me", max_tokens=12, extra_body={"ignore_eos": True}).choices[0].message.content
    stop = free[2:4]
    cut = ask(client, "Tell me", max_tokens=12, stop=[stop], extra_body={"ignore_eos": True})
    assert cut.choices[0].message.content == free[: free.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_auth_and_refused_fields_are_the_fronts(client, url) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        ask(OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0), "hi", max_tokens=2)
    assert caught.value.status_code == 401
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "hi", max_tokens=2, tools=tools)
    assert caught.value.param == "tools"
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "hi", max_tokens=1000)
    assert caught.value.param == "max_tokens"


def test_an_unimplemented_parameter_is_a_400_naming_it(served, monkeypatch) -> None:
    from honed.serve import schemas
    from honed.serve.llamacpp import LlamaCppEngine

    monkeypatch.setitem(schemas.ENGINE_PARAMS, "llama.cpp", schemas.ENGINE_PARAMS["llama.cpp"] - {"logit_bias"})
    with ServerThread(served, LlamaCppEngine(max_batch=1), settings=Settings(limits=LIMITS)) as base:
        with pytest.raises(openai.BadRequestError) as caught:
            ask(OpenAI(base_url=base + "/v1", api_key="x", max_retries=0), "hi", max_tokens=2, logit_bias={"5": 1})
    assert caught.value.param == "logit_bias" and "llama.cpp engine" in caught.value.message


def test_logprobs_n_seed_and_json_schema(client) -> None:
    reply = ask(client, "Ticket", max_tokens=6, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    content = reply.choices[0].logprobs.content
    assert len(content) == 6 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    sampled = [ask(client, "Ticket", max_tokens=8, temperature=1.0, seed=7, n=2) for _ in range(2)]
    assert [c.message.content for c in sampled[0].choices] == [c.message.content for c in sampled[1].choices]
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    shaped = ask(client, "Answer", max_tokens=40, response_format={
        "type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
    assert shaped.choices[0].finish_reason == "stop"  # the constraint ends the object, then the end of turn
    assert isinstance(json.loads(shaped.choices[0].message.content)["ok"], bool)


def test_a_free_sequence_is_reused_for_a_shared_prefix(served) -> None:
    import torch

    from honed.model.batch import Row, Sampling
    from honed.serve.llamacpp import LlamaBatch, LlamaCppModel

    model = LlamaCppModel(Path(served[0].extra["gguf"]), sequences=1, threads=1, context=256)  # not the server's
    fed: list[int] = []
    decode = model.decode
    model.decode = lambda entries: (fed.append(len(entries)), decode(entries))[1]  # type: ignore[method-assign]
    batch = LlamaBatch(model)
    logits = []
    prompts = [served[0].render([{"role": "user", "content": text}]) for text in ("Refund please", "Refund please",
                                                                               "Refund now")]
    for prompt in prompts:
        batch.admit([Row(prompt_ids=prompt, sampling=Sampling(max_tokens=4))])
        logits.append(batch.logits[0].clone())
        batch.keep([False])
    shared = next(i for i, (a, b) in enumerate(zip(prompts[0], prompts[2])) if a != b)
    assert fed == [len(prompts[0]), 1, len(prompts[2]) - shared]  # the same prompt: only its last token again
    assert torch.allclose(logits[0], logits[1], atol=1e-4) and not torch.allclose(logits[0], logits[2], atol=1e-4)
    fresh = LlamaBatch(LlamaCppModel(Path(served[0].extra["gguf"]), sequences=1, threads=1, context=256))
    fresh.admit([Row(prompt_ids=prompts[2], sampling=Sampling(max_tokens=4))])
    assert torch.allclose(fresh.logits[0], logits[2], atol=1e-4)  # the cut prefix + the rest = a fresh prefill


def test_concurrent_requests_match_sequential_greedy(client) -> None:
    prompts = [f"ticket {i}: " + "the app " * (i % 5) + "fails" for i in range(12)]

    def one(i: int) -> str:
        return ask(client, prompts[i], max_tokens=12).choices[0].message.content

    sequential = [one(i) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:  # more clients than the 8 sequences: some wait for a free one
        assert list(pool.map(one, range(12))) == sequential


def test_echoed_prompt_logprobs_match_the_torch_engine(client, torch_client) -> None:
    def echo(target: OpenAI):
        return target.completions.create(model="tiny", prompt="Hello there", max_tokens=3, echo=True, logprobs=1,
                                         temperature=0).choices[0]

    mine, theirs = echo(client), echo(torch_client)
    assert mine.text == theirs.text and mine.text.startswith("Hello there")
    assert mine.logprobs.tokens == theirs.logprobs.tokens and mine.logprobs.token_logprobs[0] is None
    for a, b in zip(mine.logprobs.token_logprobs[1:], theirs.logprobs.token_logprobs[1:]):
        assert abs(a - b) < 0.01  # f16 weights against float32: the same positions, nearly the same numbers


def test_greedy_answers_agree_with_the_torch_engine_at_the_parity_rate(client, torch_client, exported) -> None:
    from honed.evaluate.run_eval import read_examples
    from honed.model.decode import default_max_new_tokens
    from honed.model.tokenizers import run_tokenizer

    run, record = exported
    rundir = RunDir(run)
    holdout = read_examples(rundir.holdout_file())[:HOLDOUT]  # JSONL: no column mapping to read it with
    tokenizer = run_tokenizer(rundir)[0]
    references = [c.response_text() for c in holdout]
    max_new = default_max_new_tokens([len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references])
    chats = [[{"role": m.role, "content": m.content} for m in c.messages[:-1]] for c in holdout]

    def answers(target: OpenAI) -> list[str]:
        return [target.chat.completions.create(model="tiny", messages=m, temperature=0, max_tokens=max_new)
                .choices[0].message.content.strip() for m in chats]

    torch_answers, llama_answers = answers(torch_client), answers(client)
    agreement = sum(a == b for a, b in zip(torch_answers, llama_answers)) / len(holdout)
    assert agreement >= record["parity"]["identical"], (agreement, record["parity"])


def test_a_run_without_a_gguf_export_is_one_clear_error(exported, tmp_path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(exported[0], bare, ignore=shutil.ignore_patterns("exports", "requests.jsonl"))
    result = cli("serve", str(bare), "--engine", "llama.cpp", "--port", "1")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"honed export {bare} --to gguf" in result.output and len(result.output.strip().splitlines()) == 1

