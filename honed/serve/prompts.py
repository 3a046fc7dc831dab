"""A request's prompts as the model's token ids: rendered, checked against its vocabulary, and the room they
leave to answer in its context.

Chat: the messages go through the run's chat template, exactly as training rendered them, then a forced
tool call's opening (honed.serve.toolcalls); completions: text is tokenized as is, token ids are checked.

>>> from honed.serve.schemas import parse_request
>>> request = parse_request(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}', limits=Limits())
>>> max_tokens_for(request, prompt_tokens=90, context_length=100, limits=Limits(max_tokens=64))
10
"""

from __future__ import annotations

from honed.serve.limits import Limits
from honed.serve.loading import ServedModel
from honed.serve.schemas import ApiError, ChatRequest, CompletionRequest
from honed.serve.toolcalls import prefill


def vocab_size(served: ServedModel) -> int:
    """The number of token ids the model has (its embedding may be padded past the tokenizer)."""
    config = getattr(served.model, "config", None)
    size = getattr(config, "vocab_size", None)
    return int(size) if isinstance(size, int) and size > 0 else len(served.tokenizer)


def prompts_of(served: ServedModel, request: ChatRequest | CompletionRequest) -> list[tuple[list[int], str]]:
    """The request's prompts as (token ids, text). Chat: the messages through the run's template (a
    template that refuses them is a 400); completions: text tokenized as is, or token ids checked."""
    from jinja2.exceptions import TemplateError

    if isinstance(request, ChatRequest):
        try:
            ids = served.render(request.template_messages, tools=request.template_tools)
        except TemplateError as exc:
            raise ApiError(400, f"the model's chat template refused these messages ({exc})",
                           param="messages") from exc
        start = prefill(request, served)  # a forced tool call's opening, which the answer continues
        return [(ids + list(served.tokenizer(start, add_special_tokens=False)["input_ids"]) if start else ids, start)]
    out = []
    for prompt in request.prompts:
        if isinstance(prompt, str):
            out.append((list(served.tokenizer(prompt)["input_ids"]), prompt))
        else:
            check_token_ids(prompt, vocab_size=vocab_size(served), param="prompt")
            out.append((prompt, served.tokenizer.decode(prompt)))
    return out


def check_token_ids(ids: list[int], *, vocab_size: int, param: str) -> None:
    """Token ids a client sent (prompt, logit_bias) must exist in the model's vocabulary."""
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ApiError(400, f"{param}: token id {bad[0]} is outside this model's vocabulary (0 to {vocab_size - 1})",
                       param=param)


def max_tokens_for(request: ChatRequest | CompletionRequest, *, prompt_tokens: int, context_length: int,
                   limits: Limits) -> int:
    """The max_tokens to decode with: asked or the server's limit, refused when the prompt leaves no room."""
    where = "messages" if isinstance(request, ChatRequest) else "prompt"
    if prompt_tokens > limits.max_prompt_tokens:
        raise ApiError(400, f"the prompt is {prompt_tokens} tokens, above this server's limit of "
                       f"{limits.max_prompt_tokens}; shorten the {where}", param=where,
                       code="context_length_exceeded")
    asked = request.asked_tokens if isinstance(request, ChatRequest) else request.max_tokens
    room = context_length - prompt_tokens
    if asked is not None and asked > room:
        raise ApiError(400, f"this model's maximum context length is {context_length} tokens; the {where} use "
                       f"{prompt_tokens} and max_tokens asks for {asked}; ask for at most {max(room, 0)}",
                       param="max_tokens", code="context_length_exceeded")
    if room < 1 and asked != 0:
        raise ApiError(400, f"the prompt is {prompt_tokens} tokens, at or above this model's maximum context length "
                       f"of {context_length}; shorten the {where}", param=where, code="context_length_exceeded")
    return min(limits.max_tokens if asked is None else asked, room)

