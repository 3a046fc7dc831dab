"""`honed serve` under 200 concurrent clients: the request log keeps exactly one complete line per accepted
request (docs/request-log.md), and every refusal is an OpenAI-shaped error that leaves no line.

A copy of the shared tiny run (the log is written into it) is served by a real uvicorn server with a small
engine (16 rows decoding, 32 waiting), so part of the burst is refused with 429. The clients, on one asyncio
loop with httpx2 (the `openai` client's HTTP library), send a mix of whole and streamed chat completions,
streams dropped after the first chunk, clients that give up before the answer (whole or streamed), clients
that leave halfway through sending their body, and bad requests (invalid JSON, an unknown field, a model
that does not exist, a prompt over the limit). Each request carries its own marker in its message, so a log
line is matched to the client that sent it, and line separators other than \n (U+2028, U+2029, NEL), which a
reader's str.splitlines() would break a record at.

A client that gives up may or may not have been accepted before it left; the server's own refusal count
(/metrics) settles which: every request the server saw either has one log line or was counted refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from honed.monitor.traffic import read_request_log
from honed.runs.rundir import RunDir
from honed.serve.app import DISCONNECTED, Settings
from honed.serve.engine import Engine
from honed.serve.loading import load_targets
from honed.serve.schemas import Limits
from honed.serve.server import ServerThread
from tests.helpers import ROOT, copy_run

LIMITS = Limits(max_body_bytes=64 * 1024, max_tokens=64, max_prompt_tokens=200)
CLIENTS = 200
KINDS = ("whole", "stream", "stream_dropped", "whole_gives_up", "stream_gives_up", "leaves_mid_body",
         "bad_json", "unknown_field", "wrong_model", "too_long")
REFUSED_AS = {"bad_json": 400, "unknown_field": 400, "wrong_model": 404, "too_long": 400}
BUSY = (429, 503)  # any well-formed request may find the queue full
GIVE_UP_S = 0.02  # the read timeout of the clients that give up
# Characters str.splitlines() breaks at that JSON leaves unescaped: a user may paste any of them.
SEPARATORS = "\u2028\u2029\x85"


@dataclass
class Outcome:
    """What one client saw: the status (None when it gave up before the headers) and what it read."""

    index: int
    kind: str
    status: int | None = None  # None: it left before the headers
    body: dict[str, Any] | None = None  # a non-streamed response's JSON
    chunks: list[dict[str, Any]] = field(default_factory=list)  # a stream's data chunks, [DONE] excluded
    complete: bool = False  # read to its end ([DONE] for a stream)

    @property
    def marker(self) -> str:
        return f"client {self.index:03d}:"


def documented_fields() -> list[str]:
    doc = (ROOT / "docs" / "request-log.md").read_text(encoding="utf-8")
    return [line.split("`")[1] for line in doc.splitlines() if line.startswith("| `")]


def request_body(kind: str, marker: str) -> bytes:
    """The body a client of `kind` sends; its marker opens the user message."""
    text = f"{marker} the app crashes when I log in{SEPARATORS}and says nothing"
    body: dict[str, Any] = {"model": "support", "messages": [{"role": "user", "content": text}],
                            "max_tokens": 8, "temperature": 0}
    if kind in ("stream", "stream_dropped", "stream_gives_up"):
        body["stream"] = True
    if kind in ("stream_dropped", "whole_gives_up", "stream_gives_up"):
        body.update(max_tokens=48, ignore_eos=True)  # long enough to be cut off
    if kind == "bad_json":
        return json.dumps(body).encode()[:-7]
    if kind == "unknown_field":
        body["frobnicate"] = True
    if kind == "wrong_model":
        body["model"] = "nope"
    if kind == "too_long":
        body["messages"][0]["content"] = text + " word" * 400
    return json.dumps(body).encode()


async def one_client(client: httpx2.AsyncClient, index: int) -> Outcome:
    """Send one request of kind KINDS[index % len(KINDS)] and record what came back."""
    out = Outcome(index, KINDS[index % len(KINDS)])
    body = request_body(out.kind, out.marker)
    timeout = httpx2.Timeout(60.0, read=GIVE_UP_S) if out.kind.endswith("gives_up") else httpx2.Timeout(60.0)
    content = half_then_leave(body) if out.kind == "leaves_mid_body" else body
    try:
        async with client.stream("POST", "/v1/chat/completions", content=content, timeout=timeout,
                                 headers={"content-type": "application/json"}) as response:
            out.status = response.status_code
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                await read_stream(response, out)
            else:
                out.body = json.loads(await response.aread())
                out.complete = True
    except httpx2.TimeoutException:
        assert out.kind.endswith("gives_up"), f"{out.marker} {out.kind} timed out"
    except LeftMidBody:
        assert out.kind == "leaves_mid_body"
    return out


class LeftMidBody(Exception):
    """Raised by a client's body while it is being sent: the client goes away mid-upload."""


