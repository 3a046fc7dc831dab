"""Chat completion requests in, OpenAI-shaped bodies out; every refusal an `ApiError` in OpenAI's shape.

Errors look like OpenAI's (and vLLM's), so clients raise their usual exceptions:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}

Unknown request fields are accepted and ignored (clients send `user`, `logprobs: false`, ...), except
the ones honed cannot honour, which are refused rather than silently ignored (`n` > 1, tools).

>>> request = parse_request(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}', limits=Limits())
>>> request.model, request.messages[0].content
('m', 'hi')
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (`honed serve --max-tokens-limit ...`)."""

    max_body_bytes: int = 1 << 20
    max_tokens: int = 1024  # the largest max_tokens a request may ask for; also the default
    max_prompt_tokens: int = 4096


class ApiError(Exception):
    """A refused request: HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class ChatMessage(BaseModel):
    """One message as OpenAI sends it; `content` may be a string or a list of text parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def to_template(self) -> dict[str, Any]:
        """The dict a chat template expects: parts joined into text, `developer` read as `system`."""
        out = self.model_dump(exclude_none=True)
        out["role"] = "system" if self.role == "developer" else self.role
        if isinstance(self.content, list):
            out["content"] = "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        out.setdefault("content", "")
        return out


class ChatRequest(BaseModel):
    """The fields of POST /v1/chat/completions that honed reads."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: bool = False  # vLLM's extension: decode to max_tokens (benchmarks)

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        return 1.0 if value is None else value  # OpenAI's default for both

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def template_messages(self) -> list[dict[str, Any]]:
        return [m.to_template() for m in self.messages]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    return ApiError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param)


def parse_request(body: bytes, *, limits: Limits) -> ChatRequest:
    """Validate a request body; every problem is an ApiError 400 naming the parameter."""
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = ChatRequest.model_validate(raw)
    except ValidationError as exc:
        raise _validation_error(exc) from exc
    if request.n != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    if raw.get("tools") or raw.get("functions"):
        raise ApiError(400, "tools and function calling are not supported by honed serve", param="tools")
    asked = request.max_completion_tokens or request.max_tokens
    if asked is not None and asked > limits.max_tokens:
        raise ApiError(400, f"max_tokens is {asked}, above this server's limit of {limits.max_tokens}; ask for "
                       f"fewer (the limit is `honed serve --max-tokens-limit`)", param="max_tokens")
    return request


def max_tokens_for(request: ChatRequest, *, prompt_tokens: int, context_length: int, limits: Limits) -> int:
    """The max_tokens to decode with: asked or the server's limit, refused when the prompt leaves no room."""
    if prompt_tokens > limits.max_prompt_tokens:
        raise ApiError(400, f"the prompt is {prompt_tokens} tokens, above this server's limit of "
                       f"{limits.max_prompt_tokens}; shorten the messages", param="messages",
                       code="context_length_exceeded")
    asked = request.max_completion_tokens or request.max_tokens
    room = context_length - prompt_tokens
    if asked is not None and asked > room:
        raise ApiError(400, f"this model's maximum context length is {context_length} tokens; the messages use "
                       f"{prompt_tokens} and max_tokens asks for {asked}; ask for at most {max(room, 0)}",
                       param="max_tokens", code="context_length_exceeded")
    if room < 1:
        raise ApiError(400, f"the prompt is {prompt_tokens} tokens, at or above this model's maximum context length "
                       f"of {context_length}; shorten the messages", param="messages", code="context_length_exceeded")
    return min(asked or limits.max_tokens, room)


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(*, response_id: str, model: str, text: str, finish_reason: str, prompt_tokens: int,
                    completion_tokens: int) -> dict[str, Any]:
    """A non-streamed `chat.completion` object."""
    return {
        "id": response_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": finish_reason}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk_body(*, response_id: str, model: str, delta: dict[str, Any], finish_reason: str | None = None,
               usage_counts: dict[str, int] | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk` of a streamed answer (no choices in the final usage chunk)."""
    choices = [] if usage_counts is not None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    ]
    body: dict[str, Any] = {"id": response_id, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model, "choices": choices}
    if usage_counts is not None:
        body["usage"] = usage_counts
    return body


def sse(body: dict[str, Any] | str) -> str:
    """One server-sent event: `data: {...}\\n\\n` (or `data: [DONE]\\n\\n`)."""
    return f"data: {body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)}\n\n"
