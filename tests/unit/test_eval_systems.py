"""--baselines specs, the constant majority answer and BM25-retrieved few-shot examples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from honed.data.types import Conversation, Message
from honed.errors import HonedError
from honed.evaluate.systems import majority_answer, nearest_shots, parse_baselines, prompts_for

TINY = Path(__file__).parents[1] / "assets" / "tiny-llama"


def _conv(user: str, answer: str) -> Conversation:
    return Conversation((Message("system", "S"), Message("user", user), Message("assistant", answer)))


def test_every_baseline_spec_and_majority_always_added() -> None:
    systems = parse_baselines(f"base, few-shot:3, few-shot-knn:4, endpoint:gpt=https://api.example.com/v1#gpt-4o-mini,"
                              f" export:{TINY}, model:mine={TINY}")
    names = [s.name for s in systems]
    assert names == ["base", "few-shot-3", "few-shot-knn-4", "gpt", "export-tiny-llama", "mine", "majority"]
    by_name = {s.name: s for s in systems}
    assert by_name["few-shot-knn-4"].shots == 4 and by_name["few-shot-knn-4"].retrieves
    assert (by_name["gpt"].url, by_name["gpt"].endpoint_model) == ("https://api.example.com/v1", "gpt-4o-mini")
    assert by_name["export-tiny-llama"].model == str(TINY) and by_name["mine"].verdict_kind == "system"
    assert by_name["majority"].kind == "constant" and not by_name["majority"].model
    assert [s.name for s in parse_baselines("none")] == ["majority"]
    assert [s.name for s in parse_baselines("majority,base")] == ["majority", "base"]


@pytest.mark.parametrize(("spec", "message"), [
    ("few-shot-knn:0", "few-shot-knn:K with K a whole number >= 1"),
    ("few-shot:x", "few-shot:K with K a whole number >= 1"),
    ("endpoint:bad", "write endpoint:NAME=URL[#model]"),
    ("endpoint:gpt=localhost:8000", "with an http(s) URL"),
    ("endpoint:tuned=http://localhost:8000/v1", "must be letters"),
    ("export:/no/such/model", "no such file or folder"),
    ("export:", "write export:PATH"),
    ("zero", "unknown baseline 'zero'"),
    (f"few-shot:5,endpoint:few-shot-5=http://localhost:1/v1", "already named 'few-shot-5'"),
])
def test_bad_specs_are_one_clear_error(spec: str, message: str) -> None:
    with pytest.raises(HonedError, match=re.escape(message)):
        parse_baselines(spec)


def test_an_export_folder_that_is_no_model_is_refused(tmp_path) -> None:
    with pytest.raises(HonedError, match="not a Hugging Face model folder"):
        parse_baselines(f"export:{tmp_path}")


def test_majority_answer_is_the_most_common_training_response() -> None:
    assert majority_answer(["{}", '{"a": 1}', "{ }", "{}"]) == "{}"
    assert majority_answer(["refund", "Card.", "card", "card", "refund", "card"]) == "Card."  # label data: by label
    assert majority_answer(["b", "a", "a", "b"]) == "b"  # a tie goes to the first seen
    assert majority_answer([]) == ""


def test_knn_shots_are_the_most_similar_training_prompts_most_similar_last() -> None:
    train = [_conv("cancel my table booking for friday", "cancel"), _conv("weather in paris tomorrow", "weather"),
             _conv("book a table for four on friday", "book"), _conv("tell me a joke", "joke")]
    holdout = [_conv("book a table for two on friday", "?"), _conv("xyzzy", "?")]
    shots = nearest_shots(train, holdout, k=2)
    assert [c.response_text() for c in shots[0]] == ["cancel", "book"]
    assert len(shots[1]) == 2  # no word in common: the seeded fixed choice, not an arbitrary top 2
    system = parse_baselines("few-shot-knn:2")[0]
    prompts = prompts_for(system, holdout, train, seed=0)
    assert [m.content for m in prompts[0].messages] == [
        "S", "cancel my table booking for friday", "cancel", "book a table for four on friday", "book",
        "book a table for two on friday", "?"]
    assert nearest_shots(train[:1], holdout, k=5)[0] == train[:1]  # k larger than the training set
