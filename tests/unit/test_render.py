"""The loss mask decides what a model learns: these tests pin down exactly which tokens are supervised.

Each test decodes the supervised tokens (grouped into contiguous runs) and compares strings, so a failure
shows what was trained on instead of a list of booleans.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from honed.data.render import render, render_batch, supervised_spans
from honed.model.prompt import render_prompt
from honed.model.template import CHATML
from honed.model.tokenizers import model_tokenizer
from honed.data.types import Conversation, Message, Source
from honed.errors import DataError
from honed.model.loading import load_tokenizer

from tests.helpers import TINY


@pytest.fixture(scope="module")
def tok_no_template(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny tokenizer with its chat template removed: honed chooses ChatML (its tokens are in the vocabulary)."""
    folder = tmp_path_factory.mktemp("no-template") / "tiny"
    shutil.copytree(TINY, folder)
    (folder / "chat_template.jinja").unlink()
    assert not load_tokenizer(str(folder)).chat_template
    tokenizer, choice = model_tokenizer(str(folder))
    assert choice.name == "chatml" and not choice.added_tokens
    return tokenizer


def conv(*turns: tuple[str, str] | tuple[str, str, int]) -> Conversation:
    return Conversation(messages=tuple(Message(t[0], t[1], *t[2:]) for t in turns))  # type: ignore[arg-type]


def supervised_runs(tokenizer: Any, ids: list[int], mask: list[bool]) -> list[str]:
    """Decode each contiguous run of supervised tokens."""
    runs: list[str] = []
    current: list[int] = []
    for token, supervised in zip(ids, mask):
        if supervised:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def trained_on(tokenizer: Any, conversation: Conversation, **kwargs: Any) -> list[str]:
    rendered = render(conversation, tokenizer, **kwargs)
    return supervised_runs(tokenizer, rendered.input_ids, rendered.loss_mask)


MULTI_TURN = conv(
    ("system", "Be brief."),
    ("user", "Hi there"),
    ("assistant", "Hello!"),
    ("user", "Capital of France?"),
    ("assistant", "Paris"),
)


@pytest.mark.parametrize("which", ["tiny_tokenizer", "tok_no_template"])
def test_single_turn_supervises_the_answer_and_end_of_turn_only(
    which: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(which)
    c = conv(("system", "Answer with one word."), ("user", "Capital of France?"), ("assistant", "Paris"))
    assert trained_on(tokenizer, c) == ["Paris<|im_end|>\n"]


def test_tokenizer_without_template_gets_the_default_chatml(
    tiny_tokenizer: Any, tok_no_template: Any
) -> None:
    c = conv(("user", "Hi"), ("assistant", "Hello"))
    with_default = render(c, tok_no_template)
    assert tok_no_template.chat_template == CHATML
    assert tok_no_template.decode(with_default.input_ids) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    )
    # The tiny model's own template is ChatML too, so both render identically.
    assert with_default == render(c, tiny_tokenizer)


