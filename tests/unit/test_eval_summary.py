"""summary: pooled field F1 as the main metric, nonempty/ metrics, the constant answer in the verdict.

The data reproduce the issue: 120 test references, 75% of them `{}`; a tuned model that answers `{}` to
every empty reference and gets the slots of only a few others looks strong on the per-example mean.
"""

from __future__ import annotations

import json

import pytest

from honed.evaluate.summary import SystemResult, plan_metrics, score_examples, summarize
from honed.evaluate.systems import System, majority_answer


def _result(name: str, kind: str, plan, references, outputs) -> SystemResult:
    return SystemResult(System(name, "", kind=kind), list(outputs), [True] * len(outputs),
                        score_examples(plan, references, outputs))


def _slot_data() -> tuple[list[str], list[str], list[str]]:
    slots = [json.dumps({"city": f"c{i}", "date": f"d{i}"}) for i in range(30)]
    references = ["{}"] * 90 + slots
    tuned = ["{}"] * 90  # perfect on the empty references
    tuned += slots[:5]  # 5 exactly right
    tuned += [json.dumps({"city": f"c{i}", "date": "wrong"}) for i in range(5, 15)]  # half right
    tuned += ["{}"] * 15  # the rest missed
    train = ["{}"] * 300 + slots[:100]
    return references, tuned, train


def test_the_constant_empty_answer_cannot_look_good_on_pooled_field_f1() -> None:
    references, tuned, train = _slot_data()
    plan = plan_metrics(references, train_targets=train)
    assert plan.main == "field_f1_micro"
    constant = [majority_answer(train)] * len(references)
    results = [_result("tuned", "tuned", plan, references, tuned),
               _result("majority", "constant", plan, references, constant)]
    summary = summarize(plan, references, results, train_targets=train, seed=0, resamples=300)
    tuned_m, major_m = summary.systems["tuned"].metrics, summary.systems["majority"].metrics
    assert tuned_m["field_f1_mean"].value == pytest.approx(100 / 120)  # what 0.1 reported as field_f1
    assert tuned_m["field_f1_micro"].value == pytest.approx(40 / 90)  # 20 of 30 said pairs right, 60 to find
    assert tuned_m["field_precision_micro"].value == pytest.approx(20 / 30)
    assert tuned_m["field_recall_micro"].value == pytest.approx(20 / 60)
    assert major_m["exact_match"].value == 0.75 and major_m["field_f1_mean"].value == 0.75
    assert major_m["field_f1_micro"].value == 0.0
    interval = tuned_m["field_f1_micro"]
    assert interval.low < interval.value < interval.high
    # the same metrics on the 30 references that hold slots
    assert summary.model_extra["nonempty_n"] == 30
    assert tuned_m["nonempty/exact_match"].value == pytest.approx(5 / 30)
    assert tuned_m["nonempty/field_f1_micro"].value == pytest.approx(40 / 90)
    assert "nonempty/field_f1_micro" in summary.metrics and "nonempty/exact_match" in summary.differences["tuned - majority"]
    diff = summary.differences["tuned - majority"]["field_f1_micro"]
    assert diff.value == pytest.approx(40 / 90) and diff.low > 0
    assert summary.systems["majority"].model_extra["answer"] == "{}"
    assert ("75% of the references are `{}`: a constant answer scores 0.75 exact match; on the 30 non-empty "
            "references the tuned model's exact match is 0.167") in summary.verdict
    assert "always answering" not in summary.verdict  # the tuned model is significantly better than `{}`


def test_the_verdict_says_when_the_tuned_model_is_no_better_than_the_constant_label() -> None:
    references = ["card"] * 50 + ["refund"] * 10
    train = ["card"] * 40 + ["refund"] * 10
    tuned = ["card"] * 50 + ["card"] * 9 + ["refund"]
    plan = plan_metrics(references, train_targets=train)
    assert plan.main == "label_accuracy"
    results = [_result("tuned", "tuned", plan, references, tuned),
               _result("majority", "constant", plan, references, ["card"] * 60)]
    summary = summarize(plan, references, results, train_targets=train, seed=0, resamples=300)
    assert "not significantly better than always answering `card` (majority 0.833" in summary.verdict
    assert "83% of the references are `card`: a constant answer scores 0.83 exact match" in summary.verdict
    assert summary.model_extra["nonempty_n"] is None and "nonempty/exact_match" not in summary.metrics


def test_knn_and_other_systems_are_named_in_the_verdict() -> None:
    references = [f"label{i % 3}" for i in range(60)]
    plan = plan_metrics(references)
    results = [_result("tuned", "tuned", plan, references, references),
               _result("few-shot-knn-4", "retrieval", plan, references, references),
               _result("gpt", "endpoint", plan, references, ["label0"] * 60)]
    line = summarize(plan, references, results, train_targets=[], seed=0, resamples=200).verdict
    assert "few-shot-knn-4 (prompting with retrieved examples) 1.000" in line
    assert "prompting with retrieved examples is enough here" in line
    assert "vs gpt 0.333" in line and "significantly better than gpt" in line
