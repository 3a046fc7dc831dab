"""Constrained decoding in honed's own batched generator: label tries and JSON (xgrammar), row by row."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import torch

from honed.model.prompt import render_prompt
from honed.data.types import Conversation, Message
from honed.errors import ConfigError
from honed.evaluate.constrain import plan_constraint
from honed.model.constrain import JsonConstraint, LabelConstraint, compile_json
from honed.model.decode import generate, stops_for

LABELS = ["bug", "billing", "how_to", "account", "feature_request", "b"]  # "b" is a prefix of two others
ENUM_SCHEMA = {
    "type": "object",
    "properties": {"category": {"enum": ["billing", "account", "bug"]}, "priority": {"enum": ["low", "high"]},
                   "urgent": {"type": "boolean"}},
    "required": ["category", "priority", "urgent"],
    "additionalProperties": False,
}


def _prompts(tokenizer: object, n: int = 10) -> list[list[int]]:
    convs = [Conversation(messages=(Message("system", "Label it."), Message("user", f"message {i} " * (i % 4 + 1)),
                                    Message("assistant", "x"))) for i in range(n)]
    return [render_prompt(c, tokenizer) for c in convs]


def _labels(model: object, tokenizer: object) -> LabelConstraint:
    return LabelConstraint(LABELS, tokenizer, stop_ids=stops_for(tokenizer, model).id_list,
                           vocab_size=model.config.vocab_size)


def test_every_label_constrained_answer_is_a_label(tiny_model: Any, tiny_tokenizer: Any) -> None:
    model, tokenizer = tiny_model, tiny_tokenizer
    prompts = _prompts(tokenizer)
    free, _ = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=4)
    assert not any(g.text in LABELS for g in free), "the random model alone never answers with a label"
    constrained, _ = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=4,
                              constraint=_labels(model, tokenizer))
    assert all(g.stopped and g.text in LABELS for g in constrained), [g.text for g in constrained]
    one_by_one = [generate(model, tokenizer, [p], max_new_tokens=12, batch_size=1,
                           constraint=_labels(model, tokenizer))[0][0].token_ids for p in prompts]
    assert [g.token_ids for g in constrained] == one_by_one


def test_the_label_trie_allows_only_label_continuations_and_stops_where_a_label_ends(
    tiny_model: Any, tiny_tokenizer: Any
) -> None:
    model, tokenizer = tiny_model, tiny_tokenizer
    constraint = _labels(model, tokenizer)
    stop = stops_for(tokenizer, model).id_list[0]
    state = constraint.start()
    first = {tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in LABELS}
    assert set(torch.nonzero(state.allowed()).flatten().tolist()) == first  # no stop before any label
    for token in tokenizer("b", add_special_tokens=False)["input_ids"]:
        state.advance(token)
    assert state.allowed()[stop]  # "b" is a whole label: it may end here ...
    assert state.allowed().sum() > 1  # ... or go on to "bug" / "billing"


def test_json_constrained_answers_parse_and_follow_the_schema(tiny_model: Any, tiny_tokenizer: Any) -> None:
    model, tokenizer = tiny_model, tiny_tokenizer
    prompts = _prompts(tokenizer)
    stops, vocab = stops_for(tokenizer, model).id_list, model.config.vocab_size
    constraint = JsonConstraint(compile_json(ENUM_SCHEMA), tokenizer, stop_ids=stops, vocab_size=vocab)
    outputs, _ = generate(model, tokenizer, prompts, max_new_tokens=60, batch_size=4, constraint=constraint)
    for g in outputs:
        assert g.stopped, g.text
        jsonschema.validate(json.loads(g.text), ENUM_SCHEMA)
    one_by_one = [generate(model, tokenizer, [p], max_new_tokens=60, batch_size=1,
                           constraint=constraint)[0][0].token_ids for p in prompts[:3]]
    assert [g.token_ids for g in outputs[:3]] == one_by_one


def test_any_json_object_every_finished_answer_parses(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """Without a schema any object goes; the random model writes endless strings, so some answers are cut
    by max_new_tokens (reported as unfinished), but every answer that ended is an object, and every answer
    is the start of one."""
    model, tokenizer = tiny_model, tiny_tokenizer
    constraint = JsonConstraint(compile_json(None), tokenizer, stop_ids=stops_for(tokenizer, model).id_list,
                                vocab_size=model.config.vocab_size)
    outputs, _ = generate(model, tokenizer, _prompts(tokenizer), max_new_tokens=40, batch_size=5,
                          constraint=constraint)
    assert all(g.text.startswith("{") for g in outputs)
    for g in (g for g in outputs if g.stopped):
        assert isinstance(json.loads(g.text), dict)


def test_constraint_plan_refuses_what_it_cannot_do() -> None:
    labels = ["yes", "no"] * 5
    objects = ['{"a": 1}', '{"a": 2}']
    assert plan_constraint("labels", train_targets=labels).labels == ("no", "yes")
    assert plan_constraint("json", train_targets=objects).schema is None
    cases = [
        (dict(kind="foo", train_targets=labels), "--constrain foo: unknown constraint"),
        (dict(kind="labels", train_targets=objects + ["free text that goes on"] * 3), "not labels"),
        (dict(kind="json", train_targets=labels), "not JSON objects"),
        (dict(kind="labels", train_targets=[]), "training examples are gone"),
        (dict(kind="json", train_targets=objects, schema={"type": "object", "properties": {"a": {"$ref": "#/x"}}},
              schema_path="s.json"), "s.json: xgrammar cannot constrain decoding to this schema"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message.replace("+", r"\+").replace("$", r"\$")):
            plan_constraint(kwargs.pop("kind"), **kwargs)


def test_a_schema_error_names_no_cpp_source_line() -> None:
    with pytest.raises(ConfigError) as error:
        compile_json({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=a)b"}}})
    assert "Lookbehind is not supported" in error.value.message and ".cc:" not in error.value.message
