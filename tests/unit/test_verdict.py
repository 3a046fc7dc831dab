"""The verdict's wording for each case: helped, hurt, not significant, too small, against prompting."""

from __future__ import annotations

from honed.evaluate.stats import Interval
from honed.evaluate.verdict import Comparison, verdict


def _base(diff: Interval, value: float = 0.3) -> Comparison:
    return Comparison("base", value, diff)


def test_helped_and_significant_gain_over_prompting() -> None:
    line = verdict(metric="field_f1", n=200, tuned=0.8, comparisons=[
        _base(Interval(0.5, 0.44, 0.56)), Comparison("few-shot-5", 0.6, Interval(0.2, 0.12, 0.28))])
    assert line == (
        "Fine-tuning helped: field_f1 0.800 vs 0.300 for the base model (+0.500, 95% CI +0.440 to +0.560); "
        "vs few-shot-5 prompting 0.600 (+0.200, 95% CI +0.120 to +0.280): a significant gain over prompting."
    )
    assert "\n" not in line


def test_helped_but_not_better_than_prompting() -> None:
    line = verdict(metric="label_accuracy", n=100, tuned=0.7, comparisons=[
        _base(Interval(0.4, 0.3, 0.5)), Comparison("few-shot-5", 0.68, Interval(0.02, -0.05, 0.09))])
    assert line.startswith("Fine-tuning helped: label_accuracy 0.700")
    assert line.endswith("not significantly better than prompting.")


def test_hurt_and_prompting_better() -> None:
    line = verdict(metric="chrf", n=100, tuned=0.3, comparisons=[
        _base(Interval(-0.1, -0.15, -0.05), 0.4), Comparison("few-shot-3", 0.5, Interval(-0.2, -0.3, -0.1))])
    assert line.startswith("Fine-tuning hurt: chrf 0.300 vs 0.400")
    assert line.endswith("prompting is significantly better.")


def test_not_significant() -> None:
    line = verdict(metric="exact_match", n=80, tuned=0.52, comparisons=[_base(Interval(0.02, -0.08, 0.12), 0.5)])
    assert line.startswith("No significant difference from the base model: exact_match 0.520 vs 0.500")


def test_too_small_by_count_and_by_width() -> None:
    small = verdict(metric="field_f1", n=12, tuned=0.9, comparisons=[_base(Interval(0.6, 0.4, 0.8))])
    assert small.startswith("Too small to tell: 12 holdout examples (need at least 30)")
    wide = verdict(metric="field_f1", n=40, tuned=0.6, comparisons=[_base(Interval(0.3, -0.2, 0.55))])
    assert wide.startswith("Too small to tell: the 95% CI of tuned - base on field_f1 spans 0.75")


def test_no_baseline() -> None:
    line = verdict(metric="field_f1", n=100, tuned=0.7, comparisons=[])
    assert line == "Tuned model: field_f1 0.700; no baseline was evaluated."


def test_constant_answer_retrieval_and_other_systems() -> None:
    from honed.evaluate.verdict import constant_note

    comparisons = [
        _base(Interval(0.2, 0.1, 0.3)),
        Comparison("majority", 0.7, Interval(0.02, -0.04, 0.08), kind="constant", answer="{}"),
        Comparison("few-shot-knn-5", 0.68, Interval(0.04, -0.02, 0.1), kind="retrieval"),
        Comparison("gpt", 0.9, Interval(-0.18, -0.25, -0.11), kind="system"),
    ]
    notes = [constant_note(["{}"] * 74 + ['{"a": 1}'] * 26, normalize=str.strip)]
    line = verdict(metric="exact_match", n=100, tuned=0.72, comparisons=comparisons, notes=notes)
    assert line.startswith("Fine-tuning helped: exact_match 0.720 vs 0.300")
    assert "not significantly better than always answering `{}` (majority 0.700, +0.020, 95% CI -0.040 to +0.080)" in line
    assert "few-shot-knn-5 (prompting with retrieved examples) 0.680" in line
    assert "not significantly better; prompting with retrieved examples is enough here" in line
    assert "vs gpt 0.900 (-0.180, 95% CI -0.250 to -0.110): gpt is significantly better" in line
    assert line.endswith("; 74% of the references are `{}`: a constant answer scores 0.74 exact match.")
    better = verdict(metric="exact_match", n=100, tuned=0.9, comparisons=[
        Comparison("majority", 0.5, Interval(0.4, 0.3, 0.5), kind="constant", answer="{}")])
    assert "always answering" not in better  # beating a constant answer is expected, not news
    assert constant_note(["a", "b", "c", "a"], normalize=str.strip) is None  # half is not most
