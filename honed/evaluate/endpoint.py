"""An OpenAI-compatible chat endpoint as an evaluated system (`--baselines endpoint:NAME=URL[#model]`).

The endpoint gets the same prompts the base model gets, as chat messages: every message before the last
assistant turn (system prompt included; tools when the data has them), with greedy settings
(temperature 0) and the same `max_tokens` as local generation. It is called through the official `openai`
client; the key comes from $HONED_ENDPOINT_API_KEY, else $OPENAI_API_KEY (a local server that checks no key
gets a placeholder). $HONED_ENDPOINT_TIMEOUT sets the per-request timeout in seconds (default 120).

Any failure to reach or use the endpoint (connection refused, 401/403, unknown model, timeout) is one
`EndpointError` naming the endpoint and what to check, before or instead of a half-finished evaluation.

Usage: `outputs, stopped, tokens = answer(resolved(system), holdout, max_tokens=64)` (needs a server:
tests/unit/test_endpoint.py runs it against a local one).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from honed.data.types import Conversation
from honed.errors import HonedError
from honed.evaluate.systems import System

DEFAULT_TIMEOUT_S = 120.0
PARALLEL_REQUESTS = 4  # a few requests in flight: faster than one at a time, gentle on a local server


class EndpointError(HonedError):
    """An evaluated endpoint that cannot be reached or refuses the requests."""


def api_key() -> str:
    """$HONED_ENDPOINT_API_KEY, else $OPENAI_API_KEY, else a placeholder (local servers check none)."""
    return os.environ.get("HONED_ENDPOINT_API_KEY") or os.environ.get("OPENAI_API_KEY") or "not-needed"


def timeout_s() -> float:
    """$HONED_ENDPOINT_TIMEOUT in seconds (default 120); a value that is no positive number is an error."""
    raw = os.environ.get("HONED_ENDPOINT_TIMEOUT", "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise EndpointError(f"HONED_ENDPOINT_TIMEOUT={raw!r}: give the request timeout in seconds, e.g. 60")
    return value


def chat_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The messages before the last assistant turn, as the chat API takes them (no training `weight`).

    >>> from honed.data.types import Message
    >>> chat_messages(Conversation((Message("system", "S"), Message("user", "q"), Message("assistant", "a"))))
    [{'role': 'system', 'content': 'S'}, {'role': 'user', 'content': 'q'}]
    """
    end = conversation.last_assistant_index()
    before = conversation.messages if end is None else conversation.messages[:end]
    return [m.to_template() for m in before]


def explain(system: System, exc: Exception) -> EndpointError:
    """One clear EndpointError for whatever the openai client raised."""
    import openai

    where = f"endpoint {system.name} ({system.url})"
    if isinstance(exc, openai.APITimeoutError):
        why = (f"no answer within {timeout_s():g} s; check the server, or raise HONED_ENDPOINT_TIMEOUT")
    elif isinstance(exc, openai.APIConnectionError):
        why = "cannot connect (connection refused or host unknown); check the URL and that the server is running"
    elif isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        why = (f"the server refused the API key (HTTP {exc.status_code}); set HONED_ENDPOINT_API_KEY "
               "(or OPENAI_API_KEY) to a key it accepts")
    elif isinstance(exc, openai.NotFoundError):
        why = (f"HTTP 404 ({_detail(exc)}); the URL should end at the API root (often .../v1) and the model "
               "after # must be one the server has")
    elif isinstance(exc, openai.APIStatusError):
        why = f"HTTP {exc.status_code} ({_detail(exc)})"
    else:
        why = f"{type(exc).__name__}: {exc}"
    return EndpointError(f"{where}: {why}")


def _detail(exc: Any) -> str:
    return str(getattr(exc, "message", "") or exc).strip().splitlines()[0][:200]


def _client(system: System) -> Any:
    import openai

    return openai.OpenAI(base_url=system.url, api_key=api_key(), timeout=timeout_s(), max_retries=1)


def resolved(system: System) -> System:
    """The endpoint system with its model id settled: the one after # in the spec, else the first model the
    endpoint lists. Listing the models first also checks the URL and the key before any model loads.
    """
    import openai

    client = _client(system)
    try:
        listed = [m.id for m in client.models.list()]
    except openai.NotFoundError as exc:  # a server without /models: fine when the model is named
        if system.endpoint_model:
            return system
        raise EndpointError(f"endpoint {system.name} ({system.url}) does not list its models; name one: "
                            f"endpoint:{system.name}={system.url}#MODEL") from exc
    except openai.OpenAIError as exc:
        raise explain(system, exc) from exc
    if system.endpoint_model:
        return system
    if not listed:
        raise EndpointError(f"endpoint {system.name} ({system.url}) lists no model; name one: "
                            f"endpoint:{system.name}={system.url}#MODEL")
    return dataclasses.replace(system, endpoint_model=listed[0])


def _ask(client: Any, model: str, conversation: Conversation, *, max_tokens: int) -> tuple[str, bool, int]:
    kwargs: dict[str, Any] = {"tools": conversation.tools} if conversation.tools else {}
    response = client.chat.completions.create(
        model=model, messages=chat_messages(conversation), temperature=0, max_tokens=max_tokens, **kwargs
    )
    choice = response.choices[0]
    tokens = response.usage.completion_tokens if response.usage is not None else 0
    return choice.message.content or "", choice.finish_reason == "stop", int(tokens or 0)


def answer(
    system: System, holdout: Sequence[Conversation], *, max_tokens: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[str], list[bool], int]:
    """(outputs, stopped, completion tokens) of the endpoint for every holdout conversation, in order.

    The first request goes alone, so a wrong URL or key fails at once with one message.
    """
    import openai

    client = _client(system)
    model = system.endpoint_model or resolved(system).endpoint_model
    assert model is not None

    def one(conversation: Conversation) -> tuple[str, bool, int]:
        result = _ask(client, model, conversation, max_tokens=max_tokens)
        if progress is not None:
            progress(1)
        return result

    try:
        results = [one(holdout[0])] if holdout else []
        with ThreadPoolExecutor(max_workers=PARALLEL_REQUESTS) as pool:
            results += list(pool.map(one, holdout[1:]))
    except openai.OpenAIError as exc:
        raise explain(system, exc) from exc
    return [r[0] for r in results], [r[1] for r in results], sum(r[2] for r in results)
