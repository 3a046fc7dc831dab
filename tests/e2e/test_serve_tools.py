"""Tool calls through `honed serve` and the official `openai` client: a run trained on tool-calling data
answers `tools` with OpenAI `tool_calls` (its template's own format, arguments validated against the tool's
schema); a run trained without them, or an export whose template writes no tool calls, refuses `tools`.

A tiny Qwen2-style model (tests/assets/families.py: ChatML tokens, no template, so honed gives it its ChatML
template, which writes tools as Qwen 2.5 does) is fully fine-tuned for a few seconds on chats that always
call `get_weather` for Paris, so greedy decoding writes that call.
"""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from honed.serve.app import Settings
from honed.serve.engine import Engine
from honed.serve.loading import load_targets
from honed.serve.server import ServerThread
from tests.assets.families import build
from tests.helpers import TINY, cli

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TRAIN = ["--set", "num_threads=1", "--set", "batch_size=8", "--set", "epochs=60", "--lr", "3e-3", "--method", "full"]
STEPS = {"tools": "80", "plain": "2"}


def tool_chats(path: Path) -> Path:
    rows = [{"tools": TOOLS, "messages": [
        {"role": "user", "content": f"What is the weather like today? ({i})"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    ]} for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def plain_chats(path: Path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"hello {i}"}, {"role": "assistant", "content": "hi"}]}
            for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    # its own runs, not the shared trained_run: a Qwen2-style model fully fine-tuned on tool-call chats
    root = tmp_path_factory.mktemp("tools")
    model = build("qwen2", root / "qwen2")
    for name, data in (("tools", tool_chats(root / "t.jsonl")), ("plain", plain_chats(root / "p.jsonl"))):
        result = cli("train", "--data", str(data), "--model", str(model), "--out", str(root / name), *TRAIN,
                     "--max-steps", STEPS[name])
        assert result.exit_code == 0, result.output
    served = load_targets([str(root / "tools"), str(root / "plain"), f"export={TINY}"])
    with ServerThread(served, Engine(max_batch=4), settings=Settings()) as url:
        yield OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60), root


def ask(client: OpenAI, model: str, *, max_tokens: int = 64, **kwargs):
    # the tiny tokenizer spells the call in about 60 tokens, and the context is 512
    return client.chat.completions.create(model=model, temperature=0, max_tokens=max_tokens, tools=TOOLS,
                                          messages=[{"role": "user", "content": "What is the weather like today? (3)"}],
                                          **kwargs)


def test_a_tool_trained_run_answers_with_tool_calls(client) -> None:
    api, _ = client
    choice = ask(api, "tools").choices[0]
    assert choice.finish_reason == "tool_calls", choice
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_tool_calls_stream_as_one_delta_with_the_finish_reason(client) -> None:
    api, _ = client
    chunks = list(ask(api, "tools", stream=True))
    calls = [c for chunk in chunks for choice in chunk.choices for c in (choice.delta.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_named_tool_choice_makes_the_answer_that_call(client) -> None:
    api, _ = client
    named = {"type": "function", "function": {"name": "get_weather"}}
    choice = ask(api, "tools", tool_choice=named, max_tokens=30).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "get_weather"


def test_tool_choice_none_answers_in_text(client) -> None:
    api, _ = client
    choice = ask(api, "tools", tool_choice="none").choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason in ("stop", "length")


def test_arguments_that_break_the_schema_come_back_as_text(client) -> None:
    api, _ = client
    strict = [{"type": "function", "function": {**TOOLS[0]["function"], "parameters": {
        "type": "object", "properties": {"city": {"type": "integer"}}, "required": ["city"]}}}]
    choice = api.chat.completions.create(model="tools", temperature=0, max_tokens=64, tools=strict,
                                         messages=[{"role": "user", "content": "What is the weather like today? (3)"}])
    message = choice.choices[0].message
    assert message.tool_calls is None and "get_weather" in message.content


def test_the_request_log_records_the_tools_and_the_raw_answer(client) -> None:
    api, root = client
    ask(api, "tools")
    line = json.loads((root / "tools" / "requests.jsonl").read_text().splitlines()[-1])
    assert line["params"]["tools"] == ["get_weather"] and line["params"]["tool_choice"] == "auto"
    assert "<tool_call>" in line["output"]


@pytest.mark.parametrize(("model", "says"), [("plain", "not trained on tool calls"),
                                              ("export", "does not write tool calls")])
def test_a_model_that_cannot_call_tools_refuses_them(client, model: str, says: str) -> None:
    api, _ = client
    with pytest.raises(openai.BadRequestError) as caught:
        ask(api, model)
    assert caught.value.body["param"] == "tools" and says in caught.value.body["message"]
