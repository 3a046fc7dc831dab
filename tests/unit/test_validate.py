"""Validation rules: each rule on a single record, then every file of the malformed corpus."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from honed.data.formats import ColumnMapping, chat_faults, detect_kind, to_chat
from honed.data.read import ColumnMapping as ReadColumnMapping
from honed.data.read import read_conversations
from honed.errors import DataError

CORPUS = Path(__file__).resolve().parents[1] / "assets" / "malformed"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())


def user(content: Any = "Hi", **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


def assistant(content: Any = "Hello", **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


CALL = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}

VALID_CHATS = {
    "plain": [user(), assistant()],
    "system first": [{"role": "system", "content": "Be brief."}, user(), assistant()],
    "empty system": [{"role": "system", "content": ""}, user(), assistant()],
    "multi-turn weights": [user(), assistant(weight=0), user("More"), assistant("Sure", weight=1)],
    "tool call without content": [
        user(),
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "content": "18C"},
        assistant("18C"),
    ],
    "tool call null content": [
        user(),
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "18C", "tool_call_id": "c1", "name": "weather"},
        assistant("18C"),
    ],
    "empty tool result": [
        user(),
        assistant("", tool_calls=[CALL]),
        {"role": "tool", "content": ""},
        assistant(),
    ],
    "trailing weight-0 assistant": [user(), assistant(), user("Again"), assistant("Again", weight=0)],
    "null optional fields": [user(weight=None, name=None), assistant(tool_calls=None, tool_call_id=None)],
}


@pytest.mark.parametrize("messages", list(VALID_CHATS.values()), ids=list(VALID_CHATS))
def test_valid_chats_have_no_faults(messages: list[dict[str, Any]]) -> None:
    assert chat_faults({"messages": messages, "tools": [{"type": "function"}]}) == []


# (record, field the fault names, text the message must contain)
CHAT_FAULTS = {
    "missing messages": ({"msgs": []}, None, "missing field 'messages' (keys found: msgs)"),
    "other format in chat file": ({"prompt": "a", "completion": "b"}, None, "one format per file"),
    "messages not a list": (
        {"messages": {"role": "user"}},
        "messages",
        "must be a list of messages, got object",
    ),
    "messages empty": ({"messages": []}, "messages", "empty list"),
    "message not an object": ({"messages": ["hi", assistant()]}, "messages[0]", "must be an object"),
    "missing role": ({"messages": [{"content": "Hi"}, assistant()]}, "messages[0]", "missing field 'role'"),
    "unknown role": (
        {"messages": [user(), {"role": "bot", "content": "x"}]},
        "messages[1].role",
        "unknown role 'bot'; use one of system, user, assistant, tool",
    ),
    "role not a string": (
        {"messages": [{"role": 1, "content": "x"}, assistant()]},
        "messages[0].role",
        "unknown role 1; use one of",
    ),
    "missing content": (
        {"messages": [{"role": "user"}, assistant()]},
        "messages[0]",
        "missing field 'content'",
    ),
    "null content": ({"messages": [user(None), assistant()]}, "messages[0].content", "is null"),
    "content a number": (
        {"messages": [user(), assistant(4)]},
        "messages[1].content",
        "must be a string, got number",
    ),
    "content a list of parts": (
        {"messages": [user([{"type": "text", "text": "Hi"}]), assistant()]},
        "messages[0].content",
        "join the text parts",
    ),
    "empty user": ({"messages": [user(""), assistant()]}, "messages[0].content", "empty user message"),
    "whitespace assistant": (
        {"messages": [user(), assistant(" \n\t")]},
        "messages[1].content",
        "empty assistant message",
    ),
    "weight 2": ({"messages": [user(), assistant(weight=2)]}, "messages[1].weight", "must be 0 or 1, got 2"),
    "weight 0.5": ({"messages": [user(), assistant(weight=0.5)]}, "messages[1].weight", "must be 0 or 1"),
    "weight true": ({"messages": [user(), assistant(weight=True)]}, "messages[1].weight", "must be 0 or 1"),
    "weight string": ({"messages": [user(), assistant(weight="1")]}, "messages[1].weight", "must be 0 or 1"),
    "weight on user": (
        {"messages": [user(weight=1), assistant()]},
        "messages[0].weight",
        "only assistant messages take a weight",
    ),
    "tool_calls not a list": (
        {"messages": [user(), assistant(tool_calls=CALL)]},
        "messages[1].tool_calls",
        "must be a list of tool calls, got object",
    ),
    "tool call not an object": (
        {"messages": [user(), assistant(tool_calls=["weather()"])]},
        "messages[1].tool_calls",
        "every tool call must be an object",
    ),
    "tool_call_id not a string": (
        {"messages": [user(), assistant(), {"role": "tool", "content": "x", "tool_call_id": 7}, assistant()]},
        "messages[2].tool_call_id",
        "must be a string",
    ),
    "name not a string": (
        {"messages": [user(name=["x"]), assistant()]},
        "messages[0].name",
        "must be a string",
    ),
    "no assistant": (
        {"messages": [{"role": "system", "content": "S"}, user()]},
        "messages",
        "no assistant message",
    ),
    "no trainable assistant": (
        {"messages": [user(), assistant(weight=0)]},
        "messages",
        "no trainable assistant turn",
    ),
    "ends on user": (
        {"messages": [user(), assistant(), user("And?")]},
        "messages[2]",
        "ends on a user message",
    ),
    "ends on tool": (
        {"messages": [user(), assistant("", tool_calls=[CALL]), {"role": "tool", "content": "x"}]},
        "messages[2]",
        "ends on a tool message",
    ),
    "tools not a list": ({"messages": [user(), assistant()], "tools": "weather"}, "tools", "must be a list"),
}


@pytest.mark.parametrize("record,field,text", list(CHAT_FAULTS.values()), ids=list(CHAT_FAULTS))
def test_chat_fault(record: dict[str, Any], field: str | None, text: str) -> None:
    faults = chat_faults(record)
    assert len(faults) >= 1
    assert faults[0][0] == field
    assert text in faults[0][1]


def test_every_message_fault_is_reported_not_only_the_first() -> None:
    record = {"messages": [{"role": "bot", "content": 1}, assistant(weight=3)]}
    fields = [name for name, _ in chat_faults(record)]
    assert fields == ["messages[0].role", "messages[0].content", "messages[1].weight"]


@pytest.mark.parametrize("value", ["just text", 3, None, [user(), assistant()]])
def test_top_level_value_must_be_an_object(value: Any) -> None:
    canonical, faults = to_chat(value, "openai-chat")
    assert canonical is None
    assert "expected a JSON object" in faults[0][1]


def test_detect_kind() -> None:
    assert detect_kind({"messages": []}) == "openai-chat"
    assert detect_kind({"prompt": "a", "completion": "b"}) == "prompt-completion"
    assert detect_kind({"instruction": "a", "output": "b"}) == "alpaca"
    assert detect_kind({"prompt": "a"}) is None
    assert detect_kind({"text": "a", "label": "b"}) is None


# --- the other formats convert to the canonical chat form ------------------------------------------------


def test_prompt_completion_becomes_user_and_assistant() -> None:
    canonical, faults = to_chat({"prompt": "2+2=", "completion": " 4", "id": 9}, "prompt-completion")
    assert faults == []
    assert canonical == {"messages": [user("2+2="), assistant(" 4")]}


@pytest.mark.parametrize(
    "record,field,text",
    [
        ({"prompt": "a"}, None, "missing field 'completion'"),
        ({"completion": "a"}, None, "missing field 'prompt'"),
        ({"prompt": "a", "completion": ""}, "completion", "is empty"),
        ({"prompt": "  ", "completion": "b"}, "prompt", "is empty"),
        ({"prompt": "a", "completion": 4}, "completion", "must be a string, got number"),
        ({"prompt": ["a"], "completion": "b"}, "prompt", "must be a string, got array"),
    ],
)
def test_prompt_completion_faults(record: dict[str, Any], field: str | None, text: str) -> None:
    canonical, faults = to_chat(record, "prompt-completion")
    assert canonical is None
    assert faults[0][0] == field and text in faults[0][1]


@pytest.mark.parametrize(
    "record,messages",
    [
        ({"instruction": "Say hi.", "output": "Hi"}, [user("Say hi."), assistant("Hi")]),
        ({"instruction": "Say hi.", "input": "", "output": "Hi"}, [user("Say hi."), assistant("Hi")]),
        ({"instruction": "Say hi.", "input": None, "output": "Hi"}, [user("Say hi."), assistant("Hi")]),
        ({"instruction": "Add.", "input": "1 1", "output": "2"}, [user("Add.\n\n1 1"), assistant("2")]),
        (
            {"instruction": "Add.", "input": "1 1", "output": "2", "system": "Be exact."},
            [{"role": "system", "content": "Be exact."}, user("Add.\n\n1 1"), assistant("2")],
        ),
        ({"instruction": "Add.", "output": "2", "system": ""}, [user("Add."), assistant("2")]),
    ],
)
def test_alpaca_becomes_system_user_assistant(record: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    assert to_chat(record, "alpaca") == ({"messages": messages}, [])


@pytest.mark.parametrize(
    "record,field,text",
    [
        ({"instruction": "a"}, None, "missing field 'output'"),
        ({"instruction": "", "output": "b"}, "instruction", "is empty"),
        ({"instruction": "a", "input": 3, "output": "b"}, "input", "must be a string"),
        ({"instruction": "a", "output": "b", "system": ["s"]}, "system", "must be a string"),
    ],
)
def test_alpaca_faults(record: dict[str, Any], field: str | None, text: str) -> None:
    canonical, faults = to_chat(record, "alpaca")
    assert canonical is None
    assert faults[0][0] == field and text in faults[0][1]


def test_column_mapping_with_system_and_numeric_label() -> None:
    mapping = ColumnMapping("text", "label", system="Classify.")
    assert ReadColumnMapping is ColumnMapping  # one type, importable from read.py
    canonical, faults = to_chat({"text": "I lost my card", "label": 7}, "columns", columns=mapping)
    assert faults == []
    assert canonical == {
        "messages": [{"role": "system", "content": "Classify."}, user("I lost my card"), assistant("7")]
    }


@pytest.mark.parametrize(
    "record,field,text",
    [
        ({"text": "a"}, None, "missing field 'label'"),
        ({"text": "a", "label": ""}, "label", "is empty"),
        ({"text": None, "label": "b"}, "text", "is empty"),
        ({"text": "a", "label": ["b"]}, "label", "must be text"),
    ],
)
def test_column_faults(record: dict[str, Any], field: str | None, text: str) -> None:
    canonical, faults = to_chat(record, "columns", columns=ColumnMapping("text", "label"))
    assert canonical is None
    assert faults[0][0] == field and text in faults[0][1]


# --- the malformed corpus: every fault found at its line, every oddity accepted --------------------------


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("malformed_generate", CORPUS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("malformed")
    return out, _load_generator().generate(out)


def _columns(spec: dict[str, Any]) -> ColumnMapping | None:
    return ColumnMapping(*spec["columns"]) if spec.get("columns") else None


def _where(name: str, spec: dict[str, Any]) -> str:
    if spec["line"] is None:
        return f"{name}:"
    return f"{name}: row {spec['line']}:" if spec.get("unit") == "row" else f"{name}:{spec['line']}:"


def _assert_fault_found(
    folder: Path, name: str, spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder)  # paths in messages are as given: relative here
    if spec.get("fatal"):
        with pytest.raises(DataError) as caught:
            read_conversations(name, columns=_columns(spec))
        message = caught.value.message
        assert message.startswith(_where(name, spec)), message
        assert spec["expect"] in message
        assert len(message) < 600
        return
    result = read_conversations(name, columns=_columns(spec))
    matching = [str(p) for p in result.problems if str(p).startswith(_where(name, spec))]
    assert matching, [str(p) for p in result.problems]
    assert any(spec["expect"] in text for text in matching), matching
    assert all(len(str(p)) < 600 for p in result.problems)  # excerpts clipped, never a 10 MB line
    assert len(result.bad_rows) == 1 and result.conversations  # the good rows around it are kept


def test_corpus_has_at_least_15_faults_and_the_oddities() -> None:
    assert len(MANIFEST["faults"]) >= 15
    for name in list(MANIFEST["faults"]) + list(MANIFEST["valid"]):
        assert (CORPUS / name).is_file(), name


@pytest.mark.parametrize("name", list(MANIFEST["faults"]))
def test_committed_fault_is_located(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _assert_fault_found(CORPUS, name, MANIFEST["faults"][name], monkeypatch)


def test_generated_faults_are_located(
    generated: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, manifest = generated
    for name, spec in manifest["faults"].items():
        _assert_fault_found(folder, name, spec, monkeypatch)


def _valid_spec(spec: int | dict[str, Any]) -> tuple[int, ColumnMapping | None]:
    return (spec, None) if isinstance(spec, int) else (spec["count"], _columns(spec))


@pytest.mark.parametrize("name", list(MANIFEST["valid"]))
def test_valid_oddity_passes(name: str) -> None:
    count, columns = _valid_spec(MANIFEST["valid"][name])
    result = read_conversations(CORPUS / name, columns=columns)
    assert [str(p) for p in result.problems] == []
    assert len(result.conversations) == count


def test_generated_valid_files_pass(generated: tuple[Path, dict[str, Any]]) -> None:
    folder, manifest = generated
    for name, spec in manifest["valid"].items():
        count, columns = _valid_spec(spec)
        result = read_conversations(folder / name, columns=columns)
        assert [str(p) for p in result.problems] == [], name
        assert len(result.conversations) == count, name
