"""The HTTP side: OpenAI-compatible routes on FastAPI, every handler async, no model work in the loop.

    POST /v1/chat/completions   non-streamed, or `stream: true` as server-sent events
    GET  /v1/models             the served names (run names)
    GET  /health                200 {"status": "ok"} while serving
    GET  /metrics               Prometheus text

Safe by default: `--api-key` is checked on /v1/* (constant-time compare); the body, `max_tokens` and the
prompt are bounded (413 / 400 in OpenAI's error shape); a full queue answers 429; a client that goes
away cancels its job. Each finished request (also a failed or abandoned one) is appended to the
request log (docs/request-log.md) and counted in the metrics.

>>> app = create_app(served, engine, settings=Settings(api_key="k"))  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from honed.model.batch import Sampling
from honed.serve.engine import Delta, Engine, Event, Failed, Finished, Job, QueueFull, ShuttingDown
from honed.serve.loading import ServedModel
from honed.serve.metrics import CONTENT_TYPE, Metrics
from honed.serve.requestlog import RequestLog, arrival_timestamp, record
from honed.serve.schemas import (
    ApiError, ChatRequest, Limits, chunk_body, completion_body, max_tokens_for, new_id, parse_request, sse, usage,
)

log = logging.getLogger("honed.serve")
DISCONNECTED = "client disconnected"


@dataclass(frozen=True)
class Settings:
    """Server settings that are not the models: auth, limits, the request log."""

    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    request_log: RequestLog = field(default_factory=RequestLog)


@dataclass
class Exchange:
    """One accepted request, from arrival to its log line."""

    chat: ChatRequest
    served: ServedModel
    job: Job
    events: asyncio.Queue[Event]
    response_id: str
    ts: str
    arrived: float
    prompt_tokens: int
    max_tokens: int
    done: bool = False


class Server:
    """The models, the engine and the settings behind the routes."""

    def __init__(self, served: list[ServedModel], engine: Engine, settings: Settings) -> None:
        self.models = {s.name: s for s in served}
        self.engine = engine
        self.settings = settings
        self.metrics = Metrics(engine)

    # ---- request checks ------------------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        if self.settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), self.settings.api_key.encode()):
            raise ApiError(401, "invalid API key: send `Authorization: Bearer <key>` with the key given to "
                           "`honed serve --api-key`", code="invalid_api_key")

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it passes the limit (not after reading it all)."""
        limit = self.settings.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body is {declared} bytes, above this server's limit of {limit} "
                           "(`honed serve --max-body-bytes`)", code="request_too_large")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise ApiError(413, f"the request body is above this server's limit of {limit} bytes "
                               "(`honed serve --max-body-bytes`)", code="request_too_large")
        return bytes(body)

    def model(self, name: str) -> ServedModel:
        if name not in self.models:
            raise ApiError(404, f"the model '{name}' does not exist; this server has: {', '.join(self.models)}",
                           param="model", code="model_not_found")
        return self.models[name]

    # ---- accepting a request -------------------------------------------------------------------------

    async def accept(self, request: Request) -> Exchange:
        """Check, parse, render and queue one chat completion request."""
        arrived, ts = time.perf_counter(), arrival_timestamp()
        self.authorize(request)
        chat = parse_request(await self.read_body(request), limits=self.settings.limits)
        served = self.model(chat.model)
        prompt_ids = await asyncio.to_thread(render_prompt_ids, served, chat)
        max_tokens = max_tokens_for(chat, prompt_tokens=len(prompt_ids), context_length=served.context_length,
                                    limits=self.settings.limits)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def emit(event: Event) -> None:  # called from the scheduler thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop is gone (shutdown): nobody is listening
                pass

        sampling = Sampling(max_tokens=max_tokens, temperature=chat.temperature, top_p=chat.top_p, seed=chat.seed)
        job = Job(served=served, prompt_ids=prompt_ids, sampling=sampling, emit=emit, stop=chat.stop_list,
                  ignore_eos=chat.ignore_eos)
        try:
            self.engine.submit(job)
        except ShuttingDown as exc:
            raise ApiError(503, f"{exc}; retry on another replica", kind="server_error", code="unavailable") from exc
        except QueueFull as exc:
            raise ApiError(429, f"the server is busy ({exc}); retry later", kind="rate_limit_error",
                           code="rate_limit_exceeded") from exc
        return Exchange(chat, served, job, events, new_id(), ts, arrived, len(prompt_ids), max_tokens)

    # ---- finishing a request -------------------------------------------------------------------------

    def finish(self, ex: Exchange, *, text: str, event: Finished | None, error: str | None, status: int) -> None:
        """Log and count a request once, however it ended."""
        if ex.done:
            return
        ex.done = True
        latency = time.perf_counter() - ex.arrived
        completion = event.completion_tokens if event is not None else ex.job.completion_tokens
        ttft = event.ttft_s if event is not None and ex.chat.stream else None
        mean = event.mean_logprob if event is not None else None
        params = {"max_tokens": ex.max_tokens, "temperature": ex.chat.temperature, "top_p": ex.chat.top_p,
                  "stop": ex.chat.stop, "seed": ex.chat.seed}
        entry = record(
            response_id=ex.response_id, ts=ex.ts, served=ex.served,
            messages=[m.model_dump(exclude_none=True) for m in ex.chat.messages], params=params, output=text,
            finish_reason=event.finish_reason if event is not None else "error", error=error,
            prompt_tokens=ex.prompt_tokens, completion_tokens=completion, latency_ms=latency * 1000,
            ttft_ms=ttft * 1000 if ttft is not None else None, mean_logprob=mean, stream=ex.chat.stream,
        )
        try:
            self.settings.request_log.append(ex.served, entry)
        except OSError as exc:  # the answer matters more than its log line; say so loudly
            log.error("could not write the request log for %s: %s", ex.served.name, exc)
        self.metrics.observe(ex.served.name, status=status, prompt_tokens=ex.prompt_tokens,
                             completion_tokens=completion, latency_s=latency,
                             ttft_s=event.ttft_s if event is not None else None)

    async def complete(self, request: Request, ex: Exchange) -> Response:
        """A non-streamed answer; a client that disconnects first cancels the job."""
        text, event = "", None
        answer = asyncio.ensure_future(_collect(ex.events))
        gone = asyncio.ensure_future(_wait_for_disconnect(request))
        try:
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not answer.done():
                answer.cancel()
                ex.job.cancel()
                self.finish(ex, text="", event=None, error=DISCONNECTED, status=499)
        if ex.done:
            return Response(status_code=499)
        text, event = answer.result()
        if isinstance(event, Failed):
            self.finish(ex, text=text, event=None, error=event.message, status=500)
            return JSONResponse(ApiError(500, event.message, kind="server_error").body(), status_code=500)
        self.finish(ex, text=text, event=event, error=None, status=200)
        return JSONResponse(completion_body(
            response_id=ex.response_id, model=ex.served.name, text=text, finish_reason=event.finish_reason,
            prompt_tokens=ex.prompt_tokens, completion_tokens=event.completion_tokens,
        ))

    async def stream(self, ex: Exchange) -> AsyncIterator[str]:
        """The SSE stream: a role chunk, content chunks, the finish chunk, usage if asked, [DONE]."""
        name, parts = ex.served.name, []
        try:
            yield sse(chunk_body(response_id=ex.response_id, model=name, delta={"role": "assistant", "content": ""}))
            while True:
                event = await ex.events.get()
                if isinstance(event, Delta):
                    parts.append(event.text)
                    yield sse(chunk_body(response_id=ex.response_id, model=name, delta={"content": event.text}))
                    continue
                if isinstance(event, Failed):
                    self.finish(ex, text="".join(parts), event=None, error=event.message, status=500)
                    yield sse(ApiError(500, event.message, kind="server_error").body())
                else:
                    self.finish(ex, text="".join(parts), event=event, error=None, status=200)
                    yield sse(chunk_body(response_id=ex.response_id, model=name, delta={},
                                         finish_reason=event.finish_reason))
                    if ex.chat.include_usage:
                        counts = usage(ex.prompt_tokens, event.completion_tokens)
                        yield sse(chunk_body(response_id=ex.response_id, model=name, delta={}, usage_counts=counts))
                yield sse("[DONE]")
                return
        finally:  # cancelled: the client went away mid-stream
            if not ex.done:
                ex.job.cancel()
                self.finish(ex, text="".join(parts), event=None, error=DISCONNECTED, status=499)


