"""`tools` and `tool_choice` on /v1/chat/completions: checked, rendered by the run's template, read back.

The front does all of it, so every engine serves tools alike: the tools go into the prompt through the
run's chat template (the format the run was trained on), `tool_choice` "required" or a named function
starts the answer with the template's call prefix (a prefill: the model only continues a call), and the
finished answer is parsed with the template's own format (honed.model.tools) into OpenAI `tool_calls`,
each call's arguments validated against its tool's `parameters` schema. An answer that is not a valid
call comes back as plain content with finish_reason "stop", as vLLM's tool parsers do. Streamed, a
tool-calling answer is sent in one chunk when it finishes (`tool_chunk`): its calls parse only whole.

    prefill(request, served)  # named tool_choice, ChatML: '<tool_call>\\n{"name": "get_weather", "arguments": '
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from honed.model.tools import check_arguments, parse_calls
from honed.serve.loading import ServedModel
from honed.serve.responses import chunk_body
from honed.serve.schemas import ApiError, ChatRequest, NamedToolChoice


def check_tools(request: ChatRequest, served: ServedModel) -> None:
    """A 400 naming `tools` when the model cannot call them (see ServedModel.tools_refusal)."""
    if not request.calls_tools:
        return
    refusal = served.tools_refusal()
    if refusal is not None:
        raise ApiError(400, refusal, param="tools", code="unsupported_parameter")


def prefill(request: ChatRequest, served: ServedModel) -> str:
    """The text the answer must start with: the call prefix for "required", plus the function's name for a
    named tool_choice; "" when the model may answer freely."""
    choice, fmt = request.tool_choice, served.tool_format
    if not request.calls_tools or fmt is None or choice in (None, "auto"):
        return ""
    opening = fmt.prefix + "\n" if fmt.prefix else ""
    if isinstance(choice, NamedToolChoice):
        return f'{opening}{{"{fmt.name_key}": {json.dumps(choice.function.name)}, "{fmt.arguments_key}": '
    return opening


def answer_message(text: str, request: ChatRequest, served: ServedModel) -> tuple[str, list[dict[str, Any]] | None]:
    """(content, tool_calls) of a finished answer: its calls in OpenAI's shape when it is a valid call of the
    request's tools (only the first with parallel_tool_calls false), else (text, None)."""
    if not request.calls_tools or served.tool_format is None:
        return text, None
    parsed = parse_calls(text, served.tool_format)
    if not parsed.calls:
        return text, None
    tools = [t.model_dump(exclude_none=True) for t in request.tools]
    if any(check_arguments(call, tools) is not None for call in parsed.calls):
        return text, None
    calls = parsed.calls if request.parallel_tool_calls else parsed.calls[:1]
    return parsed.content, [
        {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
         "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
        for call in calls
    ]


def tool_chunk(text: str, request: ChatRequest, served: ServedModel, *, response_id: str, index: int,
               finish_reason: str) -> dict[str, Any]:
    """The one `chat.completion.chunk` a streamed tool-calling answer is sent as, once it finished: its calls
    as `tool_calls` (each with its index, finish_reason "tool_calls"), or its text as content.

        tool_chunk(answer_text, request, served, response_id="chatcmpl-1", index=0, finish_reason="stop")
    """
    content, calls = answer_message(text, request, served)
    delta: dict[str, Any] = {"content": content} if calls is None else {
        "content": content or None, "tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}
    return chunk_body(response_id=response_id, model=served.name, delta=delta, index=index,
                      finish_reason="tool_calls" if calls else finish_reason)
