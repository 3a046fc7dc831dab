"""`--engine vllm` without a GPU: honed's front (same routes, limits, request log) forwards to a stand-in
for vLLM's /v1/completions that streams canned chunks the way vLLM does. The real vLLM cannot run here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from openai import OpenAI

from honed.serve.app import Settings
from honed.serve.loading import parse_target, vllm_front_models
from honed.serve.requestlog import RequestLog
from honed.serve.server import ServerThread
from honed.serve.vllm import VllmEngine

TINY = str(Path(__file__).parents[2] / "tests" / "assets" / "tiny-llama")
RECEIVED: list[dict[str, Any]] = []


def fake_vllm() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(request: Request) -> StreamingResponse:
        RECEIVED.append(await request.json())

        def chunks():
            for text, logprob, reason in (("Hel", -0.5, None), ("lo", -1.5, "length")):
                choice = {"index": 0, "text": text, "logprobs": {"token_logprobs": [logprob]}, "finish_reason": reason}
                yield f"data: {json.dumps({'choices': [choice]})}\n\n"
            yield f"data: {json.dumps({'choices': [], 'usage': {'prompt_tokens': 9, 'completion_tokens': 2}})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


def test_the_front_forwards_token_ids_and_logs_like_the_torch_engine(tmp_path) -> None:
    import threading
    import time

    import uvicorn

    from honed.serve.server import free_port, uvicorn_config

    port = free_port()
    backend = uvicorn.Server(uvicorn_config(fake_vllm(), host="127.0.0.1", port=port))
    threading.Thread(target=backend.run, daemon=True).start()
    while not backend.started:
        time.sleep(0.02)
    try:
        served = vllm_front_models([parse_target(f"tiny={TINY}")])
        log = tmp_path / "requests.jsonl"
        settings = Settings(request_log=RequestLog(single=log))
        with ServerThread(served, VllmEngine(f"http://127.0.0.1:{port}"), settings=settings) as url:
            client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
            reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=2, temperature=0)
    finally:
        backend.should_exit = True
    assert reply.choices[0].message.content == "Hello" and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 2
    sent = RECEIVED[-1]
    assert sent["model"] == "tiny" and sent["prompt"] == served[0].render([{"role": "user", "content": "hi"}])
    assert sent["stop_token_ids"] == served[0].stop_ids and sent["max_tokens"] == 2 and sent["stream"] is True
    assert "presence_penalty" not in sent and "logit_bias" not in sent
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["output"] == "Hello" and entry["mean_logprob"] == -1.0 and entry["run"] is None


def test_the_vllm_front_refuses_what_it_does_not_pass_through() -> None:
    import openai
    import pytest

    served = vllm_front_models([parse_target(f"tiny={TINY}")])
    engine = VllmEngine("http://127.0.0.1:9")  # never reached: every request here is refused first
    with ServerThread(served, engine, settings=Settings(request_log=RequestLog(enabled=False))) as url:
        client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        for fields, param in (({"logprobs": True}, "logprobs"), ({"n": 2}, "n"),
                              ({"response_format": {"type": "json_object"}}, "response_format")):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=2, **fields)
            assert caught.value.param == param and "--engine torch" in caught.value.message
