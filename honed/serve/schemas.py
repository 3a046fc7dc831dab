"""Requests in: OpenAI's request bodies parsed and checked; every refusal an `ApiError` in OpenAI's shape.

Errors look like OpenAI's (and vLLM's), so clients raise their usual exceptions:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}

No field is silently ignored. Every field of OpenAI's chat completions and completions requests is one of:

- read and honoured (`ChatRequest`, `CompletionRequest`; an engine that cannot honour one refuses it,
  see `ENGINE_PARAMS`);
- harmless: it cannot change the answer, clients send it by default, and it is accepted unread
  (`HARMLESS`, or `HARMLESS_VALUES` for fields harmless only at their default value, e.g. `modalities: ["text"]`);
- refused with a 400 whose `param` names it and whose message says what to do (`REFUSED`).

A field that is none of these (a typo, another server's extension) is a 400 too. `null` is read as the
field's default everywhere, as OpenAI does. What goes back is shaped in honed.serve.responses.

>>> request = parse_request(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}', limits=Limits())
>>> request.model, request.messages[0].content
('m', 'hi')
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from honed.serve.limits import Limits

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat; vLLM's default for both endpoints


class ApiError(Exception):
    """A refused request: HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# ---- the fields honed does not read --------------------------------------------------------------------

# Accepted and not read: none of them can change the answer.
HARMLESS: dict[str, str] = {
    "user": "an end-user id for OpenAI's abuse monitoring",
    "safety_identifier": "an end-user id for OpenAI's abuse monitoring",
    "metadata": "tags for OpenAI's stored completions",
    "store": "OpenAI's stored completions (honed's request log records every request anyway)",
    "service_tier": "OpenAI's processing tier",
    "prompt_cache_key": "a hint for OpenAI's prompt cache",
    "prompt_cache_retention": "a hint for OpenAI's prompt cache",
    "prompt_cache_options": "a hint for OpenAI's prompt cache",
    "prediction": "predicted output only makes OpenAI faster; the answer is the same",
}

# Harmless only at these values (what clients send by default); any other value is refused (REFUSED).
HARMLESS_VALUES: dict[str, tuple[Any, ...]] = {
    "modalities": (["text"],),
    "functions": ([],),
    "function_call": ("none", "auto"),
}

_FUNCTIONS = "`functions`/`function_call` are OpenAI's deprecated form of tools; send `tools` and `tool_choice`"
REFUSED: dict[str, str] = {
    "functions": _FUNCTIONS,
    "function_call": _FUNCTIONS,
    "audio": "honed serves text models; drop `audio` and `modalities`",
    "modalities": "honed serves text models: `modalities` may only be [\"text\"]",
    "reasoning_effort": "honed's models have no reasoning-effort setting; drop `reasoning_effort`",
    "verbosity": "honed's models have no verbosity setting; ask for brevity in the messages or set max_tokens",
    "web_search_options": "honed serve does not search the web; drop `web_search_options`",
    "moderation": "honed serve does not moderate; drop `moderation`",
    "suffix": "honed serve does not insert text between a prompt and a suffix; drop `suffix`",
    "best_of": "honed serve does not rank several answers server-side; drop `best_of` (or set it to n) and ask "
               "for `n` answers with `logprobs` to rank them yourself",
}

T = TypeVar("T", bound=BaseModel)


