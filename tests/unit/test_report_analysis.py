"""Per-label and per-field scores, confusions and marked differences, on numbers worked out by hand."""

from __future__ import annotations

from honed.report.analysis import OTHER, confusion, example_rows, mark_differences, per_field, per_label


def test_per_label_matches_hand_counts_and_macro_f1() -> None:
    from honed.evaluate.metrics import macro_f1

    refs = ["a", "a", "a", "b", "c"]
    outs = ["a", "b", "A.", "b", "something else"]
    scores = {s.label: s for s in per_label(refs, outs)}
    assert (scores["a"].support, scores["a"].precision, scores["a"].recall) == (3, 1.0, 2 / 3)
    assert (scores["b"].precision, scores["b"].recall) == (0.5, 1.0)
    assert scores["c"].f1 == 0.0
    assert abs(sum(s.f1 for s in scores.values()) / 3 - macro_f1(refs, outs)) < 1e-12


def test_confusion_keeps_the_most_confused_labels_and_folds_the_rest_into_other() -> None:
    refs = ["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d"]
    outs = ["b", "b", "a", "zzz"] + ["a", "b", "b"] + ["c", "c"] + ["d"]
    matrix = confusion(refs, outs, top=2)
    assert matrix.rows == ["a", "b"] and matrix.columns == ["a", "b", OTHER]
    assert matrix.counts == [[1, 2, 1], [1, 2, 0]]
    assert sum(map(sum, matrix.counts)) == 7  # every example of a shown label is counted once


def test_per_field_counts_values_as_field_f1_compares_them() -> None:
    refs = ['{"category": "Bug", "tags": ["x", "y"]}', '{"category": "billing", "tags": []}']
    outs = ['{"category": "bug ", "tags": ["y"]}', "not json"]
    fields = {f.field: f for f in per_field(refs, outs)}
    assert (fields["category"].support, fields["category"].precision, fields["category"].recall) == (2, 1.0, 0.5)
    assert (fields["tags[]"].support, fields["tags[]"].precision, fields["tags[]"].recall) == (2, 1.0, 0.5)


def test_mark_differences_marks_only_what_differs_and_escapes() -> None:
    assert str(mark_differences('{"a": "x"}', '{"a": "y"}')) == '{&#34;a&#34;: &#34;<mark>y</mark>&#34;}'
    assert str(mark_differences("same text", "same text")) == "same text"
    assert "<mark>&lt;b&gt;</mark>" in str(mark_differences("x", "<b>"))


def test_example_rows_right_wrong_and_disagreement() -> None:
    rows = {
        "tuned": [{"id": 0, "prompt": "p", "reference": "a", "output": "a", "scores": {"label_accuracy": 1.0}},
                  {"id": 1, "prompt": "q", "reference": "b", "output": "a", "scores": {"label_accuracy": 0.0}}],
        "base": [{"id": 0, "prompt": "p", "reference": "a", "output": " A ", "scores": {"label_accuracy": 1.0}},
                 {"id": 1, "prompt": "q", "reference": "b", "output": "c", "scores": {"label_accuracy": 0.0}}],
    }
    first, second = example_rows(rows, main_metric="macro_f1", limit=10)  # macro_f1 is not per example
    assert first.answers["tuned"].correct and not first.wrong and not first.disagree
    assert second.wrong and second.disagree and second.answers["base"].score == 0.0
    assert len(example_rows(rows, main_metric="label_accuracy", limit=1)) == 1
