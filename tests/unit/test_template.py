"""honed.model.template: which chat template a model gets, and the end of turn it stops on.

The tokenizers are the tiny committed one dressed as each family (tests/assets/families.py): no model
weights are needed to choose a template.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from honed.errors import ConfigError
from honed.model.template import CHATML, PHI3, ChatTemplate, choose_template, end_of_turn_of
from tests.assets.families import FAMILIES, base_tokenizer, family_tokenizer


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_model_without_a_template_gets_its_family_by_architecture_and_vocabulary(name: str) -> None:
    spec = FAMILIES[name]
    choice = choose_template(family_tokenizer(spec), model_type=spec.model_type)
    assert (choice.name, choice.end_of_turn, choice.added_tokens) == (spec.template, spec.end_of_turn, spec.added)


def test_the_vocabulary_decides_when_the_architecture_names_no_family() -> None:
    tokenizer = family_tokenizer(FAMILIES["gemma3"])
    choice = choose_template(tokenizer, model_type="some_new_arch")
    assert choice.name == "gemma" and "some_new_arch" in choice.reason


def test_an_architecture_whose_family_tokens_are_missing_is_not_given_that_family() -> None:
    # a Gemma architecture with Llama 3's tokens: the vocabulary wins, the architecture alone does not
    choice = choose_template(family_tokenizer(FAMILIES["llama3"]), model_type="gemma3_text")
    assert choice.name == "llama3"


def test_the_models_own_template_is_kept() -> None:
    tokenizer = family_tokenizer(FAMILIES["qwen2"])
    tokenizer.chat_template = CHATML
    choice = choose_template(tokenizer, model_type="qwen2")
    assert (choice.name, choice.end_of_turn) == ("model", "<|im_end|>")


def test_a_template_that_rewrites_earlier_turns_is_replaced_with_the_reason_said() -> None:
    tokenizer = family_tokenizer(FAMILIES["qwen3"])
    tokenizer.chat_template = CHATML + "{% if message.reasoning_content %}{% endif %}"  # Qwen3's marker
    choice = choose_template(tokenizer, model_type="qwen3")
    assert choice.name == "chatml" and "reasoning" in choice.reason


def test_override_by_family_name_adds_missing_turn_tokens() -> None:
    tokenizer = base_tokenizer()
    choice = choose_template(tokenizer, model_type="llama", override="gemma")
    assert choice.name == "gemma" and choice.added_tokens == ("<start_of_turn>", "<end_of_turn>")
    choice.apply(tokenizer)
    assert len(tokenizer("<end_of_turn>", add_special_tokens=False)["input_ids"]) == 1


def test_override_by_file_finds_an_end_of_turn_of_several_tokens(tmp_path: Path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} END\n{% endfor %}")
    choice = choose_template(base_tokenizer(), model_type="llama", override=str(template))
    assert (choice.name, choice.end_of_turn) == ("file", "END")


def test_an_unknown_override_names_the_families() -> None:
    with pytest.raises(ConfigError, match="gemma, llama3"):
        choose_template(base_tokenizer(), model_type="llama", override="vicuna")


def test_end_of_turn_is_the_special_token_right_after_the_answer() -> None:
    tokenizer = family_tokenizer(FAMILIES["phi3"])
    assert end_of_turn_of(tokenizer, PHI3) == "<|end|>"  # the answer is followed by "<|end|>\n"


def test_the_choice_round_trips_through_the_runs_template_json() -> None:
    choice = choose_template(base_tokenizer(), model_type="llama")
    assert ChatTemplate.from_json(choice.to_json()) == choice