def screen(raw: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The fields of `raw` that `model` reads; nulls and harmless fields dropped, the rest refused.

    >>> screen({"model": "m", "user": "u", "seed": None}, CompletionRequest)
    {'model': 'm'}
    """
    kept: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:  # null is the default of every optional field
            continue
        if key in model.model_fields:
            kept[key] = value
        elif key in HARMLESS_VALUES and value in HARMLESS_VALUES[key]:
            continue
        elif key in HARMLESS:
            continue
        elif key in REFUSED:
            raise ApiError(400, f"{key}: {REFUSED[key]}", param=key, code="unsupported_parameter")
        else:
            raise ApiError(400, f"unknown field '{key}': honed serve reads every field of OpenAI's request and "
                           "refuses the others rather than ignore them; remove it (the field table in docs/serve.md "
                           "lists what each one does here)", param=key, code="unknown_parameter")
    return kept


# ---- the request models ---------------------------------------------------------------------------------


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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    include_obfuscation: bool = False  # OpenAI pads chunks against side channels; nothing to pad here


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    description: str | None = None
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None  # honed always constrains to the schema (strict or not)


class ResponseFormat(BaseModel):
    """`{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {...}}`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("`json_schema` is required with type json_schema, and only then")
        return self


class SamplingFields(BaseModel):
    """What both endpoints share: the model, sampling, stops, choices and streaming."""

    model_config = ConfigDict(extra="forbid")

    model: str
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM's extension: decode to max_tokens (benchmarks)

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids_and_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise ValueError(f"keys are token ids (strings of digits), not '{key}'")
            if not -100 <= bias <= 100:
                raise ValueError(f"biases lie between -100 and 100, not {bias} (token {key})")
        return value

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def bias(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(k), float(v)) for k, v in (self.logit_bias or {}).items())

    def engine_params(self) -> list[str]:
        """The parameters in use that an engine must implement (not every engine does; ENGINE_PARAMS)."""
        used = {"n": self.n > 1, "seed": self.seed is not None, "presence_penalty": self.presence_penalty != 0,
                "frequency_penalty": self.frequency_penalty != 0, "logit_bias": bool(self.logit_bias)}
        return [name for name, on in used.items() if on]

    def log_params(self, *, max_tokens: int) -> dict[str, Any]:
        """The request log's `params`: the documented five, then any other parameter set (docs/request-log.md)."""
        params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                                  "stop": self.stop, "seed": self.seed}
        defaults = {"n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "logit_bias": None}
        params.update({k: getattr(self, k) for k, d in defaults.items() if getattr(self, k) != d})
        if isinstance(self, ChatRequest) and self.calls_tools:
            choice = self.tool_choice
            params["tools"] = self.tool_names
            params["tool_choice"] = choice.function.name if isinstance(choice, NamedToolChoice) else (choice or "auto")
        return params

    def sampling(self, *, max_tokens: int, choice: int = 0, top_logprobs: int = 0,
                 prompt_logprobs: int | None = None) -> Any:
        """The decoding settings (honed.model.batch.Sampling) of choice `choice`; each choice of a seeded
        request gets its own seed (seed + choice), so n answers differ yet repeat."""
        from honed.model.batch import Sampling

        seed = self.seed + choice if self.seed is not None else None
        return Sampling(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p, seed=seed,
                        presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                        logit_bias=self.bias, top_logprobs=top_logprobs, prompt_logprobs=prompt_logprobs)


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema of the arguments object
    strict: bool | None = None  # honed always validates the arguments against `parameters`


class ToolDefinition(BaseModel):
    """One entry of `tools`: `{"type": "function", "function": {"name", "description", "parameters"}}`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str


class NamedToolChoice(BaseModel):
    """`tool_choice: {"type": "function", "function": {"name": ...}}`: call that function."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionName


class ChatRequest(SamplingFields):
    """The fields of POST /v1/chat/completions that honed reads."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[ToolDefinition] = Field(default_factory=list)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True

    @property
    def tool_names(self) -> list[str]:
        return [t.function.name for t in self.tools]

    @property
    def calls_tools(self) -> bool:
        """Whether the answer may be tool calls: tools given and tool_choice not "none"."""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def template_tools(self) -> list[dict[str, Any]] | None:
        """The tools as the chat template takes them (None: render no tools)."""
        return [t.model_dump(exclude_none=True) for t in self.tools] if self.calls_tools else None

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_needs_logprobs(cls, value: int, info: ValidationInfo) -> int:
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    @field_validator("response_format")
    @classmethod
    def _a_format_ends(cls, value: ResponseFormat | None, info: ValidationInfo) -> ResponseFormat | None:
        # A constrained answer ends where the grammar does; decoding past it has no allowed token.
        if value is not None and value.type != "text" and info.data.get("ignore_eos"):
            raise ValueError("ignore_eos cannot be combined with a JSON response_format; drop one of them")
        return value

    @property
    def asked_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def template_messages(self) -> list[dict[str, Any]]:
        return [m.to_template() for m in self.messages]

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema to constrain to ({} = any JSON object), or None for free text."""
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        return fmt.json_schema.json_schema if fmt.json_schema is not None else {}

    def engine_params(self) -> list[str]:
        used = {"logprobs": self.logprobs, "response_format": self.schema is not None}
        return [*super().engine_params(), *(name for name, on in used.items() if on)]


Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingFields):
    """The fields of POST /v1/completions that honed reads (OpenAI's legacy completions, as lm-eval uses)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    max_tokens: int = Field(default=16, ge=0)  # OpenAI's default for this endpoint
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    best_of: int | None = None

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: Prompt) -> Prompt:
        if isinstance(value, list) and (not value or any(isinstance(p, list) and not p for p in value)):
            raise ValueError("an empty prompt; send text or at least one token id")
        return value

    @field_validator("max_tokens")
    @classmethod
    def _zero_only_with_echo(cls, value: int, info: ValidationInfo) -> int:
        if value == 0 and not info.data.get("echo"):
            raise ValueError("max_tokens 0 only makes sense with echo: true (the prompt's log-probabilities)")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value != info.data.get("n", 1):
            raise ValueError(REFUSED["best_of"])
        return value

    @property
    def prompts(self) -> list[str | list[int]]:
        """The prompts, one per entry: text or token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(p, int) for p in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]

    def engine_params(self) -> list[str]:
        used = {"logprobs": self.logprobs is not None, "echo": self.echo}
        return [*super().engine_params(), *(name for name, on in used.items() if on)]


