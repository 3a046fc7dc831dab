"""The serving parts that need no server: stop strings while streaming, request validation, the vLLM
command line, target names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from honed.errors import ConfigError
from honed.model.loading import load_tokenizer
from honed.serve.loading import Target, parse_target
from honed.serve.prompts import max_tokens_for
from honed.serve.responses import token_bytes
from honed.serve.schemas import (
    ApiError, HARMLESS, HARMLESS_VALUES, REFUSED, ChatRequest, CompletionRequest, Limits, check_engine,
    parse_completion, parse_request,
)
from honed.serve.textstream import TextStream, held_back
from honed.serve.vllm import build_command, require_vllm

TINY = str(Path(__file__).resolve().parents[1] / "assets" / "tiny-llama")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TINY)


def _stream_all(tokenizer, ids: list[int], stop: list[str]) -> tuple[list[str], str, bool]:
    stream = TextStream(tokenizer, stop=stop)
    deltas = []
    for token in ids:
        delta, stopped = stream.push(token)
        deltas.append(delta)
        if stopped:
            return deltas, stream.text, True
    deltas.append(stream.flush())
    return deltas, stream.text, False


def test_deltas_join_to_the_decoded_text(tokenizer) -> None:
    ids = tokenizer("hello world, the app crashes again", add_special_tokens=False)["input_ids"]
    deltas, text, stopped = _stream_all(tokenizer, ids, [])
    assert "".join(deltas) == text == tokenizer.decode(ids, skip_special_tokens=True) and not stopped


def test_a_stop_string_split_across_tokens_is_never_sent(tokenizer) -> None:
    ids = tokenizer("hello world, the app crashes again", add_special_tokens=False)["input_ids"]
    deltas, text, stopped = _stream_all(tokenizer, ids, ["app cr"])
    assert stopped and text == "hello world, the " and "".join(deltas) == text
    assert not any("app" in d for d in deltas)


def test_held_back_counts_a_partial_stop() -> None:
    assert held_back("abc\n", stops=["\n\n"]) == 1 and held_back("abc", stops=["\n\n"]) == 0 and held_back("ab", stops=["abcd"]) == 2


def _body(**fields) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def test_request_validation_names_the_parameter() -> None:
    limits = Limits(max_tokens=100)
    assert parse_request(_body(temperature=None, stop="x"), limits=limits).stop_list == ["x"]
    cases = {"temperature": _body(temperature=3), "max_tokens": _body(max_tokens=101), "n": _body(n=9),
             "messages": _body(messages=[]), "stop": _body(stop=["a", "b", "c", "d", "e"])}
    for param, body in cases.items():
        with pytest.raises(ApiError) as caught:
            parse_request(body, limits=limits)
        assert caught.value.status == 400 and param in (caught.value.param or ""), param
    with pytest.raises(ApiError, match="not valid JSON"):
        parse_request(b"{", limits=limits)
    parts = parse_request(_body(messages=[{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                         {"type": "text", "text": "b"}]}]), limits=limits)
    assert parts.template_messages == [{"role": "user", "content": "ab"}]


def _openai_fields(module: str) -> set[str]:
    """Every field of the official client's request type (its TypedDict), stream flag included."""
    import importlib
    import typing

    params = importlib.import_module(f"openai.types.{module}")
    return set(typing.get_type_hints(params.CompletionCreateParamsBase)) | {"stream"}


def test_every_openai_field_is_read_harmless_or_refused() -> None:
    for module, model in (("chat.completion_create_params", ChatRequest), ("completion_create_params", CompletionRequest)):
        fields = _openai_fields(module)
        unclassified = fields - set(model.model_fields) - set(HARMLESS) - set(HARMLESS_VALUES) - set(REFUSED)
        assert not unclassified, f"{module}: {sorted(unclassified)} are neither read, harmless nor refused"


def test_refused_and_unknown_fields_are_400s_naming_them_and_defaults_pass() -> None:
    limits = Limits()
    for field, value in [("tools", [{"type": "function", "function": {"name": "f", "params": {}}}]),
                         ("tool_choice", "required"), ("functions", [{"name": "f"}]), ("audio", {"voice": "x"}),
                         ("reasoning_effort", "low"), ("modalities", ["text", "audio"]), ("typo_field", 1),
                         ("logprobs", 3), ("top_logprobs", 2), ("logit_bias", {"x": 1}), ("response_format", {"type": "xml"})]:
        with pytest.raises(ApiError) as caught:
            parse_request(_body(**{field: value}), limits=limits)
        assert caught.value.status == 400 and caught.value.param.split(".")[0] == field, (field, caught.value.message)
    harmless = dict(user="u", metadata={"a": "b"}, store=False, logprobs=False, tools=[], tool_choice="none",
                    modalities=["text"], service_tier="auto", parallel_tool_calls=True, seed=None, n=None)
    assert parse_request(_body(**harmless), limits=limits).n == 1
    with pytest.raises(ApiError, match="suffix") as caught:
        parse_completion(json.dumps({"model": "m", "prompt": "a", "suffix": "b"}).encode(), limits=limits)
    assert caught.value.param == "suffix"


