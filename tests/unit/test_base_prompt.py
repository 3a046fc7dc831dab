"""honed.evaluate.base_prompt: a base model without a chat template of its own is prompted as plain text
by the prompted baselines, and its answer ends where it starts the next example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from honed.data.types import Conversation, Message
from honed.evaluate import run_eval
from honed.evaluate.base_prompt import NEXT_EXAMPLE, plain_text, ships_chat_template
from honed.evaluate.systems import with_shots
from honed.model.decode import Generation
from honed.model.loading import load_tokenizer
from honed.model.tokenizers import model_tokenizer
from tests.assets.families import build
from tests.helpers import TINY


def chat(*turns: tuple[str, str]) -> Conversation:
    return Conversation(tuple(Message(role, content) for role, content in turns))


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Gemma 3 without a chat template (honed gives it the gemma family's)."""
    return build("gemma3", tmp_path_factory.mktemp("gemma3") / "model")


def test_shots_system_and_earlier_turns_become_plain_text() -> None:
    question = chat(("system", "Classify."), ("user", "refund?"), ("assistant", "billing"))
    shots = [chat(("user", " hi \n"), ("assistant", "greeting")), chat(("user", "a"), ("assistant", "b"),
                                                                       ("tool", "42"), ("assistant", "c"))]
    assert plain_text(with_shots(question, shots)) == (
        "Classify.\n\nInput: hi\nOutput: greeting\n\nInput: a\nOutput: b\n\nTool result: 42\nOutput: c\n\n"
        "Input: refund?\nOutput:")


def test_only_a_model_whose_files_carry_a_template_keeps_its_turns(gemma3: Path) -> None:
    assert ships_chat_template(TINY)  # tests/assets/tiny-llama/chat_template.jinja
    assert not ships_chat_template(str(gemma3))
    assert model_tokenizer(str(gemma3))[1].name == "gemma"  # what the tuned model is trained and asked with


def test_plain_prompts_carry_no_turn_markers_and_stop_at_the_next_example(gemma3: Path, monkeypatch) -> None:
    tokenizer, _ = model_tokenizer(str(gemma3))
    seen: dict[str, Any] = {}

    def spy(model: Any, tokenizer: Any, prompts: list[list[int]], **kwargs: Any) -> tuple[list[Generation], Any]:
        seen.update(prompts=prompts, stops=kwargs["stops"])
        return [Generation(text="x", token_ids=[], stopped=True) for _ in prompts], None

    monkeypatch.setattr(run_eval, "generate", spy)
    question = with_shots(chat(("user", "refund?"), ("assistant", "billing")),
                          [chat(("user", "hi"), ("assistant", "greeting"))])
    model = type("Model", (), {"generation_config": None})()
    run_eval.run_system(model, tokenizer, [question], max_new_tokens=4, batch_size=1, plain=True)
    text = tokenizer.decode(seen["prompts"][0])
    assert text == "<bos>Input: hi\nOutput: greeting\n\nInput: refund?\nOutput:"
    assert "<start_of_turn>" not in text and NEXT_EXAMPLE in seen["stops"].strings
    run_eval.run_system(model, tokenizer, [question], max_new_tokens=4, batch_size=1)  # the tuned model's way
    assert tokenizer.decode(seen["prompts"][0]).count("<start_of_turn>") == 4 and seen["stops"] is None


def test_an_answer_is_cut_where_the_next_example_starts() -> None:
    tokenizer = load_tokenizer(TINY)
    from honed.model.stops import stop_rule

    rule = stop_rule(tokenizer, "<|im_end|>", extra=(NEXT_EXAMPLE,))
    ids = tokenizer(" billing\n\nInput:", add_special_tokens=False)["input_ids"]  # decoding checks each new token
    assert rule.cut(tokenizer, ids[:-1]) is None and rule.cut(tokenizer, ids) is not None
    assert rule.answer_text(tokenizer, ids) == "billing"
