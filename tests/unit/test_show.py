"""`honed data show`: the preview shows exactly the tokens and mask that training uses."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from honed.cli import app
from honed.data.render import render, supervised_spans
from honed.data.show import ExampleView, TokenView, has_chat_template, preview, print_preview
from honed.data.types import Conversation, Message, Source
from honed.model.loading import load_tokenizer

from tests.helpers import TINY


def chat(user: str, answer: str, *, weight: int | None = None, line: int = 1) -> Conversation:
    return Conversation(
        messages=(
            Message("system", "Be brief."), Message("user", user), Message("assistant", answer, weight)
        ),
        source=Source("data.jsonl", line),
    )


@pytest.fixture()
def data_file(tmp_path: Path) -> Path:
    rows = [chat("What is the capital of France?", "Paris"), chat("Hi there", "Hello!"), chat("2+2?", "4")]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(c.to_json()) + "\n" for c in rows))
    return path


def supervised_text(view: ExampleView) -> str:
    return "".join(t.text for t in view.tokens if t.supervised)


def test_preview_matches_render_token_for_token(tiny_tokenizer: Any) -> None:
    conversation = chat("What is the capital of France?", "Paris")
    [view] = preview([conversation], tiny_tokenizer, n=1)
    rendered = render(conversation, tiny_tokenizer)
    assert [t.id for t in view.tokens] == rendered.input_ids
    assert [t.supervised for t in view.tokens] == rendered.loss_mask
    # The token texts put back together are the template text, whitespace and special tokens included.
    assert "".join(t.text for t in view.tokens) == supervised_spans(tiny_tokenizer, conversation)[0]
    assert supervised_text(view) == "Paris<|im_end|>\n"
    assert view.source == "data.jsonl:1"


def test_summary_counts_tokens_and_supervised_share() -> None:
    view = ExampleView("x:1", [TokenView("a", 1, False)] * 3 + [TokenView("b", 2, True)], 4, False)
    assert view.summary() == "4 tokens, 1 supervised (25.0%)"


def test_preview_takes_the_first_n_and_truncates_like_training(tiny_tokenizer: Any) -> None:
    data = [chat(f"question {i}", f"answer {i}", line=i + 1) for i in range(5)]
    views = preview(data, tiny_tokenizer, n=2, max_length=12)
    assert [v.source for v in views] == ["data.jsonl:1", "data.jsonl:2"]
    assert all(v.truncated and len(v.tokens) == 12 and v.full_length > 12 for v in views)
    assert len(preview(data, tiny_tokenizer, n=10)) == 5


def test_weight_zero_answer_shows_nothing_supervised(tiny_tokenizer: Any) -> None:
    [view] = preview([chat("Hi", "Hello", weight=0)], tiny_tokenizer)
    assert view.num_supervised == 0


def render_to_ansi(views: list[ExampleView]) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=200)
    print_preview(console, views)
    return out.getvalue()


def styled(ansi: str, code: str) -> str:
    """The text printed in one ANSI style (e.g. '1;32' bold green), segments joined."""
    return "".join(text for style, text in re.findall(r"\x1b\[([0-9;]+)m([^\x1b]*)", ansi) if style == code)


def test_rich_output_colours_supervised_and_masked_tokens_differently(tiny_tokenizer: Any) -> None:
    views = preview([chat("What is the capital of France?", "Paris")], tiny_tokenizer)
    ansi = render_to_ansi(views)
    example = ansi[ansi.index("example 1") :]
    # Supervised: bold green (rich writes the newline itself outside the styled segment).
    assert styled(example, "1;32") == "Paris<|im_end|>↵"
    assert "What is the capital of France?" in styled(example, "2")  # masked: dim
    assert "<|im_start|>assistant↵" in styled(example, "2")
    assert "legend:" in ansi and "supervised" in ansi and "masked" in ansi
    assert f"{len(views[0].tokens)} tokens, {views[0].num_supervised} supervised" in ansi


def test_rich_output_warns_about_truncation_and_empty_examples(tiny_tokenizer: Any) -> None:
    views = preview([chat("What is the capital of France?", "Paris")], tiny_tokenizer, max_length=5)
    text = render_to_ansi(views)
    assert "truncated: 5 of" in text
    assert "no supervised tokens" in text


def test_cli_json_lists_every_token(data_file: Path) -> None:
    args = ["data", "show", str(data_file), "--model", str(TINY), "-n", "2", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["default_chat_template"] is False
    assert len(payload["examples"]) == 2
    first = payload["examples"][0]
    assert set(first["tokens"][0]) == {"text", "id", "supervised"}
    assert "".join(t["text"] for t in first["tokens"] if t["supervised"]) == "Paris<|im_end|>\n"
    assert first["num_supervised"] == sum(t["supervised"] for t in first["tokens"])
    assert first["num_tokens"] == len(first["tokens"])


def test_cli_rich_output_has_a_line_per_example(data_file: Path) -> None:
    result = CliRunner().invoke(app, ["data", "show", str(data_file), "--model", str(TINY), "-n", "3"])
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"\d+ tokens, \d+ supervised \(\d+\.\d%\)", result.output)) == 3
    assert "legend:" in result.output
    assert "chat template: model (end of turn '<|im_end|>'): the model's own chat template" in result.output


def test_cli_says_when_the_default_chat_template_is_used(data_file: Path, tmp_path: Path) -> None:
    no_template = tmp_path / "tiny-no-template"
    shutil.copytree(TINY, no_template)
    (no_template / "chat_template.jinja").unlink()
    assert not has_chat_template(load_tokenizer(str(no_template)))
    result = CliRunner().invoke(app, ["data", "show", str(data_file), "--model", str(no_template), "-n", "1"])
    assert result.exit_code == 0, result.output
    # The tiny vocabulary has ChatML's turn tokens, so its family is found from them.
    assert "chat template: chatml (end of turn '<|im_end|>'): no template in the model" in result.output
    as_json = CliRunner().invoke(app, ["data", "show", str(data_file), "--model", str(no_template), "--json"])
    payload = json.loads(as_json.stdout)
    assert payload["default_chat_template"] is True and payload["chat_template"]["name"] == "chatml"
    forced = CliRunner().invoke(app, ["data", "show", str(data_file), "--model", str(TINY), "--chat-template", "phi3"])
    assert forced.exit_code == 0, forced.output
    assert "chat template: phi3 (end of turn '<|end|>'): --chat-template phi3" in forced.output


def test_cli_bad_model_is_a_clear_error(data_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "show", str(data_file), "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_cli_skip_invalid_shows_the_valid_rows(data_file: Path) -> None:
    with data_file.open("a", encoding="utf-8") as f:
        f.write("{oops\n")
    failed = CliRunner().invoke(app, ["data", "show", str(data_file), "--model", str(TINY)])
    assert failed.exit_code == 2 and "--skip-invalid" in failed.output  # the advice names a real flag
    args = ["data", "show", str(data_file), "--model", str(TINY), "-n", "1", "--skip-invalid", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["examples"]) == 1
