"""honed.evaluate.answer_end: a prompted base model's answer ends where the task's answers do."""

from __future__ import annotations

import pytest

from honed.evaluate.answer_end import answer_end_rule, end_answer


@pytest.mark.parametrize(("references", "rule"), [
    (['{"a": 1}', '[1, 2]'], "json"), (["billing", "refund please"], "line"), (["two\nlines", "x"], None), ([], None),
])
def test_the_rule_follows_the_targets_shape(references: list[str], rule: str | None) -> None:
    assert answer_end_rule(references) == rule


@pytest.mark.parametrize(("output", "rule", "answer"), [
    ('{"category": "bug"} anaknya\n subtreemodel\n{"category"', "json", '{"category": "bug"}'),
    ('  {"a": [1, {"b": "}"}]}\nmore', "json", '{"a": [1, {"b": "}"}]}'),
    ('{"a": 1', "json", '{"a": 1'),  # not a complete value: left as it is, and scored as it is
    ("not json", "json", "not json"),
    ("billing\nuser: next question", "line", "billing"),
    ("free text\nthat goes on", None, "free text\nthat goes on"),
])
def test_answers_are_cut_after_the_first_whole_answer(output: str, rule: str | None, answer: str) -> None:
    assert end_answer(output, rule) == answer
