"""Every metric on hand-made cases: normalisation, labels, JSON (invalid, missing/extra keys, unicode)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from honed.errors import ConfigError
from honed.evaluate import metrics as M


def test_exact_match_normalises_case_whitespace_and_unicode() -> None:
    assert M.exact_match("Paris", "  paris\n") == 1.0
    assert M.exact_match("Café", "Cafe\u0301".replace("e\u0301", "é")) == 1.0
    assert M.exact_match("ﬁne", "fine") == 1.0  # NFKC folds the ligature
    assert M.exact_match("Paris", "Paris, France") == 0.0


def test_label_accuracy_reads_the_first_line_without_quotes_or_period() -> None:
    assert M.label_accuracy("card_arrival", '"card_arrival".\nBecause the card ...') == 1.0
    assert M.label_accuracy("card_arrival", "card_linking") == 0.0
    assert M.label_accuracy("card_arrival", "") == 0.0


def test_macro_f1_by_hand() -> None:
    # a: tp=1 fp=0 fn=1 -> 2/3; b: tp=1 fp=1 fn=0 -> 2/3
    assert M.macro_f1(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(2 / 3)
    assert M.macro_f1(["a", "b"], ["a", "b"]) == 1.0
    # an invented label is a miss, not a class of its own: b gets 0, a gets 1 -> 0.5
    assert M.macro_f1(["a", "b"], ["a", "something else"]) == pytest.approx(0.5)
    assert M.macro_f1([], []) == 0.0


def test_json_valid_accepts_a_fence_rejects_broken_json() -> None:
    assert M.json_valid("", '{"a": 1}') == 1.0
    assert M.json_valid("", '```json\n{"a": 1}\n```') == 1.0
    assert M.json_valid("", '{"a": 1') == 0.0
    assert M.json_valid("", "Sure! Here is the JSON: {}") == 0.0
    assert M.json_valid("", "") == 0.0


def test_field_scores_missing_and_extra_keys() -> None:
    ref = '{"date": "Friday", "people": "4"}'
    assert M.field_scores(ref, ref) == M.FieldScores(1.0, 1.0, 1.0)
    missing = M.field_scores(ref, '{"date": "friday"}')  # value compared normalised
    assert (missing.precision, missing.recall) == (1.0, 0.5)
    assert missing.f1 == pytest.approx(2 / 3)
    extra = M.field_scores(ref, '{"date": "Friday", "people": "4", "time": "7pm"}')
    assert (extra.precision, extra.recall) == (pytest.approx(2 / 3), 1.0)
    wrong_value = M.field_scores(ref, '{"date": "Saturday", "people": "4"}')
    assert (wrong_value.precision, wrong_value.recall) == (0.5, 0.5)


def test_field_scores_invalid_empty_nested_and_unicode() -> None:
    assert M.field_scores('{"a": "x"}', '{"a": "x"') == M.FieldScores(0.0, 0.0, 0.0)
    assert M.field_scores("{}", "{}") == M.FieldScores(1.0, 1.0, 1.0)
    assert M.field_scores('{"a": "x"}', "{}").f1 == 0.0
    assert M.field_scores("{}", '{"a": "x"}').f1 == 0.0
    assert M.field_scores('{"n": {"first": "Zoë"}}', '{"n": {"first": "ZOË"}}').f1 == 1.0
    assert M.field_scores('{"name": "東京"}', '{"name": "東京"}').f1 == 1.0
    assert M.field_scores('{"tags": ["a", "b"]}', '{"tags": ["a"]}').recall == 0.5
    assert M.field_scores('{"n": 4}', '{"n": "4"}').f1 == 1.0  # values compare normalised as text


def test_schema_inferred_from_targets() -> None:
    targets = ['{"date": "Friday", "people": "4"}', '{"date": "today"}']
    schema = M.infer_schema(targets)
    assert schema["required"] == ["date"] and schema["additionalProperties"] is False
    valid = M.schema_metric(schema)
    assert valid("", '{"date": "Monday"}') == 1.0
    assert valid("", '{"people": "2"}') == 0.0  # required key missing
    assert valid("", '{"date": "Monday", "colour": "red"}') == 0.0  # extra key
    assert valid("", '{"date": 5}') == 0.0  # wrong type
    assert valid("", "not json") == 0.0


def test_schema_given_explicitly() -> None:
    valid = M.schema_metric({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    assert valid("", '{"n": 3}') == 1.0
    assert valid("", '{"n": "3"}') == 0.0


def test_chrf_bounds() -> None:
    assert M.chrf("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    partial = M.chrf("the cat sat on the mat", "the cat sat")
    assert 0.0 < partial < 1.0
    assert M.chrf("the cat sat", "") == 0.0


def test_pick_metrics_from_the_targets() -> None:
    assert M.pick_metrics(['{"a": 1}', '{"b": 2}'])[0] == "field_f1_micro"
    labels = ["card_arrival", "card_linking"] * 10
    main, names = M.pick_metrics(labels)
    assert main == "label_accuracy" and "macro_f1" in names
    prose = [f"Here is a long answer number {i} that goes on." for i in range(10)]
    assert M.pick_metrics(prose)[0] == "chrf"


def test_user_metric_module_function(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "mymetric.py").write_text(textwrap.dedent("""
        def starts_same(reference, output):
            return float(reference[:1] == output[:1])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    resolved = M.resolve_metrics(["exact_match", "mymetric:starts_same", "macro_f1"], schema={})
    assert sorted(resolved) == ["exact_match", "starts_same"]
    assert resolved["starts_same"]("abc", "axe") == 1.0
    sys.modules.pop("mymetric", None)