async def half_then_leave(body: bytes) -> AsyncIterator[bytes]:
    """Half the body (sent chunked), then the client fails and its connection closes."""
    yield body[: len(body) // 2]
    await asyncio.sleep(0.01)
    raise LeftMidBody()


async def read_stream(response: httpx2.Response, out: Outcome) -> None:
    """Read SSE chunks to [DONE]; a dropping client closes the response after the first chunk."""
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            out.complete = True
            return
        out.chunks.append(json.loads(line[len("data: "):]))
        if out.kind == "stream_dropped":
            return  # leaving `client.stream` closes the connection mid-stream


async def burst(url: str) -> list[Outcome]:
    limits = httpx2.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
    async with httpx2.AsyncClient(base_url=url, limits=limits) as client:
        return list(await asyncio.gather(*(one_client(client, i) for i in range(CLIENTS))))


class Records(logging.Handler):
    """Keeps every record at ERROR or above (a traceback in the server is a failure)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory) -> Path:
    return copy_run(trained_run, tmp_path_factory.mktemp("runs") / "support")


@contextlib.contextmanager
def server_errors() -> Iterator[Records]:
    """Collect what uvicorn, honed.serve and asyncio log at ERROR (call it after uvicorn configured its
    logging, which drops handlers already on its loggers)."""
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "honed.serve", "asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url) as response:
        return response.read().decode()


def log_lines(run: Path) -> list[str]:
    """The log's lines as its readers (honed monitor, data from-traffic) split them: str.splitlines."""
    path = RunDir(run).requests_log
    return path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []


def wait_until_quiet(url: str, run: Path, *, bounded_s: float = 60.0) -> None:
    """Until nothing decodes or waits and the log has not grown for a second (at most `bounded_s`)."""
    deadline, count, since = time.monotonic() + bounded_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        health = json.loads(get(url + "/health"))
        now = len(log_lines(run))
        if now != count or health["running"] or health["waiting"]:
            count, since = now, time.monotonic()
        elif time.monotonic() - since > 1.0:
            return
        time.sleep(0.1)


def refused_by_server(url: str) -> int:
    """Chat requests the server refused before accepting them (/metrics counts them under model "-")."""
    pattern = re.compile(r'^honed_requests_total\{model="-",status="\d+"\} (\S+)$', re.MULTILINE)
    return sum(int(float(n)) for n in pattern.findall(get(url + "/metrics")))


@dataclass
class Load:
    """The burst's outcomes, the log once the server is quiet, the server's refusals and its errors."""

    outcomes: list[Outcome]
    log: Path
    lines: list[str]
    refused: int
    errors: list[logging.LogRecord]


@pytest.fixture(scope="module")
def load(run) -> Load:
    served = load_targets([str(run)])
    server = ServerThread(served, Engine(max_batch=16, max_queue=32), settings=Settings(limits=LIMITS))
    with server_errors() as errors, server as url:
        outcomes = asyncio.run(burst(url))
        wait_until_quiet(url, run)
        lines, refused = log_lines(run), refused_by_server(url)
        return Load(outcomes, RunDir(run).requests_log, lines, refused, errors.records)


def by_marker(lines: list[str]) -> dict[str, dict[str, Any]]:
    entries = [json.loads(line) for line in lines]
    markers = [e["messages"][-1]["content"].split(" the app")[0] for e in entries]
    duplicated = [m for m, n in Counter(markers).items() if n > 1]
    assert not duplicated, f"requests logged twice: {duplicated}"
    return dict(zip(markers, entries))


def test_every_line_is_one_complete_record(load) -> None:
    lines = load.lines
    assert lines, "nothing was logged"
    fields = documented_fields()
    ids = []
    for number, line in enumerate(lines, 1):
        assert line.endswith("\n") and line.count("\n") == 1, f"line {number} is torn: {line[:100]!r}"
        entry = json.loads(line)
        assert list(entry) == fields, f"line {number} fields differ: {sorted(set(entry) ^ set(fields))}"
        assert entry["v"] == 1 and entry["model"] == "support" and entry["ts"].endswith("Z")
        assert entry["finish_reason"] in ("stop", "length", "error")
        assert (entry["error"] is None) == (entry["finish_reason"] != "error")
        assert entry["prompt_tokens"] > 0 and 0 <= entry["completion_tokens"] <= entry["params"]["max_tokens"]
        assert entry["latency_ms"] >= 0
        ids.append(entry["id"])
    assert len(ids) == len(set(ids)), "a response id appears twice"
    assert len(read_request_log(load.log)) == len(lines)  # what `honed monitor` reads


def test_one_line_per_accepted_request_none_per_refused(load) -> None:
    outcomes, lines, refused = load.outcomes, load.lines, load.refused
    logged = by_marker(lines)
    assert set(logged) <= {o.marker for o in outcomes}
    answered_refused = 0
    gave_up_unlogged = 0
    for o in outcomes:
        if o.kind == "leaves_mid_body":  # never accepted: its body never came whole
            assert o.status is None and o.marker not in logged, f"{o.marker} {o.kind}: {o.status}"
        if o.status == 200:
            assert o.marker in logged, f"{o.marker} {o.kind} was answered 200 and not logged"
        elif o.status is not None:
            answered_refused += 1
            assert o.marker not in logged, f"{o.marker} {o.kind} was refused with {o.status} and logged"
        elif o.marker not in logged:
            gave_up_unlogged += 1
    # A client that left before the headers was either accepted (one line) or refused (counted by the
    # server, also when it left before its body was whole): never neither, never both.
    assert refused - answered_refused == gave_up_unlogged
    assert len(lines) == CLIENTS - refused


def test_refusals_are_openai_errors(load) -> None:
    outcomes = load.outcomes
    for o in outcomes:
        if o.kind in REFUSED_AS:
            assert o.status == REFUSED_AS[o.kind] and o.complete, f"{o.marker} {o.kind}: {o.status}"
        elif o.status is not None:
            assert o.status == 200 or o.status in BUSY, f"{o.marker} {o.kind}: {o.status}"
        if o.status not in (None, 200):
            assert o.body is not None and list(o.body) == ["error"], o.body
            error = o.body["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    assert any(o.status in BUSY for o in outcomes), "the small queue refused nobody"


def test_answers_match_their_lines(load) -> None:
    outcomes, lines = load.outcomes, load.lines
    logged = by_marker(lines)
    for o in outcomes:
        if o.status != 200 or not o.complete:
            continue
        entry = logged[o.marker]
        if o.body is not None:
            choice = o.body["choices"][0]
            assert entry["id"] == o.body["id"] and entry["stream"] is False and entry["ttft_ms"] is None
            assert entry["output"] == choice["message"]["content"]
            assert entry["finish_reason"] == choice["finish_reason"] and entry["error"] is None
            assert entry["completion_tokens"] == o.body["usage"]["completion_tokens"]
        else:
            deltas = [c["choices"][0]["delta"] for c in o.chunks if c.get("choices")]
            text = "".join(d.get("content") or "" for d in deltas)
            finishes = [c["choices"][0]["finish_reason"] for c in o.chunks
                        if c.get("choices") and c["choices"][0].get("finish_reason")]
            assert entry["id"] == o.chunks[0]["id"] and entry["stream"] is True
            assert entry["output"] == text and [entry["finish_reason"]] == finishes and entry["error"] is None
            assert entry["ttft_ms"] is not None and entry["ttft_ms"] <= entry["latency_ms"]


def test_clients_that_leave_are_logged_as_disconnected(load) -> None:
    outcomes, lines = load.outcomes, load.lines
    logged = by_marker(lines)
    left = [o for o in outcomes if not o.complete and o.marker in logged]
    for o in left:
        entry = logged[o.marker]
        # Its answer may have ended before the server saw it leave (a normal line); else the line says so.
        if entry["error"] is not None:
            assert entry["error"] == DISCONNECTED and entry["finish_reason"] == "error", entry
        if o.chunks:
            assert entry["id"] == o.chunks[0]["id"] and entry["stream"] is True
    assert any(logged[o.marker]["error"] == DISCONNECTED for o in left), "no disconnect was logged"


def test_no_traceback_in_the_server(load) -> None:
    messages = [r.getMessage() + (f" ({r.exc_info[0].__name__})" if r.exc_info else "") for r in load.errors]
    assert not messages, messages
