"""Guards: no targets, truncation summary, mask preview, NaN stop, zero-gradient and flat-loss warnings."""

from __future__ import annotations

import pytest

from honed.data.render import Rendered, render
from honed.data.types import Conversation, Message
from honed.errors import DataError, HonedError
from honed.train.guards import Watchdog, mask_preview, require_end_of_turn, require_targets, summarise


def rendered(mask: list[bool], *, truncated: bool = False) -> Rendered:
    return Rendered(list(range(len(mask))), mask, len(mask) + (5 if truncated else 0), truncated)


def test_summary_counts_truncation_and_examples_without_targets():
    summary = summarise([rendered([False, True]), rendered([False, False], truncated=True), rendered([False, True], truncated=True)])
    assert (summary.examples, summary.truncated, summary.emptied_by_truncation, summary.supervised_tokens) == (3, 2, 1, 2)
    text = "\n".join(summary.lines(max_length=2))
    assert "2 example(s) longer than max_length 2 were truncated" in text and "1 of them lost every supervised token" in text


def test_no_targets_anywhere_is_refused_with_a_fix():
    summary = summarise([rendered([False, False], truncated=True)])
    with pytest.raises(DataError, match="raise --max-length \\(now 2\\)"):
        require_targets(summary, path="train.jsonl", max_length=2)


def test_training_without_the_end_of_turn_in_any_answer_is_refused(tiny_tokenizer):
    tokenizer = tiny_tokenizer
    conv = Conversation(messages=(Message("user", "hello there"), Message("assistant", "general kenobi")))
    example = render(conv, tokenizer)
    require_end_of_turn([example], ["<|im_end|>"], tokenizer, path="train.jsonl")  # ChatML's answer holds it
    # A stop text that no answer holds: the model could never learn to stop.
    with pytest.raises(DataError, match="train.jsonl: the end of turn 'STOP' is in none of the first 1 examples"):
        require_end_of_turn([example], ["STOP"], tokenizer, path="train.jsonl")


def test_mask_preview_marks_exactly_the_trained_text(tiny_tokenizer):
    tokenizer = tiny_tokenizer
    conv = Conversation(messages=(Message("user", "hello there"), Message("assistant", "general kenobi")))
    preview = mask_preview(render(conv, tokenizer), tokenizer)
    trained = preview.split("«")[1].split("»")[0]
    assert "general kenobi" in trained and "hello" not in trained
    assert "[dim]" in preview


def test_nan_or_inf_stops_training():
    with pytest.raises(HonedError, match="loss became nan at step 7.*--lr"):
        Watchdog(lr=1e-3).check(step=7, loss=float("nan"), grad_norm=1.0)
    with pytest.raises(HonedError, match="gradient norm became inf"):
        Watchdog(lr=1e-3).check(step=1, loss=1.0, grad_norm=float("inf"))


def test_zero_gradients_warn_once_per_streak():
    dog = Watchdog(lr=1e-3)
    warnings = [dog.check(step=s, loss=1.0 + s, grad_norm=0.0) for s in range(1, 6)]
    assert [len(w) for w in warnings] == [0, 0, 1, 0, 0]
    dog.check(step=6, loss=3.0, grad_norm=1.0)
    assert len(dog.check(step=7, loss=3.0, grad_norm=0.0) + dog.check(step=8, loss=3.0, grad_norm=0.0)
               + dog.check(step=9, loss=2.0, grad_norm=0.0)) == 1


def test_a_changing_loss_is_not_flat():
    dog = Watchdog(lr=1e-3)
    assert not any(dog.check(step=s, loss=2.0 - s * 0.01, grad_norm=1.0) for s in range(1, 40))