def test_an_engine_refuses_what_it_does_not_implement() -> None:
    request = parse_request(_body(logprobs=True, top_logprobs=2, seed=1), limits=Limits())
    check_engine(request, engine="torch")
    with pytest.raises(ApiError) as caught:
        check_engine(request, engine="vllm")
    assert caught.value.param == "logprobs" and "--engine torch" in caught.value.message
    check_engine(parse_request(_body(seed=1, presence_penalty=0.5, logit_bias={"5": -100}), limits=Limits()), engine="vllm")


def test_completion_prompts_and_limits() -> None:
    limits = Limits(max_n=4)
    def parse(**fields):
        return parse_completion(json.dumps({"model": "m", **fields}).encode(), limits=limits)
    assert parse(prompt="a").prompts == ["a"] and parse(prompt=["a", "b"]).prompts == ["a", "b"]
    assert parse(prompt=[1, 2]).prompts == [[1, 2]] and parse(prompt=[[1], [2, 3]]).prompts == [[1], [2, 3]]
    assert parse(prompt="a").max_tokens == 16  # OpenAI's default on this endpoint
    for fields, param in [({"prompt": "a", "max_tokens": 0}, "max_tokens"), ({"prompt": []}, "prompt"),
                          ({"prompt": ["a", "b", "c"], "n": 2}, "n"), ({"prompt": "a", "best_of": 3}, "best_of"),
                          ({"prompt": "a", "logprobs": 21}, "logprobs")]:
        with pytest.raises(ApiError) as caught:
            parse(**fields)
        assert caught.value.param == param, fields
    assert parse(prompt="a", max_tokens=0, echo=True).max_tokens == 0


def test_token_bytes_are_exact_where_the_text_is_not(tokenizer) -> None:
    ids = tokenizer("café ünïcode", add_special_tokens=False)["input_ids"]
    assert bytes(b for i in ids for b in token_bytes(tokenizer, i)).decode("utf-8") == tokenizer.decode(ids)


def test_max_tokens_defaults_to_the_limit_and_respects_the_context() -> None:
    limits = Limits(max_tokens=64, max_prompt_tokens=100)
    request = parse_request(_body(), limits=limits)
    assert max_tokens_for(request, prompt_tokens=10, context_length=512, limits=limits) == 64
    assert max_tokens_for(request, prompt_tokens=90, context_length=100, limits=limits) == 10
    with pytest.raises(ApiError) as caught:
        max_tokens_for(parse_request(_body(max_tokens=20), limits=limits), prompt_tokens=90, context_length=100, limits=limits)
    assert caught.value.code == "context_length_exceeded" and "at most 10" in caught.value.message
    with pytest.raises(ApiError, match="above this server's limit of 100"):
        max_tokens_for(request, prompt_tokens=101, context_length=512, limits=limits)


def _adapter(tmp_path: Path, name: str, rank: int) -> Target:
    folder = tmp_path / name / "final"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank}))
    return Target(name=name, weights=folder, base=TINY, run=tmp_path / name, checkpoint="final")


