"""What honed serve answers, in OpenAI's shapes: response bodies, stream chunks, tokens and log-probabilities.

The request side (fields, validation, limits, `ApiError`) is honed.serve.schemas; this module only shapes
what goes back. A streamed answer is a series of server-sent events, one chunk each, then `[DONE]`:

>>> sse(usage(3, 2))
'data: {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}\\n\\n'
>>> sse("[DONE]")
'data: [DONE]\\n\\n'
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


# ---- tokens as OpenAI shows them ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (each byte as a printable character), reversed."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def _byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return "ByteLevel" in repr(getattr(backend, "decoder", ""))


def token_bytes(tokenizer: Any, token_id: int) -> list[int]:
    """The exact bytes of one token (a token may hold part of a character, which its text cannot show).

        token_bytes(tokenizer, 100)  # e.g. [194]: the first byte of a two-byte character
    """
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if isinstance(piece, str):
        if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):  # sentencepiece's byte fallback
            return [int(piece[3:5], 16)]
        decoder = _byte_decoder()
        if _byte_level(tokenizer) and piece and all(ch in decoder for ch in piece):
            return [decoder[ch] for ch in piece]
    return list(tokenizer.decode([int(token_id)]).encode("utf-8"))


def token_text(tokenizer: Any, token_id: int) -> str:
    return str(tokenizer.decode([int(token_id)]))


def chat_logprob(tokenizer: Any, token: int, logprob: float, top: tuple[tuple[int, float], ...]) -> dict[str, Any]:
    """One entry of a chat choice's `logprobs.content`: token, logprob, bytes, top_logprobs."""
    def one(token_id: int, value: float) -> dict[str, Any]:
        return {"token": token_text(tokenizer, token_id), "logprob": value, "bytes": token_bytes(tokenizer, token_id)}

    return {**one(token, logprob), "top_logprobs": [one(t, v) for t, v in top]}


def completion_logprobs(tokenizer: Any, entries: list[tuple[int, float | None, tuple[tuple[int, float], ...]]], *,
                        offset: int = 0, with_top: bool = True) -> dict[str, Any]:
    """A completions choice's `logprobs`: tokens, token_logprobs, top_logprobs (the chosen token among the
    alternatives, as vLLM and lm-eval expect; None where there is no log-probability) and text_offset."""
    tokens, values, tops, offsets = [], [], [], []
    for token, logprob, top in entries:
        text = token_text(tokenizer, token)
        tokens.append(text)
        values.append(logprob)
        alternatives = {token_text(tokenizer, t): v for t, v in top}
        if logprob is not None:
            alternatives.setdefault(text, logprob)
        tops.append(alternatives if logprob is not None and with_top else None)
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


# ---- response bodies ------------------------------------------------------------------------------------


def new_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass
class Choice:
    """One finished answer of a request: what the response bodies are built from."""

    index: int
    text: str
    finish_reason: str
    logprobs: Any = None  # already in the endpoint's shape, or None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's `tool_calls` (then `text` is the content before them)


def completion_body(*, response_id: str, model: str, choices: list[Choice], prompt_tokens: int,
                    completion_tokens: int) -> dict[str, Any]:
    """A non-streamed `chat.completion` object."""
    return {
        "id": response_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": c.index, "message": _message(c), "logprobs": c.logprobs,
                     "finish_reason": c.finish_reason} for c in choices],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def _message(c: Choice) -> dict[str, Any]:
    if c.tool_calls:
        return {"role": "assistant", "content": c.text or None, "tool_calls": c.tool_calls}
    return {"role": "assistant", "content": c.text}


def chunk_body(*, response_id: str, model: str, delta: dict[str, Any], finish_reason: str | None = None,
               usage_counts: dict[str, int] | None = None, index: int = 0, logprobs: Any = None) -> dict[str, Any]:
    """One `chat.completion.chunk` of a streamed answer (no choices in the final usage chunk)."""
    choices = [] if usage_counts is not None else [
        {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    ]
    body: dict[str, Any] = {"id": response_id, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model, "choices": choices}
    if usage_counts is not None:
        body["usage"] = usage_counts
    return body


def text_completion_body(*, response_id: str, model: str, choices: list[Choice], usage_counts: dict[str, int] | None,
                         ) -> dict[str, Any]:
    """A `text_completion` object: the whole answer, or (streaming) one chunk of it."""
    body: dict[str, Any] = {
        "id": response_id, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": c.index, "text": c.text, "logprobs": c.logprobs, "finish_reason": c.finish_reason or None}
                    for c in choices],
    }
    if usage_counts is not None:
        body["usage"] = usage_counts
    return body


def sse(body: dict[str, Any] | str) -> str:
    """One server-sent event: `data: {...}\\n\\n` (or `data: [DONE]\\n\\n`)."""
    return f"data: {body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)}\n\n"
