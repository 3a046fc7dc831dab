"""Prompt token ids: the one way a prompt is rendered, for evaluation, serving, export parity and monitoring.

Training renders whole conversations (honed.data.render, which also decides the loss mask); everything
that generates renders the turns before an answer plus the template's assistant header, with the same
template, so what a model is asked always looks like what it was trained on.

Usage: `render_messages([{"role": "user", "content": "hi"}], tokenizer)` gives the prompt's token ids, the
assistant header last (tests/unit/test_render.py: the training prefix up to that header, exactly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jinja2.exceptions import TemplateError

from honed.errors import DataError

if TYPE_CHECKING:  # a type only: importing honed.data here would make a model <-> data circle
    from honed.data.types import Conversation


def render_messages(messages: list[dict[str, Any]], tokenizer: Any, *, tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Token ids of `messages` (template dicts) followed by the assistant header.

    Raises jinja2's TemplateError when the template refuses the messages (callers say so their way).
    """
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_prompt(conversation: Conversation, tokenizer: Any) -> list[int]:
    """Token ids of everything before the last assistant turn plus the assistant header: the input a model
    generates the answer from (same template as training, so they always agree). A plain-text example has
    no prompt: its input is the BOS token alone (empty without one)."""
    if conversation.plain:
        bos = getattr(tokenizer, "bos_token", None) or ""
        return list(tokenizer(bos, add_special_tokens=False)["input_ids"]) if bos else []
    end = conversation.last_assistant_index()
    end = len(conversation.messages) if end is None else end
    messages = [m.to_template() for m in conversation.messages[:end]]
    try:
        return render_messages(messages, tokenizer, tools=conversation.tools)
    except TemplateError as exc:
        where = conversation.source or "a conversation"
        raise DataError(f"{where}: the model's chat template refused this conversation ({exc}); "
                        "reorder or fix its turns, or use a model whose template accepts them") from exc