def test_unknown_user_metric_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="cannot import module"):
        M.load_user_metric("no_such_module_xyz:score")
    with pytest.raises(ConfigError, match="module:function"):
        M.load_user_metric("bleu")


def test_memorised_share_counts_copies_of_training_answers_that_miss_the_reference() -> None:
    from honed.evaluate.run_eval import memorised_share

    train = ['{"people": "4"}', '{"time": "7pm"}']
    outputs = ['{"people": "4"}', '{"people": "4"}', '{"date": "today"}', '{"time": "7PM"}']
    references = ['{"people": "4"}', '{"people": "5"}', '{"date": "today"}', '{"time": "8pm"}']
    # row 0 copies a training answer but it is right; rows 1 and 3 copy one where the reference differs
    assert memorised_share(outputs, references, train) == 0.5
    assert memorised_share([], [], train) == 0.0


def test_plan_metrics_override_and_unknown() -> None:
    from honed.evaluate.run_eval import plan_metrics

    plan = plan_metrics(['{"a": "x"}', '{"a": "y", "b": "z"}'])
    assert plan.main == "field_f1_micro" and plan.schema["required"] == ["a"]
    assert {"field_f1_micro", "field_f1_mean"} <= set(plan.names) and "field_f1_micro" in plan.corpus
    plan = plan_metrics(["yes", "no", "yes", "no"], requested=["macro_f1", "exact_match"])
    assert plan.main == "macro_f1" and set(plan.corpus) == {"macro_f1"} and set(plan.per_example) == {"exact_match"}
    with pytest.raises(ConfigError, match="unknown metric"):
        plan_metrics(["a"], requested=["bleu"])


def test_micro_field_f1_pools_pairs_so_empty_answers_to_empty_references_earn_nothing() -> None:
    """The issue's case: 3 of 4 references are {}; answering {} everywhere is perfect on the per-example
    mean's empty rows (3 x 1.0) but finds none of the pairs that exist."""
    references = ["{}", "{}", "{}", '{"city": "Paris", "date": "friday"}']
    constant = ["{}"] * 4
    assert sum(M.field_f1(r, o) for r, o in zip(references, constant)) / 4 == 0.75  # field_f1_mean
    assert M.POOLED["field_f1_micro"](references, constant) == 0.0
    assert M.POOLED["field_recall_micro"](references, constant) == 0.0
    # a model that finds one of the two pairs and invents one on an empty reference
    outputs = ['{"city": "Rome"}', "{}", "{}", '{"city": "paris"}']
    assert M.field_counts(references[0], outputs[0]) == (0, 1, 0)
    assert M.POOLED["field_precision_micro"](references, outputs) == 0.5  # 1 of 2 predicted pairs right
    assert M.POOLED["field_recall_micro"](references, outputs) == 0.5  # 1 of 2 reference pairs found
    assert M.POOLED["field_f1_micro"](references, outputs) == 0.5
    assert M.POOLED["field_f1_micro"](["{}"], ["{}"]) == 1.0  # nothing to find and nothing said
    assert M.POOLED["field_f1_micro"](references, ["not json"] * 4) == 0.0


def test_legacy_field_metric_names_still_resolve() -> None:
    resolved = M.resolve_metrics(["field_f1", "field_f1_mean", "field_f1_micro"], schema={})
    assert set(resolved) == {"field_f1", "field_f1_mean"}  # micro is a corpus metric
    assert resolved["field_f1"] is resolved["field_f1_mean"] is M.field_f1
    assert {"field_f1", "field_precision", "field_recall"} <= M.KNOWN_METRICS


def test_empty_references() -> None:
    assert [M.is_empty_reference(r) for r in ["{}", "[]", "", '{"a": {}}', '{"a": 0}', "label"]] == [
        True, True, True, True, False, False]
