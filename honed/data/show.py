"""Preview what training will see: examples rendered through the model's chat template, token by token,
with the supervised tokens (the loss is computed on them) told apart from the masked ones.

    views = preview(conversations, tokenizer, n=3)
    print_preview(Console(), views, template="chat template: model (end of turn '<|im_end|>'): ...")

The ids and the mask come from `honed.data.render.render`, the same function training uses, so what is
shown is exactly what is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rich.console import Console
from rich.text import Text

from honed.data.render import render, supervised_spans
from honed.data.types import Conversation

SUPERVISED_STYLE = "bold green"
MASKED_STYLE = "dim"


@dataclass(frozen=True)
class TokenView:
    """One token: its text (as it appears in the rendered template), its id, and whether it is a target."""

    text: str
    id: int
    supervised: bool


@dataclass(frozen=True)
class ExampleView:
    """One rendered example. `full_length` is its length before `max_length` cut it (`truncated`)."""

    source: str | None
    tokens: list[TokenView]
    full_length: int
    truncated: bool

    @property
    def num_supervised(self) -> int:
        return sum(t.supervised for t in self.tokens)

    def summary(self) -> str:
        """'42 tokens, 12 supervised (28.6%)'."""
        n = len(self.tokens)
        share = 100 * self.num_supervised / n if n else 0.0
        return f"{n} tokens, {self.num_supervised} supervised ({share:.1f}%)"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "num_tokens": len(self.tokens),
            "num_supervised": self.num_supervised,
            "full_length": self.full_length,
            "truncated": self.truncated,
            "tokens": [{"text": t.text, "id": t.id, "supervised": t.supervised} for t in self.tokens],
        }


def has_chat_template(tokenizer: Any) -> bool:
    """False when the tokenizer has no chat template, so rendering will use honed's default (ChatML)."""
    return bool(getattr(tokenizer, "chat_template", None))


def preview(
    conversations: Sequence[Conversation], tokenizer: Any, *, n: int = 3, max_length: int | None = None
) -> list[ExampleView]:
    """Render the first `n` conversations into per-token views.

    Usage: `preview(conversations, load_tokenizer("smollm2-135m"), n=1)[0].summary()` gives e.g.
    '78 tokens, 19 supervised (24.4%)' (needs a tokenizer: tests/unit/test_show.py).
    """
    views: list[ExampleView] = []
    for conversation in conversations[:n]:
        rendered = render(conversation, tokenizer, max_length=max_length)
        texts = _token_texts(tokenizer, conversation, rendered.input_ids)
        tokens = [TokenView(t, i, m) for t, i, m in zip(texts, rendered.input_ids, rendered.loss_mask)]
        source = str(conversation.source) if conversation.source else None
        views.append(ExampleView(source, tokens, rendered.full_length, rendered.truncated))
    return views


def _token_texts(tokenizer: Any, conversation: Conversation, ids: list[int]) -> list[str]:
    """Each token's text, cut from the rendered template by character offsets.

    Offsets (not `decode([id])`) keep whitespace exact and never split a multi-byte character into
    replacement marks; when several tokens share one character, the first one shows it.
    """
    text, _ = supervised_spans(tokenizer, conversation)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoded["input_ids"][: len(ids)]) != list(ids):  # not expected; fall back to plain decoding
        return [tokenizer.decode([i]) for i in ids]
    pieces: list[str] = []
    shown_up_to = 0
    for start, end in encoded["offset_mapping"][: len(ids)]:
        pieces.append(text[max(start, shown_up_to) : end])
        shown_up_to = max(shown_up_to, end)
    return pieces


def legend() -> Text:
    return Text.assemble(
        "legend: ",
        ("supervised", SUPERVISED_STYLE),
        " (trained on: the loss is computed on these tokens)   ",
        ("masked", MASKED_STYLE),
        " (context only)   ↵ newline",
    )


def example_text(view: ExampleView) -> Text:
    """The example's tokens, styled by their mask; newlines shown as ↵ so trained newlines are visible."""
    out = Text()
    for token in view.tokens:
        shown = token.text.replace("\n", "↵\n")
        out.append(shown, style=SUPERVISED_STYLE if token.supervised else MASKED_STYLE)
    return out


def print_preview(console: Console, views: list[ExampleView], *, template: str | None = None) -> None:
    """Print the chat template line (`template`: which one and why), the legend, then each example with its
    counts (no auto-highlighting: styles mean the mask)."""
    if template is not None:
        console.print(template, style="yellow", markup=False, soft_wrap=True)
    console.print(legend())
    for number, view in enumerate(views, start=1):
        console.rule(Text(f"example {number}" + (f" · {view.source}" if view.source else "")), style="dim")
        console.print(example_text(view), soft_wrap=True)
        console.print(view.summary(), style="bold", highlight=False)
        if view.truncated:
            console.print(
                f"truncated: {len(view.tokens)} of {view.full_length} tokens kept (--max-length)",
                style="yellow",
                highlight=False,
            )
        if view.num_supervised == 0:
            console.print(
                "no supervised tokens: this example teaches nothing (assistant turns have weight 0 or were "
                "cut off by --max-length)",
                style="bold red",
                highlight=False,
            )
