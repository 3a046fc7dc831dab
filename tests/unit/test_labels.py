"""The one "looks like a classification task" rule, and that data check, data split and eval all use it."""

from __future__ import annotations

import pytest

from honed.data.labels import looks_like_classification
from honed.data.report import labels
from honed.data.split import classification_labels
from honed.data.types import Conversation, Message
from honed.evaluate.metrics import pick_metrics
from honed.evaluate.run_eval import choose_shots

INTENTS = ["card_arrival", "card_linking", "exchange_rate", "top_up_failed"]
CASES = {
    "intents": (INTENTS * 10, True),
    "labels with surrounding spaces": ([f" {label}\n" for label in INTENTS] * 5, True),
    "one label only": (["billing"] * 20, False),
    "free text": ([f"a free text answer number {i} with several words" for i in range(20)], False),
    "too many distinct": ([f"label-{i % 15}" for i in range(20)], False),  # 15 labels for 20 rows
    "a multi-line label": (["yes", "no"] * 10 + ["yes\nbecause"], False),
    "a label over 100 characters": (["yes", "no"] * 10 + ["x" * 101], False),
    "300 labels in 10,000 rows (3%)": ([f"intent_{i % 300}" for i in range(10_000)], True),
    "300 labels in 1,000 rows": ([f"intent_{i % 300}" for i in range(1_000)], False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_rule(name: str) -> None:
    targets, expected = CASES[name]
    assert looks_like_classification(targets) is expected


def chats(targets: list[str]) -> list[Conversation]:
    return [Conversation((Message("user", f"question {i}"), Message("assistant", t))) for i, t in enumerate(targets)]


@pytest.mark.parametrize("name", list(CASES))
def test_check_split_and_eval_agree(name: str) -> None:
    targets, expected = CASES[name]
    conversations = chats(targets)
    assert (labels(conversations) is not None) is expected  # data check's label section
    assert (classification_labels(conversations) is not None) is expected  # data split's strata
    assert (pick_metrics(targets)[0] == "label_accuracy") is expected  # eval's metrics


def test_json_labels_count_as_labels_everywhere() -> None:
    # 4 distinct JSON objects of ~45 characters (support_triage's shape): a label per object, so few-shot
    # picks one of each; eval still scores them as JSON (JSON metrics come first).
    targets = [f'{{"category": "{c}", "priority": "{p}"}}' for c in ("billing", "bug") for p in ("low", "high")]
    conversations = chats(targets * 10)
    assert labels(conversations) is not None and labels(conversations).distinct == 4
    assert sorted({c.response_text() for c in choose_shots(conversations, k=4)}) == sorted(targets)
    assert pick_metrics(targets * 10)[0] == "field_f1_micro"