def test_vllm_command_serves_every_adapter_on_one_base(tmp_path) -> None:
    targets = [_adapter(tmp_path, "support", 12), _adapter(tmp_path, "billing", 8)]
    command = build_command(targets, port=8123, extra_args=["--tensor-parallel-size", "2"], python="python")
    assert command[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--model") + 1] == str(Path(TINY).resolve())
    assert "--enable-lora" in command and command[command.index("--max-lora-rank") + 1] == "16"
    at = command.index("--lora-modules")
    assert command[at + 1 : at + 3] == [f"support={targets[0].weights.resolve()}", f"billing={targets[1].weights.resolve()}"]
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "8123"
    assert command[-2:] == ["--tensor-parallel-size", "2"]


def test_vllm_command_for_one_whole_model_and_refusals(tmp_path) -> None:
    export = Target(name="exp", weights=Path(TINY), base=None, run=None, checkpoint=TINY)
    command = build_command([export], port=9000)
    assert command[command.index("--served-model-name") + 1] == "exp" and "--enable-lora" not in command
    with pytest.raises(ConfigError, match="one base model"):
        build_command([export, _adapter(tmp_path, "a", 8)], port=9000)
    other = Target(name="o", weights=_adapter(tmp_path, "o", 8).weights, base="smollm2-135m", run=None, checkpoint="final")
    with pytest.raises(ConfigError, match="one base model"):
        build_command([_adapter(tmp_path, "x", 8), other], port=9000)


def test_vllm_missing_is_refused_clearly() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install vllm"):
            require_vllm()


def test_targets_are_named_and_checked(tmp_path) -> None:
    assert parse_target(TINY).name == "tiny-llama" and parse_target(f"prod={TINY}").name == "prod"
    with pytest.raises(ConfigError, match="no such run directory"):
        parse_target(str(tmp_path / "missing"))


def test_a_full_or_stopping_engine_refuses_at_once() -> None:
    from honed.model.batch import Sampling
    from honed.serve.engine import Engine, Job, QueueFull, ShuttingDown

    def job() -> Job:
        return Job(served=None, prompt_ids=[1], sampling=Sampling(max_tokens=1), emit=lambda _: None)  # type: ignore[arg-type]

    full = Engine(max_queue=1)  # not started: nothing leaves the queue
    full.submit(job())
    with pytest.raises(QueueFull) as caught:
        full.submit(job())
    assert not isinstance(caught.value, ShuttingDown) and full.queue_depth == 1
    stopping = Engine()
    stopping.start()
    stopping.stop()
    with pytest.raises(ShuttingDown):
        stopping.submit(job())



class _Batch:
    """A running batch that only records what the scheduler asks of it (no model)."""

    def __init__(self, *, joins: bool = True, fails: bool = False) -> None:
        self.rows: list = []
        self.joins, self.fails = joins, fails

    def __len__(self) -> int:
        return len(self.rows)

    def can_join(self) -> bool:
        return self.joins

    def admit(self, rows) -> None:
        if self.fails:
            raise RuntimeError("out of memory")
        self.rows.extend(rows)


def _engine_with(batch: _Batch, events: list, *, jobs: int, max_batch: int):
    """An Engine subclass that supplies only its batch (as LlamaCppEngine does), with `jobs` jobs queued."""
    from types import SimpleNamespace

    from honed.model.batch import Sampling
    from honed.model.stops import StopRule
    from honed.serve.engine import Engine, Job

    class OwnBatch(Engine):
        def new_batch(self, served):
            self.made = [*getattr(self, "made", []), served]
            return batch

    served = SimpleNamespace(model=object(), adapter=None, stops=StopRule(frozenset({2}), strings=("</s>",)),
                             tokenizer=None, pad_id=0)
    engine = OwnBatch(max_batch=max_batch)
    for i in range(jobs):
        engine.submit(Job(served=served, prompt_ids=[1, i], sampling=Sampling(max_tokens=4),  # type: ignore[arg-type]
                          emit=events.append, stop=["END"]))
    return engine


def test_the_admit_loop_prefills_into_the_batch_a_subclass_supplies() -> None:
    events: list = []
    batch = _Batch()
    engine = _engine_with(batch, events, jobs=3, max_batch=2)
    engine._admit()
    assert len(engine.made) == 1 and engine.running == 2 and engine.queue_depth == 1  # max_batch holds
    assert [row.prompt_ids for row in batch.rows] == [[1, 0], [1, 1]] and events == []
    assert batch.rows[0].payload.text.stops == ["END", "</s>"]  # the end of turn's string is a stop string
    engine._admit()
    assert len(engine.made) == 1 and engine.queue_depth == 1  # the same batch; no slot free yet


def test_a_batch_that_cannot_join_keeps_the_jobs_waiting_and_a_failed_prefill_fails_them() -> None:
    from honed.serve.engine import Failed

    events: list = []
    engine = _engine_with(_Batch(joins=False), events, jobs=2, max_batch=4)
    engine._admit()
    assert engine.queue_depth == 2 and engine.running == 0 and events == []
    assert [job.prompt_ids for job in engine._waiting] == [[1, 0], [1, 1]]  # back in their order
    engine = _engine_with(_Batch(fails=True), events, jobs=2, max_batch=4)
    engine._admit()
    assert engine.running == 0 and engine.queue_depth == 0
    assert len(events) == 2 and all(isinstance(e, Failed) and "out of memory" in e.message for e in events)


def test_the_llamacpp_engine_supplies_only_its_batch() -> None:
    from types import SimpleNamespace

    from honed.serve.engine import Engine
    from honed.serve.llamacpp import LlamaBatch, LlamaCppEngine

    batch = LlamaCppEngine().new_batch(SimpleNamespace(model=SimpleNamespace(sequences=3)))  # type: ignore[arg-type]
    assert isinstance(batch, LlamaBatch) and sorted(batch.cached) == [0, 1, 2]
    assert "_admit" not in LlamaCppEngine.__dict__ and LlamaCppEngine._admit is Engine._admit

def test_the_vllm_engine_passes_seed_penalties_and_logit_bias_through() -> None:
    from types import SimpleNamespace

    from honed.model.batch import Sampling
    from honed.model.stops import StopRule
    from honed.serve.engine import Job
    from honed.serve.vllm import VllmEngine

    served = SimpleNamespace(name="m", stop_ids=[2], stops=StopRule(frozenset({2})))
    sampling = Sampling(max_tokens=4, seed=3, presence_penalty=0.5, frequency_penalty=-0.5, logit_bias=((7, -100.0),))
    payload = VllmEngine("http://x")._payload(Job(served=served, prompt_ids=[1, 2], sampling=sampling, emit=print))  # type: ignore[arg-type]
    assert payload["seed"] == 3 and payload["presence_penalty"] == 0.5 and payload["frequency_penalty"] == -0.5
    assert payload["logit_bias"] == {"7": -100.0} and payload["prompt"] == [1, 2]