@pytest.mark.parametrize("which", ["tiny_tokenizer", "tok_no_template"])
def test_every_assistant_turn_of_a_multi_turn_conversation_is_supervised(
    which: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(which)
    assert trained_on(tokenizer, MULTI_TURN) == ["Hello!<|im_end|>\n", "Paris<|im_end|>\n"]


def test_weight_zero_assistant_turn_is_masked(tiny_tokenizer: Any) -> None:
    c = conv(
        ("user", "Hi there"),
        ("assistant", "Hello!", 0),
        ("user", "Capital of France?"),
        ("assistant", "Paris", 1),
    )
    assert trained_on(tiny_tokenizer, c) == ["Paris<|im_end|>\n"]


def test_all_assistant_turns_weight_zero_supervises_nothing(tiny_tokenizer: Any) -> None:
    c = conv(("user", "Hi"), ("assistant", "Hello", 0))
    assert render(c, tiny_tokenizer).num_supervised == 0


def test_system_user_and_tool_turns_are_never_supervised(tiny_tokenizer: Any) -> None:
    c = conv(
        ("system", "You can call tools."),
        ("user", "Weather in Paris?"),
        ("assistant", "Let me check."),
        ("tool", "sunny, 21C"),
        ("assistant", "Sunny and 21C."),
        ("user", "Thanks"),
    )
    runs = trained_on(tiny_tokenizer, c)
    assert runs == ["Let me check.<|im_end|>\n", "Sunny and 21C.<|im_end|>\n"]
    for text in ("You can call tools.", "Weather in Paris?", "sunny, 21C", "Thanks", "<|im_start|>"):
        assert all(text not in run for run in runs)


def test_prompt_completion_is_completion_only(tiny_tokenizer: Any) -> None:
    # Prompt/completion rows are read as one user and one assistant turn.
    c = conv(("user", "Translate to French: cat"), ("assistant", "chat"))
    rendered = render(c, tiny_tokenizer)
    assert supervised_runs(tiny_tokenizer, rendered.input_ids, rendered.loss_mask) == ["chat<|im_end|>\n"]
    # Everything before the answer is context: exactly the prompt tokens are masked.
    prompt_length = len(render_prompt(c, tiny_tokenizer))
    assert rendered.loss_mask == [False] * prompt_length + [True] * rendered.num_supervised


def test_end_of_turn_token_is_a_target(tiny_tokenizer: Any) -> None:
    rendered = render(conv(("user", "Hi"), ("assistant", "Hello")), tiny_tokenizer)
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    targets = [t for t, m in zip(rendered.input_ids, rendered.loss_mask) if m]
    assert im_end in targets
    # ... and only the assistant's end-of-turn, not the user's.
    assert rendered.input_ids.count(im_end) == 2
    assert targets.count(im_end) == 1


def test_assistant_turn_opening_the_conversation_does_not_supervise_its_header(tiny_tokenizer: Any) -> None:
    c = conv(("assistant", "Welcome!"), ("user", "Hi"), ("assistant", "Hello"))
    assert trained_on(tiny_tokenizer, c) == ["Welcome!<|im_end|>\n", "Hello<|im_end|>\n"]


def test_truncation_flags_and_counts(tiny_tokenizer: Any) -> None:
    c = conv(("user", "Hi"), ("assistant", "Hello"))
    full = render(c, tiny_tokenizer)
    assert not full.truncated and full.full_length == len(full.input_ids)

    cut = render(c, tiny_tokenizer, max_length=full.full_length - 2)
    assert cut.truncated
    assert cut.full_length == full.full_length
    assert len(cut.input_ids) == len(cut.loss_mask) == full.full_length - 2
    assert cut.input_ids == full.input_ids[: full.full_length - 2]
    assert cut.num_supervised == full.num_supervised - 2

    # Cut inside the prompt: nothing left to learn from.
    prompt_only = render(c, tiny_tokenizer, max_length=4)
    assert prompt_only.truncated and prompt_only.num_supervised == 0

    exact = render(c, tiny_tokenizer, max_length=full.full_length)
    assert not exact.truncated and exact == full


@pytest.mark.parametrize("which", ["tiny_tokenizer", "tok_no_template"])
def test_render_prompt_is_the_training_prefix_up_to_the_assistant_header(
    which: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(which)
    for c in (MULTI_TURN, conv(("user", "Hi"), ("assistant", "Hello"))):
        full = render(c, tokenizer)
        prompt = render_prompt(c, tokenizer)
        assert full.input_ids[: len(prompt)] == prompt
        assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
        # What follows the prompt is exactly the last answer, all of it supervised.
        rest = full.input_ids[len(prompt) :]
        assert tokenizer.decode(rest) == c.response_text() + "<|im_end|>\n"
        assert all(full.loss_mask[len(prompt) :])


def test_render_batch_equals_one_by_one(tiny_tokenizer: Any) -> None:
    batch = [MULTI_TURN, conv(("user", "Hi"), ("assistant", "Hello"))]
    one_by_one = [render(c, tiny_tokenizer, max_length=20) for c in batch]
    assert render_batch(batch, tiny_tokenizer, max_length=20) == one_by_one


def test_supervised_spans_are_character_spans_of_the_template_text(tiny_tokenizer: Any) -> None:
    text, spans = supervised_spans(tiny_tokenizer, MULTI_TURN)
    assert [text[s:e] for s, e in spans] == ["Hello!<|im_end|>\n", "Paris<|im_end|>\n"]


def test_other_prefix_stable_templates_work(tmp_path: Path) -> None:
    # A Llama-3-style template: different header and end-of-turn marker, same rule.
    tokenizer = load_tokenizer(str(_copy_without_template(tmp_path)))
    tokenizer.chat_template = (
        "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    )
    c = conv(("user", "Hi"), ("assistant", "Hello"))
    assert trained_on(tokenizer, c) == ["Hello<|eot_id|>"]


def test_template_that_refuses_a_conversation_is_a_located_data_error(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(str(_copy_without_template(tmp_path)))
    tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('must start with user') }}{% endif %}"
        + CHATML
    )
    c = Conversation(messages=(Message("assistant", "Hi"),), source=Source("data.jsonl", 7))
    with pytest.raises(DataError, match=r"data.jsonl:7: .*must start with user"):
        render(c, tokenizer)


def _copy_without_template(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    shutil.copytree(TINY, folder)
    (folder / "chat_template.jinja").unlink()
    return folder
