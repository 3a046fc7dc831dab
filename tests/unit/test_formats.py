"""Formats users actually have: each read from a small file in its tool's shape (tests/assets/formats)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from honed.data.formats import ColumnMapping
from honed.data.read import invalid_path_for, load_or_fail, read_conversations, sha256_file
from honed.errors import DataError

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "formats"


def _roles(conversation) -> list[str]:
    return [m.role for m in conversation.messages]


def test_sharegpt_llamafactory_with_tools_and_function_calls() -> None:
    result = read_conversations(ASSETS / "sharegpt_llamafactory.json")
    assert result.format == "sharegpt (json)" and not result.problems
    weather, chat = result.conversations
    assert _roles(weather) == ["system", "user", "assistant", "tool", "assistant"]
    call = weather.messages[2].tool_calls[0]
    assert call == {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    assert weather.tools[0]["type"] == "function" and weather.tools[0]["function"]["name"] == "get_weather"
    assert weather.system_text() == "You are a weather assistant."
    assert _roles(chat) == ["user", "assistant", "user", "assistant"] and chat.tools is None


def test_sharegpt_axolotl_jsonl_roles() -> None:
    result = read_conversations(ASSETS / "sharegpt_axolotl.jsonl")
    assert result.format == "sharegpt (jsonl)" and len(result.conversations) == 3
    assert _roles(result.conversations[0]) == ["system", "user", "assistant"]
    assert _roles(result.conversations[2]) == ["user", "assistant", "tool", "assistant"]
    assert result.conversations[1].response_text() == "Rome"


def test_sharegpt_faults_name_the_turn(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    rows = [
        {"conversations": [{"from": "alien", "value": "x"}, {"from": "gpt", "value": "y"}]},
        {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": ""}]},
        {"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": "not json"}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    problems = [str(p) for p in read_conversations(path).problems]
    assert problems[0].endswith(
        "bad.jsonl:1: conversations[0].from: unknown speaker 'alien'; use one of "
        "human, gpt, system, function_call, observation, tool"
    )
    assert "bad.jsonl:2: conversations[1].content: empty assistant message" in problems[1]
    assert "bad.jsonl:3: conversations[1].value: a function_call value must be JSON" in problems[2]


def test_sharegpt_in_parquet_and_in_a_messages_key(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]
    pq.write_table(pa.table({"conversations": [turns], "id": [1]}), tmp_path / "d.parquet")
    result = read_conversations(tmp_path / "d.parquet")
    assert result.format == "sharegpt (parquet)" and result.conversations[0].response_text() == "Hello"
    (tmp_path / "m.jsonl").write_text(json.dumps({"messages": turns}) + "\n")
    assert read_conversations(tmp_path / "m.jsonl").format == "sharegpt (jsonl)"


def test_openai_content_parts_are_joined() -> None:
    result = read_conversations(ASSETS / "openai_content_parts.jsonl")
    assert not result.problems
    first = result.conversations[0]
    assert first.messages[0].content == "Be brief."
    assert first.messages[1].content == "Summarise:\nThe cat sat on the mat."
    assert first.response_text() == "A cat sat."


def test_a_non_text_content_part_is_a_clear_fault() -> None:
    result = read_conversations(ASSETS / "openai_image_part.jsonl")
    assert not result.conversations
    (problem,) = result.problems
    assert problem.field == "messages[0].content[1]"
    assert "'image_url' part, not text; honed trains on text only" in problem.message


def test_trl_conversational_prompt_completion_trains_only_the_completion() -> None:
    result = read_conversations(ASSETS / "trl_conversational_pc.jsonl")
    assert result.format == "prompt-completion (jsonl)" and not result.problems
    multi = result.conversations[1]
    assert _roles(multi) == ["system", "user", "assistant", "user", "assistant"]
    assert [m.trainable for m in multi.messages] == [False, False, False, False, True]
    assert multi.response_text() == "12"


def test_trl_conversational_faults_point_into_prompt_or_completion(tmp_path: Path) -> None:
    path = tmp_path / "pc.jsonl"
    path.write_text(
        json.dumps(
            {
                "prompt": [{"role": "usr", "content": "x"}],
                "completion": [{"role": "assistant", "content": "y"}],
            }
        )
        + "\n"
    )
    (problem,) = read_conversations(path).problems
    assert problem.field == "prompt[0].role" and "unknown role 'usr'" in problem.message


def test_plain_text_is_its_own_format() -> None:
    result = read_conversations(ASSETS / "text.jsonl")
    assert result.format.startswith("text (jsonl)") and "every token trained" in result.format
    assert all(c.plain for c in result.conversations)
    assert result.conversations[1].to_json() == {"text": "Fine-tuning on plain text trains every token."}
    assert result.conversations[0].last_assistant_index() is None


def test_text_beside_another_content_column_is_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "card lost", "label": "lost_card"}) + "\n")
    with pytest.raises(DataError, match="--prompt-col text --response-col label"):
        read_conversations(path)
    assert read_conversations(path, fmt="text").conversations[0].plain


def test_alpaca_history_becomes_earlier_turns() -> None:
    (conversation,) = read_conversations(ASSETS / "alpaca_history.json").conversations
    contents = [m.content for m in conversation.messages]
    assert contents == [
        "You translate greetings.",
        "Say hello in Spanish.",
        "Hola",
        "And in German?",
        "Hallo",
        "And in Italian?",
        "Ciao",
        "And in French?",
        "Bonjour",
    ]
    assert sum(m.trainable for m in conversation.messages) == 4


def test_alpaca_history_fault(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"instruction": "i", "output": "o", "history": [["only one"]]}) + "\n")
    (problem,) = read_conversations(path).problems
    assert problem.field == "history[0]" and "pair of non-empty strings" in problem.message


def test_system_col_gives_each_row_its_system_prompt() -> None:
    mapping = ColumnMapping("question", "answer", system="Default.", system_col="persona")
    result = read_conversations(ASSETS / "columns_system_col.csv", columns=mapping)
    assert result.format == "csv (prompt=question, response=answer, system=persona)"
    first, second = result.conversations
    assert first.system_text() == "You are a maths tutor."
    assert second.system_text() == "Default."  # an empty cell falls back to --system


def test_system_col_missing_is_named() -> None:
    mapping = ColumnMapping("question", "answer", system_col="role")
    with pytest.raises(
        DataError, match=r"no column 'role' \(--system-col\); columns found: question, answer"
    ):
        read_conversations(ASSETS / "columns_system_col.csv", columns=mapping)


# ---- inputs beyond one file


def test_a_folder_of_shards_is_read_in_order() -> None:
    result = read_conversations(ASSETS / "shards")
    assert result.format == "openai-chat (jsonl), 2 files"
    assert [c.response_text() for c in result.conversations] == ["zero", "one", "one again"]
    assert result.conversations[2].source.file.endswith("train-00001-of-00002.jsonl")
    assert result.conversations[2].source.line == 2


def test_a_glob(tmp_path: Path) -> None:
    pattern = str(ASSETS / "shards" / "*-00001-*.jsonl")
    assert len(read_conversations(pattern).conversations) == 2
    with pytest.raises(DataError, match="the pattern matches no data file"):
        read_conversations(str(tmp_path / "*.jsonl"))


def test_folder_and_glob_hash_changes_with_content(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "a.jsonl").write_text((ASSETS / "text.jsonl").read_text())
    before = sha256_file(folder)
    assert sha256_file(str(folder / "*.jsonl")) != "" and sha256_file(folder) == before
    (folder / "b.jsonl").write_text((ASSETS / "text.jsonl").read_text())
    assert sha256_file(folder) != before


def test_side_file_of_a_folder_or_glob_is_beside_it_and_never_read_back(tmp_path: Path) -> None:
    assert invalid_path_for(tmp_path / "shards") == Path(f"{tmp_path}/shards.invalid.jsonl")
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "ok"}\n{"text": ""}\n')
    result = load_or_fail(str(folder / "*.jsonl"), skip_invalid=True)
    assert result.invalid_path is not None and result.invalid_path.parent == folder
    assert "*" not in result.invalid_path.name and result.invalid_path.exists()
    assert len(read_conversations(folder).conversations) == 1  # the side file is not a shard


def test_arrow_stream_file_as_datasets_writes_it(tmp_path: Path) -> None:
    import pyarrow as pa

    table = pa.table({"prompt": ["2+2=", "3+3="], "completion": ["4", "6"]})
    with pa.OSFile(str(tmp_path / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    result = read_conversations(tmp_path / "data-00000-of-00001.arrow")
    assert result.format == "prompt-completion (arrow)" and len(result.conversations) == 2


def test_datasets_save_to_disk_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {
        "messages": [
            [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
            for i in range(3)
        ]
    }
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
    result = read_conversations(tmp_path / "saved")
    assert [c.response_text() for c in result.conversations] == ["a0", "a1", "a2"]
    assert "arrow" in result.format
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="a saved DatasetDict with splits train; pass one split's folder"):
        read_conversations(tmp_path / "dd")


# ---- nothing dropped silently


def test_images_and_placeholders_are_counted() -> None:
    result = read_conversations(ASSETS / "multimodal_llamafactory.json")
    assert len(result.conversations) == 2
    notices = {n.code: n for n in result.notices}
    assert notices["content_field"].count == 2 and "'images'" in str(notices["content_field"])
    assert notices["placeholder"].count == 2 and "'<image>'" in str(notices["placeholder"])
    assert str(notices["placeholder"]).endswith(
        "(first: " + str(ASSETS / "multimodal_llamafactory.json") + ":2)"
    )
    with pytest.raises(DataError, match="does not train on \\(--strict\\)") as caught:
        load_or_fail(ASSETS / "multimodal_llamafactory.json", strict=True)
    assert any("2 rows carry a field honed does not train on ('images')" in d for d in caught.value.details)


def test_double_encoded_tool_arguments_are_flagged() -> None:
    (notice,) = read_conversations(ASSETS / "double_encoded_arguments.jsonl").notices
    assert notice.code == "double_encoded_arguments" and notice.count == 1


def test_duplicate_json_keys_are_a_fault(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"prompt": "a", "completion": "b", "completion": "c"}\n{"prompt": "x", "completion": "y"}\n'
    )
    result = read_conversations(path)
    assert len(result.conversations) == 1
    assert "d.jsonl:1: the key 'completion' appears twice in one object" in str(result.problems[0])
    array = tmp_path / "d.json"
    array.write_text('[\n{"text": "a", "text": "b"},\n{"text": "c"}\n]\n')
    result = read_conversations(array)
    assert len(result.conversations) == 1 and "d.json:2: the key 'text' appears twice" in str(
        result.problems[0]
    )


def test_duplicate_csv_columns_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion,completion\na,b,c\n")
    with pytest.raises(DataError, match="d.csv:1: the header names column 'completion' more than once"):
        read_conversations(path)


def test_git_lfs_pointer_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 1234\n")
    with pytest.raises(DataError, match="this is a Git LFS pointer, not the data; run `git lfs pull`"):
        read_conversations(path)


def test_a_fifo_is_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"pipe.jsonl: is a named pipe \(FIFO\), not a data file"):
        read_conversations(fifo)


def test_dev_zero_is_refused() -> None:
    with pytest.raises(DataError, match="/dev/zero: is a device, not a data file"):
        read_conversations("/dev/zero", fmt="chat")


def test_reading_stops_at_the_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text('{"text": "' + "x" * 200 + '"}\n')
    monkeypatch.setenv("HONED_MAX_DATA_BYTES", "100")
    with pytest.raises(DataError, match="big.jsonl: larger than 100 bytes"):
        read_conversations(path)


@pytest.mark.parametrize(
    "record,expect",
    [
        ({"question": "q", "answer": "a"}, "read it with --prompt-col question --response-col answer"),
        (
            {"prompt": "q", "response": "a"},
            "closest format: prompt-completion, which needs 'completion'; read it with --prompt-col prompt",
        ),
        ({"instruction": "q", "response": "a"}, "closest format: alpaca, which needs 'output'"),
    ],
)
def test_unknown_format_names_the_closest_and_the_flag(tmp_path: Path, record: dict, expect: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match="d.jsonl:1: unknown format") as caught:
        read_conversations(path)
    assert expect in caught.value.message


def test_plain_text_renders_without_a_template_and_round_trips(tmp_path: Path, tiny_tokenizer: Any) -> None:
    from honed.data.read import write_jsonl
    from honed.data.render import render, supervised_spans

    tokenizer = tiny_tokenizer
    conversation = read_conversations(ASSETS / "text.jsonl").conversations[0]
    text, spans = supervised_spans(tokenizer, conversation)
    assert text == f"{tokenizer.bos_token}The quick brown fox jumps over the lazy dog.{tokenizer.eos_token}"
    assert spans == [(len(tokenizer.bos_token), len(text))]
    rendered = render(conversation, tokenizer)
    assert rendered.loss_mask[0] is False and all(rendered.loss_mask[1:])
    write_jsonl(tmp_path / "out.jsonl", [conversation])
    assert read_conversations(tmp_path / "out.jsonl").conversations == [conversation]


def test_a_folder_holding_several_splits_is_refused(tmp_path: Path) -> None:
    for name in ("train-00000-of-00001.jsonl", "test-00000-of-00001.jsonl"):
        (tmp_path / name).write_text('{"text": "x"}\n')
    with pytest.raises(DataError, match=r"holds several splits \(test, train\); .* pass one"):
        read_conversations(tmp_path)
    assert len(read_conversations(str(tmp_path / "train*")).conversations) == 1


def test_sharegpt_json_in_a_csv_cell_and_content_parts_in_parquet_structs(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    turns = json.dumps([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hey"}])
    (tmp_path / "d.csv").write_text('conversations\n"' + turns.replace('"', '""') + '"\n')
    result = read_conversations(tmp_path / "d.csv")
    assert result.format == "sharegpt (csv)" and result.conversations[0].response_text() == "Hey"
    # pyarrow stores parts as structs, so every part carries every field (None where unused)
    parts = [{"type": "text", "text": "Describe", "image_url": None}]
    messages = [
        {"role": "user", "content": parts},
        {"role": "assistant", "content": [{**parts[0], "text": "Ok"}]},
    ]
    pq.write_table(pa.table({"messages": [messages]}), tmp_path / "p.parquet")
    (conversation,) = read_conversations(tmp_path / "p.parquet").conversations
    assert [m.content for m in conversation.messages] == ["Describe", "Ok"]