# The parameters each engine implements beyond the plain ones (model, messages/prompt, max_tokens,
# temperature, top_p, stop, stream): anything else a request uses is refused on that engine.
ENGINE_PARAMS: dict[str, frozenset[str]] = {
    "torch": frozenset({"n", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
                        "response_format", "echo"}),
    "vllm": frozenset({"seed", "presence_penalty", "frequency_penalty", "logit_bias"}),
    # the torch engine's scheduler and token choice on llama.cpp's logits (honed.serve.llamacpp)
    "llama.cpp": frozenset({"n", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
                            "response_format", "echo"}),
}


def check_engine(request: SamplingFields, *, engine: str) -> None:
    """Refuse a parameter the serving engine does not implement (a 400 naming it)."""
    supported = ENGINE_PARAMS.get(engine, ENGINE_PARAMS["torch"])
    for param in request.engine_params():
        if param not in supported:
            raise ApiError(400, f"{param} is not implemented on the {engine} engine of honed serve; drop it, or "
                           "serve with `--engine torch`", param=param, code="unsupported_parameter")


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    message = str(first["msg"]).removeprefix("Value error, ")
    return ApiError(400, f"{param}: {message}" if param else message, param=param)


def _parse(body: bytes, model: type[T]) -> T:
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(screen(raw, model))
    except ValidationError as exc:
        raise _validation_error(exc) from exc


def _check_limits(request: SamplingFields, *, asked: int | None, choices: int, limits: Limits) -> None:
    if choices > limits.max_n:
        raise ApiError(400, f"this request asks for {choices} answers, above this server's limit of {limits.max_n}; "
                       "ask for fewer (n times the prompts)", param="n")
    if asked is not None and asked > limits.max_tokens:
        raise ApiError(400, f"max_tokens is {asked}, above this server's limit of {limits.max_tokens}; ask for "
                       f"fewer (the limit is `honed serve --max-tokens-limit`)", param="max_tokens")


def _check_tool_choice(request: ChatRequest) -> None:
    """`tool_choice` must fit `tools`, and a tool-calling answer cannot also be scored or JSON-constrained."""
    choice = request.tool_choice
    if choice not in (None, "none", "auto") and not request.tools:
        raise ApiError(400, "tool_choice asks for a tool call but `tools` is empty; send the tools",
                       param="tool_choice")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in request.tool_names:
        raise ApiError(400, f"tool_choice names '{choice.function.name}', which is not among `tools` "
                       f"({', '.join(request.tool_names)})", param="tool_choice")
    if request.calls_tools and (request.logprobs or request.schema is not None):
        raise ApiError(400, "tools cannot be combined with logprobs or a JSON response_format here (the answer is "
                       "read back as tool calls); drop one of them", param="tools")


def parse_request(body: bytes, *, limits: Limits) -> ChatRequest:
    """Validate a chat completions body; every problem is an ApiError 400 naming the parameter."""
    request = _parse(body, ChatRequest)
    _check_limits(request, asked=request.asked_tokens, choices=request.n, limits=limits)
    _check_tool_choice(request)
    return request


def parse_completion(body: bytes, *, limits: Limits) -> CompletionRequest:
    """Validate a completions body; every problem is an ApiError 400 naming the parameter.

    >>> parse_completion(b'{"model": "m", "prompt": [1, 2, 3], "echo": true, "max_tokens": 0}', limits=Limits()).prompts
    [[1, 2, 3]]
    """
    request = _parse(body, CompletionRequest)
    _check_limits(request, asked=request.max_tokens, choices=request.n * len(request.prompts), limits=limits)
    return request
