"""How the baselines prompt a base model that ships no chat template: as plain text, not through turn
markers it has never seen.

A model without a chat template of its own gets its family's template (honed.model.template), and the
tuned model learns those turn markers in training. The base model never did. Gemma 3 270M base, given
few-shot examples as `<start_of_turn>` turns, writes the right label and then a stray token where
`<end_of_turn>` belongs (its turn-token rows are untrained), then a stray token for `<start_of_turn>`, and
runs on: on banking77 its few-shot baselines scored 0.001-0.002 label accuracy while 67% of the answers
began with the right label. Nobody prompts a base model that way. It is prompted as plain text, the way
few-shot evaluations of base models do it (GPT-3's paper, lm-eval):

    {system prompt}

    Input: {user turn}
    Output: {assistant turn}

    Input: {the holdout question}
    Output:

Its answer ends where it starts the next example (the stop string "\\nInput:"), and is then cut where the
task's answers end (honed.evaluate.answer_end). A model that ships a template (SmolLM2, every instruct or
chat model) was trained on its turns, and is prompted through them, as the tuned model is.

>>> from honed.data.types import Conversation, Message
>>> shot = Conversation((Message("user", "hi"), Message("assistant", "greeting")))
>>> print(plain_text(Conversation((Message("system", "Label it."), *shot.messages, Message("user", "bye"),
...                                Message("assistant", "farewell")))))
Label it.
<BLANKLINE>
Input: hi
Output: greeting
<BLANKLINE>
Input: bye
Output:
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from honed.data.types import Conversation
    from honed.model.stops import StopRule

ROLE_LABELS = {"user": "Input", "assistant": "Output", "tool": "Tool result"}
NEXT_EXAMPLE = "\nInput:"  # where a plainly prompted model has finished its answer and begins another example


def ships_chat_template(spec: str) -> bool:
    """Whether the model's own files carry a chat template (then it knows its turns)."""
    from honed.model.loading import load_tokenizer

    own = getattr(load_tokenizer(spec), "chat_template", None)
    return isinstance(own, str) and bool(own.strip())


def plain_text(conversation: Conversation) -> str:
    """Everything before the conversation's last answer as plain text, ending in "Output:"."""
    end = conversation.last_assistant_index()
    messages = conversation.messages[: len(conversation.messages) if end is None else end]
    parts: list[str] = []
    turns: list[str] = []
    for message in messages:
        if message.role == "system":
            parts.append(message.content.strip())
        else:
            label = ROLE_LABELS.get(message.role, message.role.capitalize())
            turns.append(f"{label}: {message.content.strip()}")
            if message.role == "assistant":
                parts.append("\n".join(turns))
                turns = []
    turns.append(f"{ROLE_LABELS['assistant']}:")
    parts.append("\n".join(turns))
    return "\n\n".join(parts)


def plain_prompt(conversation: Conversation, tokenizer: Any) -> list[int]:
    """Token ids of `plain_text`, after the tokenizer's BOS token where it has one (Gemma needs it)."""
    bos = getattr(tokenizer, "bos_token", None) or ""
    return list(tokenizer(bos + plain_text(conversation), add_special_tokens=False)["input_ids"])


def plain_stops(tokenizer: Any, model: Any) -> StopRule:
    """The model's usual stops (end of turn, eos) and the start of a next example."""
    from honed.model.decode import stops_for

    return stops_for(tokenizer, model, extra=(NEXT_EXAMPLE,))