def render_prompt_ids(served: ServedModel, chat: ChatRequest) -> list[int]:
    """The request's prompt as token ids; a template that refuses the messages is a 400."""
    from jinja2.exceptions import TemplateError

    try:
        return served.render(chat.template_messages)
    except TemplateError as exc:
        raise ApiError(400, f"the model's chat template refused these messages ({exc})", param="messages") from exc


async def _collect(events: asyncio.Queue[Event]) -> tuple[str, Finished | Failed]:
    parts: list[str] = []
    while True:
        event = await events.get()
        if isinstance(event, Delta):
            parts.append(event.text)
        else:
            return "".join(parts), event


async def _wait_for_disconnect(request: Request) -> None:
    while True:  # the body is read: the next ASGI message is the disconnect
        if (await request.receive())["type"] == "http.disconnect":
            return


def create_app(served: list[ServedModel], engine: Engine, *, settings: Settings | None = None) -> FastAPI:
    """The FastAPI app; the engine thread starts and stops with it (after uvicorn drained requests)."""
    server = Server(served, engine, settings or Settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="honed", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if request.url.path.startswith("/v1/chat"):
            server.metrics.requests.labels(model="-", status=str(exc.status)).inc()
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        ex = await server.accept(request)
        if ex.chat.stream:
            return StreamingResponse(server.stream(ex), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await server.complete(request, ex)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        server.authorize(request)
        return {"object": "list", "data": [
            {"id": s.name, "object": "model", "created": s.created, "owned_by": "honed", "root": s.checkpoint,
             "parent": s.base} for s in server.models.values()
        ]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(server.models), "running": engine.running,
                "waiting": engine.queue_depth}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    return app
