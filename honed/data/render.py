"""Render a Conversation into token ids and a loss mask: the single place that decides what is trained on.

The rule: a token is supervised (its `loss_mask` is True) exactly when it belongs to an assistant turn
whose weight is not 0, from the first token after the template's assistant header up to and including
the template's end-of-turn marker (so the model learns to stop) and what the template writes after it in
that turn (ChatML's newline). System, user and tool turns, template headers (also of an assistant turn that
opens a conversation) and weight-0 assistant turns are never supervised. Prompt/completion data is read
as one user and one assistant turn, so this rule is "completion only" for it.

How: the chat template is rendered to text for growing prefixes of the conversation; the assistant turn i
spans from the end of `render(messages[:i], add_generation_prompt=True)` to the end of
`render(messages[:i+1])`. The full text is tokenized once with character offsets, and a token is
supervised when its characters start inside a supervised span. This works for any template whose
rendering of a prefix is a prefix of the full rendering (ChatML, Llama 3, Mistral, Gemma, Qwen ...);
a template that is not raises a clear error instead of guessing.

The template is the one honed.model.template chose for the model (set on the tokenizer by
honed.model.tokenizers); prompts for generation are rendered by honed.model.prompt with the same template.

Plain text (`{"text": ...}`, language-model fine-tuning) has no chat template: the text is written as it
is, between the tokenizer's BOS token (when it has one) and its EOS token (so the model learns where a
text ends), and every token after BOS is supervised, the same in training, `data show` and `data check`.

`loss_mask[t]` marks token t as a *target*: training predicts it from positions < t.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Sequence

from jinja2.exceptions import TemplateError

from honed.data.types import Conversation
from honed.errors import DataError, ModelError

@dataclass(frozen=True)
class Rendered:
    """Token ids and the loss mask for one conversation.

    `full_length` is the length before truncation; `truncated` is True when `max_length` cut it.
    """

    input_ids: list[int]
    loss_mask: list[bool]
    full_length: int
    truncated: bool

    @property
    def num_supervised(self) -> int:
        return sum(self.loss_mask)


def _require_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("the tokenizer has no chat template set; load it through honed.model.tokenizers "
                         "(model_tokenizer or run_tokenizer), which choose or apply the run's template")


def _template_text(tokenizer: Any, conversation: Conversation, end: int, *, generation_prompt: bool) -> str:
    messages = [m.to_template() for m in conversation.messages[:end]]
    if not messages and not generation_prompt:
        return ""
    try:
        return tokenizer.apply_chat_template(
            messages,
            tools=conversation.tools,
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )
    except TemplateError as exc:  # e.g. a template that demands alternating user/assistant turns
        where = conversation.source or "a conversation"
        raise DataError(
            f"{where}: the model's chat template refused this conversation ({exc}); "
            "reorder or fix its turns, or use a model whose template accepts them"
        ) from exc


def _assistant_header(tokenizer: Any) -> str:
    """The text a template puts before an assistant turn's content (ChatML: '<|im_start|>assistant\\n').

    Needed for an assistant turn that opens a conversation: transformers refuses to render an empty
    conversation, so the header is measured on a one-user-turn conversation instead.
    """
    probe = [{"role": "user", "content": "x"}]
    without = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
    with_prompt = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    return with_prompt[len(without):] if with_prompt.startswith(without) else ""


def supervised_spans(tokenizer: Any, conversation: Conversation) -> tuple[str, list[tuple[int, int]]]:
    """The full template text and the character spans [start, end) that are trained on.

    Usage: `text, spans = supervised_spans(tokenizer, conversation)`; with ChatML, `[text[s:e] for s, e in
    spans]` is `['Paris<|im_end|>\\n']` (needs a tokenizer: tests/unit/test_render.py checks the spans).
    """
    if conversation.plain:
        return _plain_spans(tokenizer, conversation.messages[0].content)
    _require_template(tokenizer)
    full = _template_text(tokenizer, conversation, len(conversation.messages), generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(conversation.messages):
        if not message.trainable:
            continue
        # The last turn's prefix is the whole conversation: reuse `full` instead of rendering it again.
        last = i + 1 == len(conversation.messages)
        through = full if last else _template_text(tokenizer, conversation, i + 1, generation_prompt=False)
        if i:
            before = _template_text(tokenizer, conversation, i, generation_prompt=True)
        else:
            # An assistant turn that opens the conversation: its header (and any default system prompt the
            # template adds) must not be supervised, so the content starts after the header's first use.
            header = _assistant_header(tokenizer)
            at = through.find(header) if header else -1
            before = through[: at + len(header)] if at >= 0 else through
        if not full.startswith(before) or not full.startswith(through) or len(through) < len(before):
            raise ModelError(
                "this tokenizer's chat template does not render a conversation's beginning as a prefix of "
                "the whole (it rewrites earlier turns), so honed cannot tell which tokens belong to the "
                "assistant; pass a model with a prefix-stable template or set chat_template on the tokenizer"
            )
        spans.append((len(before), len(through)))
    return full, spans


def _plain_spans(tokenizer: Any, text: str) -> tuple[str, list[tuple[int, int]]]:
    """Plain text: BOS (if any) + text + EOS; everything after BOS is trained on."""
    bos = getattr(tokenizer, "bos_token", None) or ""
    eos = getattr(tokenizer, "eos_token", None) or ""
    full = f"{bos}{text}{eos}"
    return full, [(len(bos), len(full))]


def _mask_from_offsets(offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    """True for each token whose first character lies inside a supervised span."""
    starts = [start for start, _ in offsets]
    ordered_spans = all(spans[k][1] <= spans[k + 1][0] for k in range(len(spans) - 1))
    if not ordered_spans or starts != sorted(starts):
        return _mask_from_offsets_stepwise(offsets, spans)
    # Sorted token starts and disjoint sorted spans (every real template and tokenizer): each span covers
    # one contiguous run of tokens, found by bisection instead of a Python loop over every token.
    mask = [False] * len(starts)
    for span_start, span_end in spans:
        first, stop = bisect_left(starts, span_start), bisect_left(starts, span_end)
        mask[first:stop] = [True] * (stop - first)
    return mask


def _mask_from_offsets_stepwise(offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    mask = [False] * len(offsets)
    span_index = 0
    for t, (start, end) in enumerate(offsets):
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index == len(spans):
            break
        span_start, span_end = spans[span_index]
        # Zero-width tokens (start == end) belong where they stand.
        mask[t] = span_start <= start < span_end or (start == end and span_start <= start < span_end)
    return mask


def _finish(ids: list[int], mask: list[bool], max_length: int | None) -> Rendered:
    full_length = len(ids)
    if max_length is not None and full_length > max_length:
        return Rendered(ids[:max_length], mask[:max_length], full_length, True)
    return Rendered(ids, mask, full_length, False)


def render(conversation: Conversation, tokenizer: Any, *, max_length: int | None = None) -> Rendered:
    """Render one conversation to input ids and a loss mask, truncated on the right to `max_length`.

    Usage: `render(conversation, tokenizer, max_length=512).num_supervised` (needs a tokenizer:
    tests/unit/test_render.py renders every kind of turn).
    """
    return render_batch([conversation], tokenizer, max_length=max_length)[0]


def render_batch(
    conversations: Sequence[Conversation], tokenizer: Any, *, max_length: int | None = None
) -> list[Rendered]:
    """Render many conversations; the tokenizer runs once over the whole batch (fast in Rust)."""
    texts: list[str] = []
    all_spans: list[list[tuple[int, int]]] = []
    for conversation in conversations:
        text, spans = supervised_spans(tokenizer, conversation)
        texts.append(text)
        all_spans.append(spans)
    if not texts:
        return []
    out: list[Rendered] = []
    for (ids, offsets), spans in zip(_encode_with_offsets(tokenizer, texts), all_spans):
        out.append(_finish(ids, _mask_from_offsets(offsets, spans), max_length))
    return out


def _encode_with_offsets(tokenizer: Any, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Token ids and character offsets for each text, without special tokens added.

    A fast tokenizer's Rust backend is called directly: `tokenizer(texts, ...)` makes the same
    `encode_batch` call but then copies every encoding into Python dicts, which costs more than the
    encoding itself on large datasets. The one-text call first applies the tokenizer's own settings (no
    truncation or padding, its special-token handling) to the backend, so both paths give the same ids.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return [(list(ids), list(offsets)) for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"])]
    tokenizer(texts[0], add_special_tokens=False)
    encodings = backend.encode_batch(texts, add_special_tokens=False)
    return [(encoding.ids, encoding.offsets) for encoding in encodings]


def trained_text(rendered: Rendered, tokenizer: Any) -> str:
    """The text of the supervised tokens (each run of them decoded apart, joined by a line break)."""
    ids, mask = rendered.input_ids, rendered.loss_mask
    runs: list[list[int]] = []
    for t, supervised in enumerate(mask):
        if supervised:
            if t == 0 or not mask[t - 1]:
                runs.append([])
            runs[-1].append(ids[t])
    return "\n".join(tokenizer.batch_decode(runs, skip_special_tokens=False)) if runs else ""


def trains_end_of_turn(rendered: Rendered, tokenizer: Any, end_of_turn: str) -> bool:
    """Whether an example's supervised tokens hold the whole end of turn, so it teaches the model to stop.

    Checked on the decoded text, not on ids, because an end of turn that is several tokens may be split
    differently next to the answer's last characters than on its own.

    Usage: `trains_end_of_turn(render(conversation, tokenizer), tokenizer, "<|im_end|>")` is True for a ChatML
    answer (needs a tokenizer: tests/unit/test_train_guards.py's end-of-turn test goes through it).
    """
    return bool(end_of_turn) and end_of_turn in trained_text(rendered, tokenizer)
