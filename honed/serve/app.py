"""The HTTP side: OpenAI-compatible routes on FastAPI, every handler async, no model work in the loop.

    POST /v1/chat/completions   non-streamed, or `stream: true` as server-sent events
    POST /v1/completions        OpenAI's legacy completions: text or token-id prompts, echo, logprobs
    GET  /v1/models             the served names (run names)
    GET  /health                200 {"status": "ok"} while serving
    GET  /metrics               Prometheus text

Safe by default: `--api-key` is checked on /v1/* (constant-time compare); the body, `max_tokens` and the
prompt are bounded (413 / 400 in OpenAI's error shape); a full queue answers 429; a client that goes
away cancels its jobs. Every request field is honoured or refused (honed.serve.schemas); `n` answers
are `n` rows of one batch. Each finished request (also a failed or abandoned one) is appended to the
request log (docs/request-log.md) and counted in the metrics. Requests are parsed in honed.serve.schemas,
turned into token ids in honed.serve.prompts, and answered in the shapes of honed.serve.responses.

    app = create_app(served, engine, settings=Settings(api_key="k"))  # honed.serve.server runs it in uvicorn
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from honed.errors import HonedError
from honed.serve.engine import Delta, Engine, Event, Failed, Finished, Job, PromptScores, QueueFull, ShuttingDown
from honed.serve.loading import ServedModel
from honed.serve.metrics import CONTENT_TYPE, Metrics
from honed.serve.prompts import check_token_ids, max_tokens_for, prompts_of, vocab_size
from honed.serve.requestlog import RequestLog, arrival_timestamp, record
from honed.serve.responses import (
    Choice, chat_logprob, chunk_body, completion_body, completion_logprobs, new_id, sse, text_completion_body, usage,
)
from honed.serve.schemas import (
    ApiError, ChatRequest, CompletionRequest, Limits, check_engine, parse_completion, parse_request,
)
from honed.serve.toolcalls import answer_message, check_tools, tool_chunk

log = logging.getLogger("honed.serve")
DISCONNECTED = "client disconnected"


@dataclass(frozen=True)
class Settings:
    """Server settings that are not the models: auth, limits, the request log."""

    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    request_log: RequestLog = field(default_factory=RequestLog)


@dataclass
class Answer:
    """What one choice of a request has produced so far."""

    index: int
    prompt_text: str = ""  # the prompt as text (echo)
    parts: list[str] = field(default_factory=list)
    picks: list[Any] = field(default_factory=list)  # honed.model.batch.Pick, when logprobs are asked
    scores: tuple[Any, ...] = ()  # the prompt's honed.model.batch.Scored, with echo + logprobs
    finished: Finished | None = None
    offset: int = 0  # characters streamed so far (completions' text_offset)

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class Exchange:
    """One accepted request (its `n` choices, times the prompts of a completions request), from arrival
    to its log line."""

    request: ChatRequest | CompletionRequest
    served: ServedModel
    jobs: list[Job]
    events: asyncio.Queue[tuple[int, Event]]
    response_id: str
    ts: str
    arrived: float
    prompt_tokens: int
    max_tokens: int
    answers: list[Answer]
    done: bool = False

    @property
    def chat(self) -> bool:
        return isinstance(self.request, ChatRequest)

    def _counts(self) -> list[tuple[int, float | None]]:
        """(tokens, mean log-probability) of each choice: as its engine reported them when it finished
        (the vllm engine counts there), else as far as the torch engine got."""
        out = []
        for job, a in zip(self.jobs, self.answers):
            if a.finished is not None:
                out.append((a.finished.completion_tokens, a.finished.mean_logprob))
            else:
                tokens = job.completion_tokens
                out.append((tokens, job.logprob_sum / tokens if tokens else None))
        return out

    @property
    def completion_tokens(self) -> int:
        return sum(tokens for tokens, _ in self._counts())

    @property
    def mean_logprob(self) -> float | None:
        scored = [(tokens, mean) for tokens, mean in self._counts() if mean is not None and tokens]
        total = sum(tokens for tokens, _ in scored)
        return sum(tokens * mean for tokens, mean in scored) / total if total else None

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()


class Server:
    """The models, the engine and the settings behind the routes."""

    def __init__(self, served: list[ServedModel], engine: Engine, settings: Settings) -> None:
        self.models = {s.name: s for s in served}
        self.engine = engine
        self.settings = settings
        self.metrics = Metrics(engine)
        self._grammars: dict[tuple[str, str], Any] = {}  # (model, schema) -> compiled JsonConstraint

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
        """The body, refused with 413 as soon as it passes the limit (not after reading it all), and with 499
        when the client goes away before sending all of it."""
        limit = self.settings.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body is {declared} bytes, above this server's limit of {limit} "
                           "(`honed serve --max-body-bytes`)", code="request_too_large")
        body = bytearray()
        try:
            async for part in request.stream():
                body += part
                if len(body) > limit:
                    raise ApiError(413, f"the request body is above this server's limit of {limit} bytes "
                                   "(`honed serve --max-body-bytes`)", code="request_too_large")
        except ClientDisconnect as exc:  # gone mid-upload: refused and counted like any refusal, no traceback
            raise ApiError(499, "the client disconnected before its request body was complete",
                           code="client_disconnected") from exc
        return bytes(body)

    def model(self, name: str) -> ServedModel:
        if name not in self.models:
            raise ApiError(404, f"the model '{name}' does not exist; this server has: {', '.join(self.models)}",
                           param="model", code="model_not_found")
        return self.models[name]

    def constraint(self, served: ServedModel, schema: dict[str, Any]) -> Any:
        """The compiled JSON constraint of `schema` ({} = any object) for `served`, compiled once."""
        from honed.model.constrain import JsonConstraint, compile_json

        key = (served.name, json.dumps(schema, sort_keys=True))
        if key not in self._grammars:
            try:
                grammar = compile_json(schema or None, where="response_format")
                compiled = JsonConstraint(grammar, served.tokenizer, stop_ids=served.stop_ids,
                                          vocab_size=vocab_size(served))
            except HonedError as exc:
                raise ApiError(400, str(exc), param="response_format") from exc
            if len(self._grammars) >= 64:  # a bounded cache: forget the oldest schema
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = compiled
        return self._grammars[key]

    # ---- accepting a request -------------------------------------------------------------------------

    async def accept(self, request: Request, *, chat: bool) -> Exchange:
        """Check, parse, render and queue one request: a job per choice (and per prompt)."""
        arrived, ts = time.perf_counter(), arrival_timestamp()
        self.authorize(request)
        body, limits = await self.read_body(request), self.settings.limits
        parsed = parse_request(body, limits=limits) if chat else parse_completion(body, limits=limits)
        served = self.model(parsed.model)
        check_engine(parsed, engine=getattr(self.engine, "name", "torch"))
        if isinstance(parsed, ChatRequest):
            check_tools(parsed, served)
        if parsed.logit_bias:
            check_token_ids([t for t, _ in parsed.bias], vocab_size=vocab_size(served), param="logit_bias")
        prompts = await asyncio.to_thread(prompts_of, served, parsed)
        max_tokens = min(max_tokens_for(parsed, prompt_tokens=len(ids), context_length=served.context_length,
                                        limits=limits) for ids, _ in prompts)
        schema = parsed.schema if isinstance(parsed, ChatRequest) else None
        compiled = await asyncio.to_thread(self.constraint, served, schema) if schema is not None else None
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        jobs, answers = [], []
        for p, (ids, text) in enumerate(prompts):
            for choice in range(parsed.n):
                index = p * parsed.n + choice
                jobs.append(self._job(parsed, served, ids, index=index, choice=choice, max_tokens=max_tokens,
                                      loop=loop, events=events, constraint=compiled))
                # chat: `text` is the answer's prefill (a tool call's opening), which the answer starts with
                answers.append(Answer(index, parts=[text] if text else []) if chat else Answer(index, prompt_text=text))
        self._submit(jobs)
        prompt_tokens = sum(len(ids) for ids, _ in prompts)
        response_id = new_id("chatcmpl" if chat else "cmpl")
        return Exchange(parsed, served, jobs, events, response_id, ts, arrived, prompt_tokens, max_tokens, answers)

    @staticmethod
    def _job(parsed: ChatRequest | CompletionRequest, served: ServedModel, ids: list[int], *, index: int, choice: int,
             max_tokens: int, loop: asyncio.AbstractEventLoop, events: asyncio.Queue[tuple[int, Event]],
             constraint: Any) -> Job:
        def emit(event: Event) -> None:  # called from the scheduler thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, (index, event))
            except RuntimeError:  # the loop is gone (shutdown): nobody is listening
                pass

        if isinstance(parsed, ChatRequest):
            top, wants, scored = parsed.top_logprobs, parsed.logprobs, None
        else:
            top, wants = parsed.logprobs or 0, parsed.logprobs is not None
            scored = parsed.logprobs if parsed.echo and wants else None
        sampling = parsed.sampling(max_tokens=max_tokens, choice=choice, top_logprobs=top, prompt_logprobs=scored)
        return Job(served=served, prompt_ids=ids, sampling=sampling, emit=emit, stop=parsed.stop_list,
                   ignore_eos=parsed.ignore_eos, constraint=constraint.start() if constraint is not None else None,
                   logprobs=wants)

    def _submit(self, jobs: list[Job]) -> None:
        """Queue every job of a request, or none: one refused cancels those already queued."""
        for done, job in enumerate(jobs):
            try:
                self.engine.submit(job)
            except QueueFull as exc:
                for queued in jobs[:done]:
                    queued.cancel()
                if isinstance(exc, ShuttingDown):
                    raise ApiError(503, f"{exc}; retry on another replica", kind="server_error",
                                   code="unavailable") from exc
                raise ApiError(429, f"the server is busy ({exc}); retry later", kind="rate_limit_error",
                               code="rate_limit_exceeded") from exc

    # ---- finishing a request -------------------------------------------------------------------------

    def finish(self, ex: Exchange, *, error: str | None, status: int) -> None:
        """Log and count a request once, however it ended."""
        if ex.done:
            return
        ex.done = True
        latency = time.perf_counter() - ex.arrived
        first = ex.answers[0]
        event = first.finished if error is None else None
        ttft = event.ttft_s if event is not None and ex.request.stream else None
        params = ex.request.log_params(max_tokens=ex.max_tokens)
        if ex.chat:
            messages = [m.model_dump(exclude_none=True) for m in ex.request.messages]  # type: ignore[union-attr]
        else:
            params["endpoint"] = "completions"
            messages = [{"role": "user", "content": a.prompt_text} for a in ex.answers[:: ex.request.n]]
        entry = record(
            response_id=ex.response_id, ts=ex.ts, served=ex.served, messages=messages, params=params,
            output=first.text, finish_reason=event.finish_reason if event is not None else "error", error=error,
            prompt_tokens=ex.prompt_tokens, completion_tokens=ex.completion_tokens, latency_ms=latency * 1000,
            ttft_ms=ttft * 1000 if ttft is not None else None, mean_logprob=ex.mean_logprob, stream=ex.request.stream,
        )
        try:
            self.settings.request_log.append(ex.served, entry)
        except OSError as exc:  # the answer matters more than its log line; say so loudly
            log.error("could not write the request log for %s: %s", ex.served.name, exc)
        self.metrics.observe(ex.served.name, status=status, prompt_tokens=ex.prompt_tokens,
                             completion_tokens=ex.completion_tokens, latency_s=latency,
                             ttft_s=event.ttft_s if event is not None else None)

    async def complete(self, request: Request, ex: Exchange) -> Response:
        """A non-streamed answer; a client that disconnects first cancels the jobs."""
        answer = asyncio.ensure_future(_collect(ex))
        gone = asyncio.ensure_future(_wait_for_disconnect(request))
        try:
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not answer.done():
                answer.cancel()
                ex.cancel()
                self.finish(ex, error=DISCONNECTED, status=499)
        if ex.done:
            return Response(status_code=499)
        failed = answer.result()
        if failed is not None:
            ex.cancel()
            self.finish(ex, error=failed.message, status=500)
            return JSONResponse(ApiError(500, failed.message, kind="server_error").body(), status_code=500)
        self.finish(ex, error=None, status=200)
        choices = [self.choice(ex, a) for a in ex.answers]
        if ex.chat:
            return JSONResponse(completion_body(response_id=ex.response_id, model=ex.served.name, choices=choices,
                                                prompt_tokens=ex.prompt_tokens,
                                                completion_tokens=ex.completion_tokens))
        return JSONResponse(text_completion_body(response_id=ex.response_id, model=ex.served.name, choices=choices,
                                                 usage_counts=usage(ex.prompt_tokens, ex.completion_tokens)))

    def choice(self, ex: Exchange, a: Answer) -> Choice:
        """One whole answer in the endpoint's shape."""
        assert a.finished is not None
        tokenizer, request = ex.served.tokenizer, ex.request
        if isinstance(request, ChatRequest):
            logprobs = {"content": [chat_logprob(tokenizer, *p) for p in a.picks], "refusal": None} \
                if request.logprobs else None
            content, calls = answer_message(a.text, request, ex.served)
            reason = "tool_calls" if calls else a.finished.finish_reason
            return Choice(a.index, content, reason, logprobs, tool_calls=calls)
        echo = a.prompt_text if request.echo else ""
        logprobs = None
        if request.logprobs is not None:
            logprobs = completion_logprobs(tokenizer, [*(a.scores if request.echo else ()), *a.picks])
        return Choice(a.index, echo + a.text, a.finished.finish_reason, logprobs)

    async def stream(self, ex: Exchange) -> AsyncIterator[str]:
        """The SSE stream: chunks per choice as tokens come, each choice's finish, usage if asked, [DONE]."""
        try:
            for a in ex.answers:
                first = self._first_chunk(ex, a)
                if first is not None:
                    yield sse(first)
            waiting = len(ex.answers)
            while waiting:
                index, event = await ex.events.get()
                a = ex.answers[index]
                if isinstance(event, Failed):
                    ex.cancel()
                    self.finish(ex, error=event.message, status=500)
                    yield sse(ApiError(500, event.message, kind="server_error").body())
                    break
                if isinstance(event, Finished):
                    a.finished, waiting = event, waiting - 1
                    if waiting == 0:
                        self.finish(ex, error=None, status=200)
                body = self._chunk(ex, a, event)
                if body is not None:  # None: a tool-calling answer is sent whole when it finishes
                    yield sse(body)
            else:
                if ex.request.include_usage:
                    counts = usage(ex.prompt_tokens, ex.completion_tokens)
                    yield sse(chunk_body(response_id=ex.response_id, model=ex.served.name, delta={},
                                         usage_counts=counts) if ex.chat else
                              text_completion_body(response_id=ex.response_id, model=ex.served.name, choices=[],
                                                   usage_counts=counts))
            yield sse("[DONE]")
        finally:  # cancelled: the client went away mid-stream
            if not ex.done:
                ex.cancel()
                self.finish(ex, error=DISCONNECTED, status=499)

    def _first_chunk(self, ex: Exchange, a: Answer) -> dict[str, Any] | None:
        if ex.chat:
            return chunk_body(response_id=ex.response_id, model=ex.served.name, index=a.index,
                              delta={"role": "assistant", "content": ""})
        request = ex.request
        assert isinstance(request, CompletionRequest)
        if request.echo and request.logprobs is None:  # with logprobs, the echo waits for the prompt's scores
            a.offset += len(a.prompt_text)
            return self._text_chunk(ex, a, a.prompt_text, None)
        return None

    def _text_chunk(self, ex: Exchange, a: Answer, text: str, logprobs: Any, reason: str | None = None) -> dict[str, Any]:
        return text_completion_body(response_id=ex.response_id, model=ex.served.name,
                                    choices=[Choice(a.index, text, reason or "", logprobs)], usage_counts=None)

    def _chunk(self, ex: Exchange, a: Answer, event: Event) -> dict[str, Any] | None:
        """The chunk one engine event of choice `a` becomes (None: nothing to send yet)."""
        tokenizer, request, name = ex.served.tokenizer, ex.request, ex.served.name
        if isinstance(request, ChatRequest) and request.calls_tools:
            if isinstance(event, Delta):  # a tool-calling answer is read whole: its calls only parse complete
                a.parts.append(event.text)
                return None
            assert isinstance(event, Finished)
            return tool_chunk(a.text, request, ex.served, response_id=ex.response_id, index=a.index,
                              finish_reason=event.finish_reason)
        if isinstance(event, Finished):
            if ex.chat:
                return chunk_body(response_id=ex.response_id, model=name, delta={}, index=a.index,
                                  finish_reason=event.finish_reason)
            return self._text_chunk(ex, a, "", None, event.finish_reason)
        if isinstance(event, PromptScores):  # completions with echo and logprobs
            logprobs = completion_logprobs(tokenizer, list(event.tokens), offset=a.offset)
            a.offset += len(a.prompt_text)
            return self._text_chunk(ex, a, a.prompt_text, logprobs)
        assert isinstance(event, Delta)
        a.parts.append(event.text)
        if isinstance(request, ChatRequest):
            logprobs = {"content": [chat_logprob(tokenizer, *p) for p in event.tokens], "refusal": None} \
                if request.logprobs else None
            return chunk_body(response_id=ex.response_id, model=name, delta={"content": event.text}, index=a.index,
                              logprobs=logprobs)
        logprobs = completion_logprobs(tokenizer, list(event.tokens), offset=a.offset) \
            if request.logprobs is not None else None
        a.offset += len(event.text)
        return self._text_chunk(ex, a, event.text, logprobs)


async def _collect(ex: Exchange) -> Failed | None:
    """Read every choice's events until all finished (None) or one failed (that failure)."""
    waiting = len(ex.answers)
    while waiting:
        index, event = await ex.events.get()
        a = ex.answers[index]
        if isinstance(event, Delta):
            a.parts.append(event.text)
            a.picks.extend(event.tokens)
        elif isinstance(event, PromptScores):
            a.scores = event.tokens
        elif isinstance(event, Finished):
            a.finished, waiting = event, waiting - 1
        else:
            return event
    return None


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
        if request.url.path.startswith(("/v1/chat", "/v1/completions")):
            server.metrics.requests.labels(model="-", status=str(exc.status)).inc()
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    async def answer(request: Request, *, chat: bool) -> Response:
        ex = await server.accept(request, chat=chat)
        if ex.request.stream:
            return StreamingResponse(server.stream(ex), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await server.complete(request, ex)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await answer(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(request, chat=False)

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
