"""Readers: every supported format -> Conversations, detection, line numbers, writing, load_or_fail."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from honed.data.read import (
    RAW_CHARS,
    ColumnMapping,
    load_or_fail,
    read_conversations,
    write_invalid,
    write_jsonl,
)
from honed.data.types import Conversation, Message, Source
from honed.errors import ConfigError, DataError


def chat(user: str = "Hi", reply: str = "Hello") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def write_lines(path: Path, records: list[Any]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8"
    )
    return path


def texts(result: Any) -> list[tuple[str, ...]]:
    return [tuple(m.content for m in c.messages) for c in result.conversations]


# --- JSONL and JSON ----------------------------------------------------------------------------------------


def test_chat_jsonl_keeps_everything_and_numbers_lines(tmp_path: Path) -> None:
    tool_chat = {
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "content": "18C", "tool_call_id": "c1", "name": "w"},
            {"role": "assistant", "content": "18C.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "w"}}],
    }
    path = write_lines(tmp_path / "d.jsonl", [chat(), "", tool_chat])
    result = read_conversations(path)
    assert result.format == "openai-chat (jsonl)"
    assert result.problems == []
    assert [c.source for c in result.conversations] == [Source(str(path), 1), Source(str(path), 3)]
    second = result.conversations[1]
    assert second.tools == tool_chat["tools"]
    assert second.messages[2].tool_calls == tool_chat["messages"][2]["tool_calls"]
    assert second.messages[3] == Message("tool", "18C", tool_call_id="c1", name="w")
    assert second.messages[4].weight == 1


def test_json_array_elements_keep_their_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(
        '[\n  {"prompt": "a", "completion": "b"},\n\n  {"prompt": "c",\n   "completion": "d"}\n]\n'
    )
    result = read_conversations(path)
    assert result.format == "prompt-completion (json)"
    assert [c.source.line for c in result.conversations] == [2, 4]
    assert texts(result) == [("a", "b"), ("c", "d")]


def test_json_file_with_one_object_or_json_lines(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    one.write_text(json.dumps(chat(), indent=2))
    assert texts(read_conversations(one)) == [("Hi", "Hello")]
    lines = write_lines(tmp_path / "lines.json", [chat("a", "b"), chat("c", "d")])
    assert texts(read_conversations(lines)) == [("a", "b"), ("c", "d")]


def test_prompt_completion_jsonl(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "pc.jsonl", [{"prompt": "2+2=", "completion": "4"}])
    result = read_conversations(path)
    assert result.format == "prompt-completion (jsonl)"
    assert [m.role for m in result.conversations[0].messages] == ["user", "assistant"]
    assert result.conversations[0].messages[1].trainable  # the completion is what is learnt


def test_alpaca_jsonl_and_json(tmp_path: Path) -> None:
    record = {"instruction": "Add.", "input": "1 1", "output": "2", "system": "Be exact."}
    for path in (write_lines(tmp_path / "a.jsonl", [record]), tmp_path / "a.json"):
        if path.suffix == ".json":
            path.write_text(json.dumps([record]))
        result = read_conversations(path)
        assert result.format == f"alpaca ({path.suffix[1:]})"
        assert texts(result) == [("Be exact.", "Add.\n\n1 1", "2")]


def test_format_detected_from_the_first_record_with_known_keys(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ["{broken", {"id": 1}, {"prompt": "a", "completion": "b"}])
    result = read_conversations(path)
    assert result.format == "prompt-completion (jsonl)"
    assert [row.source.line for row in result.bad_rows] == [1, 2]
    assert [str(p).split(": ", 1)[1] for p in result.bad_rows[1].problems] == [
        "missing field 'prompt' (keys found: id)",
        "missing field 'completion' (keys found: id)",
    ]


def test_unknown_format_lists_keys_and_flags(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(DataError, match=r"d.jsonl:1: unknown format.*question, answer.*--prompt-col"):
        read_conversations(path)


def test_column_mapping_on_jsonl(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [{"question": "a", "answer": "b"}, {"question": "c"}])
    result = read_conversations(path, columns=ColumnMapping("question", "answer", system="S"))
    assert result.format == "jsonl (prompt=question, response=answer, system prompt set)"
    assert texts(result) == [("S", "a", "b")]
    assert str(result.problems[0]) == f"{path}:2: missing field 'answer' (keys found: question)"


def test_every_problem_is_collected_and_good_rows_kept(tmp_path: Path) -> None:
    bad_role = {"messages": [{"role": "bot", "content": "x"}]}
    path = write_lines(
        tmp_path / "d.jsonl", [chat(), "{nope", bad_role, chat("a", "b"), "[1]", chat("c", "")]
    )
    result = read_conversations(path)
    assert texts(result) == [("Hi", "Hello"), ("a", "b")]
    assert sorted({p.source.line for p in result.problems}) == [2, 3, 5, 6]
    assert [row.source.line for row in result.bad_rows] == [2, 3, 5, 6]
    assert result.bad_rows[0].raw == "{nope"
    assert all(str(p).startswith(f"{path}:") for p in result.problems)


def test_problem_text_names_file_line_field_and_fix(tmp_path: Path) -> None:
    bad = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "bot", "content": "x"},
        ]
    }
    path = write_lines(tmp_path / "data.jsonl", [chat()] * 6 + [bad])
    problems = read_conversations(path).problems
    assert [str(p) for p in problems] == [
        f"{path}:7: messages[2].role: unknown role 'bot'; use one of system, user, assistant, tool"
    ]


# --- encodings and line endings ---------------------------------------------------------------------------


def test_bom_crlf_blank_lines_read_the_same(tmp_path: Path) -> None:
    body = [json.dumps(chat("a", "b")), json.dumps(chat("c", "d"))]
    plain = tmp_path / "plain.jsonl"
    plain.write_text("\n".join(body) + "\n")
    odd = tmp_path / "odd.jsonl"
    odd.write_bytes(b"\xef\xbb\xbf\r\n" + "\r\n\r\n".join(body).encode() + b"\r\n\r\n\r\n")
    plain_result, odd_result = read_conversations(plain), read_conversations(odd)
    assert odd_result.problems == []
    assert odd_result.conversations == plain_result.conversations
    assert [c.source.line for c in odd_result.conversations] == [2, 4]


def test_invalid_utf8_is_located_per_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        json.dumps(chat()).encode() + b"\n" + b'{"messages": "caf\xe9"}\n' + json.dumps(chat()).encode()
    )
    result = read_conversations(path)
    assert len(result.conversations) == 2
    assert str(result.problems[0]).startswith(f"{path}:2: invalid UTF-8 (byte 0xe9")


def test_invalid_utf8_inside_a_multiline_csv_field_marks_that_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b'text,label\n"one\ntwo caf\xe9",a\nok,b\n')
    result = read_conversations(path, columns=ColumnMapping("text", "label"))
    assert texts(result) == [("ok", "b")]
    assert str(result.problems[0]).startswith(f"{path}:2: line 3: invalid UTF-8")


@pytest.mark.parametrize(
    "content,expect",
    [
        (b"\x00\x01\x02" * 100, ":1: looks like a binary file"),
        (b'{"a": 1}\n{"b": \x00}\n', ":2: looks like a binary file, not UTF-8 text: it contains NUL bytes"),
        (bytes(range(128, 256)) * 10, ":1: looks like a binary file"),
        ("{}\n".encode("utf-16"), "UTF-16"),
        (b"PAR1\x00\x00", "Parquet file; name it .parquet"),
    ],
)
def test_binary_files_are_refused(tmp_path: Path, content: bytes, expect: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expect.replace(".", r"\.").replace("(", r"\(")):
        read_conversations(path)


def test_ten_megabyte_lines(tmp_path: Path) -> None:
    big = "x" * (10 * 1024 * 1024)
    path = write_lines(tmp_path / "d.jsonl", [chat(big, "ok"), '{"messages": "' + big + '", oops}'])
    result = read_conversations(path)
    assert len(result.conversations) == 1 and len(result.conversations[0].messages[0].content) == len(big)
    (problem,) = result.problems
    assert str(problem).startswith(f"{path}:2: invalid JSON")
    assert len(str(problem)) < 400
    assert len(result.bad_rows[0].raw) <= RAW_CHARS + 40


# --- CSV, TSV and Parquet --------------------------------------------------------------------------------


def test_csv_with_mapping_numbers_rows_by_file_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,category\n"two\nlines",a\n\nplain,b\n"three\n\nlines",\n')
    result = read_conversations(path, columns=ColumnMapping("text", "category", system="Classify."))
    assert result.format == "csv (prompt=text, response=category, system prompt set)"
    assert texts(result) == [("Classify.", "two\nlines", "a"), ("Classify.", "plain", "b")]
    assert [c.source.line for c in result.conversations] == [2, 5]
    assert str(result.problems[0]) == f"{path}:6: category: is empty; fill it in or remove the row"


def test_csv_auto_mapping_by_obvious_columns(tmp_path: Path) -> None:
    pc = tmp_path / "pc.csv"
    pc.write_text("prompt,completion,extra\n2+2=,4,x\n")
    assert read_conversations(pc).format == "prompt-completion (csv)"
    alpaca = tmp_path / "alpaca.csv"
    alpaca.write_text("instruction,input,output\nAdd.,1 1,2\n")
    assert texts(read_conversations(alpaca)) == [("Add.\n\n1 1", "2")]
    messages = tmp_path / "m.csv"
    messages.write_text("messages\n" + '"' + json.dumps(chat()["messages"]).replace('"', '""') + '"\n')
    assert read_conversations(messages).format == "openai-chat (csv)"


def test_csv_without_obvious_columns_asks_for_flags(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,category\na,b\n")
    with pytest.raises(
        DataError, match=r"d.csv:1: .*columns found: text, category.*--prompt-col text --response-col category"
    ):
        read_conversations(path)


def test_csv_missing_mapped_column_is_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,category\n" + "a,b\n" * 100)
    with pytest.raises(DataError) as caught:
        read_conversations(path, columns=ColumnMapping("text", "label"))
    assert (
        caught.value.message == f"{path}:1: no column 'label' (--response-col); columns found: text, category"
    )
    assert caught.value.details == []


def test_csv_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,b\na, b,c\n")
    result = read_conversations(path, columns=ColumnMapping("text", "label"))
    assert "d.csv:3: expected 2 fields (text, label), found 3" in str(result.problems[0])


def test_tsv(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("prompt\tcompletion\na, b\tc\n")
    assert texts(read_conversations(path)) == [("a, b", "c")]


def _parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_mapping_and_row_numbers(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "d.parquet", {"text": ["a", "b", "c"], "label": [1, None, 3], "x": [0, 0, 0]})
    result = read_conversations(path, columns=ColumnMapping("text", "label"))
    assert result.format == "parquet (prompt=text, response=label)"
    assert texts(result) == [("a", "1"), ("c", "3")]
    assert [c.source.line for c in result.conversations] == [1, 3]
    assert str(result.problems[0]) == f"{path}: row 2: label: is empty; fill it in or remove the row"
    assert json.loads(result.bad_rows[0].raw) == {"text": "b", "label": None}


def test_parquet_messages_column_native_or_json(tmp_path: Path) -> None:
    messages = chat()["messages"]
    native = _parquet(tmp_path / "n.parquet", {"messages": [messages]})
    as_text = _parquet(tmp_path / "t.parquet", {"messages": [json.dumps(messages)]})
    assert read_conversations(native).conversations == read_conversations(as_text).conversations
    assert texts(read_conversations(native)) == [("Hi", "Hello")]


def test_parquet_that_is_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_text("prompt,completion\n")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_conversations(path)


# --- explicit formats and file-level errors --------------------------------------------------------------


def test_explicit_format_overrides_detection(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b", "messages": "x"}])
    assert read_conversations(path).format == "openai-chat (jsonl)"
    result = read_conversations(path, fmt="prompt-completion")
    assert result.format == "prompt-completion (jsonl)" and texts(result) == [("a", "b")]
    txt = write_lines(tmp_path / "d.txt", [chat()])
    assert read_conversations(txt, fmt="chat").format == "openai-chat (jsonl)"
    csv_txt = tmp_path / "d.data"
    csv_txt.write_text("prompt,completion\na,b\n")
    assert read_conversations(csv_txt, fmt="csv").format == "prompt-completion (csv)"


def test_explicit_format_on_csv_needs_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion\na,b\n")
    with pytest.raises(DataError, match="--format alpaca needs column 'instruction' and 'output'"):
        read_conversations(path, fmt="alpaca")


def test_bad_options(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [chat()])
    with pytest.raises(ConfigError, match="unknown format 'yaml'; use one of auto, chat"):
        read_conversations(path, fmt="yaml")
    with pytest.raises(ConfigError, match="exclude each other"):
        read_conversations(path, fmt="chat", columns=ColumnMapping("a", "b"))


@pytest.mark.parametrize(
    "name,setup,expect",
    [
        ("missing.jsonl", None, "missing.jsonl: no such file; check the path"),
        ("folder", "dir", "folder: a folder with no data files"),
        ("notes.txt", "text", "notes.txt: unsupported file type '.txt'; use .jsonl"),
        ("d.jsonl.gz", "text", "unsupported file type '.gz'; decompress it first"),
        ("empty.jsonl", "empty", "empty.jsonl: no examples in the file"),
        ("blank.csv", "empty", "blank.csv: no examples"),
    ],
)
def test_file_level_errors(tmp_path: Path, name: str, setup: str | None, expect: str) -> None:
    path = tmp_path / name
    if setup == "dir":
        path.mkdir()
    elif setup == "text":
        path.write_text("hello\n")
    elif setup == "empty":
        path.write_text("\n \n")
    with pytest.raises(DataError) as caught:
        load_or_fail(path)
    assert expect in caught.value.message


def test_unreadable_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [chat()])
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who can read anything (root)")
        with pytest.raises(DataError, match="cannot read the file"):
            read_conversations(path)
    finally:
        path.chmod(0o644)


def test_pretty_printed_jsonl_is_one_error_not_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps([chat(), chat()], indent=2))
    with pytest.raises(DataError, match=r"d.jsonl:1: the file is one JSON array spread over \d+ lines"):
        read_conversations(path)


@pytest.mark.parametrize(
    "text,expect",
    [
        ('[\n{"prompt": "a", "completion": "b"},\n{"prompt": "c" "completion": "d"}\n]', r":3: invalid JSON"),
        ('[\n{"prompt": "a", "completion": "b"},\n]', r":2: invalid JSON: trailing comma"),
        ('[{"prompt": "a", "completion": "b"}] []', r":1: invalid JSON: extra data after the closing"),
        ('[{"prompt": "a", "completion": "b"}', r":1: invalid JSON"),
    ],
)
def test_broken_json_array_is_refused_at_its_line(tmp_path: Path, text: str, expect: str) -> None:
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(DataError, match=expect):
        read_conversations(path)


# --- writing -----------------------------------------------------------------------------------------------


def test_write_jsonl_round_trip(tmp_path: Path) -> None:
    conversations = [
        Conversation((Message("user", "é 中文 🙂\u2028x"), Message("assistant", "ok"))),
        Conversation(
            (
                Message("system", "s"),
                Message("user", "u"),
                Message("assistant", "", tool_calls=[{"id": "1"}]),
                Message("tool", "r", tool_call_id="1", name="f"),
                Message("assistant", "a", weight=1),
                Message("user", "again"),
                Message("assistant", "b", weight=0),
                Message("assistant", "c"),
            ),
            tools=[{"type": "function", "function": {"name": "f"}}],
        ),
    ]
    path = write_jsonl(tmp_path / "out" / "train.jsonl", conversations)
    assert "中文" in path.read_text(encoding="utf-8")  # ensure_ascii=False: readable
    result = read_conversations(path)
    assert result.problems == []
    assert result.conversations == conversations
    assert write_jsonl(tmp_path / "again.jsonl", result.conversations).read_bytes() == path.read_bytes()


def test_write_jsonl_is_atomic(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "train.jsonl", [Conversation((Message("user", "a"), Message("assistant", "b")))]
    )
    before = path.read_bytes()

    def broken() -> Any:
        yield Conversation((Message("user", "c"), Message("assistant", "d")))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]  # no temp file left


def test_write_invalid(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [chat(), "{oops", chat("", "x")])
    result = read_conversations(path)
    side = write_invalid(tmp_path / "bad.jsonl", result.bad_rows)
    rows = [json.loads(line) for line in side.read_text().splitlines()]
    assert [r["source"] for r in rows] == [f"{path}:2", f"{path}:3"]
    assert rows[0]["raw"] == "{oops" and rows[0]["problems"][0].startswith(f"{path}:2: invalid JSON")


# --- load_or_fail ----------------------------------------------------------------------------------------


def test_load_or_fail_lists_problems(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [chat()] + ["{bad"] * 60)
    with pytest.raises(DataError) as caught:
        load_or_fail(path)
    error = caught.value
    assert (
        error.message
        == f"60 invalid rows in {path} (first 50 problems listed); fix them or pass --skip-invalid"
    )
    assert len(error.details) == 60  # all of them; the CLI shows the first 50 and "... and 10 more"
    assert error.details[0].startswith(f"{path}:2: invalid JSON")
    assert error.details[-1].startswith(f"{path}:61: invalid JSON")


def test_load_or_fail_passes_clean_files_through(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [chat()])
    result = load_or_fail(path, skip_invalid=True)
    assert len(result.conversations) == 1 and result.invalid_path is None
    assert not (tmp_path / "d.jsonl.invalid.jsonl").exists()


def test_load_or_fail_skip_invalid_writes_side_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [chat(), "{bad", chat("a", "b")])
    result = load_or_fail(path, skip_invalid=True)
    assert texts(result) == [("Hi", "Hello"), ("a", "b")]
    assert result.invalid_path == tmp_path / "d.jsonl.invalid.jsonl"
    (row,) = [json.loads(line) for line in result.invalid_path.read_text().splitlines()]
    assert row["source"] == f"{path}:2" and row["raw"] == "{bad"


def test_load_or_fail_with_nothing_valid(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ["{bad", "{worse"])
    with pytest.raises(DataError, match=r"all 2 rows in .* are invalid"):
        load_or_fail(path, skip_invalid=True)


# --- the real datasets (skipped where ../shared/data is missing) --------------------------------------------

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_real_datasets_read_cleanly() -> None:
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not here")
    banking = read_conversations(SHARED / "banking77" / "test.csv", columns=ColumnMapping("text", "category"))
    assert banking.problems == [] and len(banking.conversations) == 3080
    restaurant = read_conversations(SHARED / "restaurant8k" / "test.jsonl")
    assert restaurant.format == "openai-chat (jsonl)"
    assert restaurant.problems == [] and len(restaurant.conversations) == 3731


def test_load_or_fail_skip_invalid_unwritable_side_file_is_a_data_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [chat(), "{bad"])
    (tmp_path / "d.jsonl.invalid.jsonl").mkdir()  # unwritable as a file even for root (like a read-only folder)
    with pytest.raises(DataError, match="cannot write the 1 invalid rows"):
        load_or_fail(path, skip_invalid=True)
