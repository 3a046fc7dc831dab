"""Read training data in any supported format into Conversations, with every problem located.

    result = read_conversations("train.jsonl")          # format detected from extension + first record
    result.conversations   # list[Conversation], the valid rows
    result.problems        # list[Problem]; str(p) == "train.jsonl:7: messages[2].role: unknown role ..."
    result.format          # "openai-chat (jsonl)"
    result.notices         # content read but not trained on (images, <image>, ...), counted

Supported: JSONL or a JSON array of OpenAI-chat, ShareGPT, prompt/completion (text or TRL's message lists),
alpaca or plain-text records; CSV, TSV, Parquet and Arrow with a column mapping (`ColumnMapping`, the
CLI's `--prompt-col/--response-col/--system/--system-col`) or with obvious columns. The path may be a
file, a folder of shards, a glob, or a `datasets.save_to_disk` folder (honed.data.inputs). UTF-8 with or
without BOM, LF or CRLF, blank lines anywhere: all accepted silently.

`read_conversations` collects every row problem and returns them; a fault that spoils the whole input
(missing, not a regular file, unsupported extension, binary, empty, unknown format, a mapped column that
is not there) raises DataError. Commands call `load_or_fail`, which raises on row problems too, or with
`skip_invalid=True` writes the bad rows and their reasons to `<input>.invalid.jsonl` and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from honed.atomic import write_text_atomic
from honed.data import rows as rows_mod
from honed.data.formats import (
    ALPACA,
    CHAT,
    COLUMNS,
    PROMPT_COMPLETION,
    SHAREGPT,
    TEXT,
    TEXT_METADATA,
    ColumnMapping,
    Fault,
    clip,
    detect_kind,
    keys_found,
    to_chat,
)
from honed.data.inputs import SUFFIXES, content_hash, input_files
from honed.data.notices import CONTENT_FIELDS, Notice, Tally, codes_for
from honed.data.suggest import closest_format
from honed.data.types import Conversation, Source
from honed.errors import ConfigError, DataError

__all__ = [
    "BadRow",
    "ColumnMapping",
    "FORMATS",
    "Problem",
    "ReadResult",
    "invalid_path_for",
    "load_or_fail",
    "read_conversations",
    "write_invalid",
    "write_jsonl",
]

FORMATS = ("auto", "chat", "sharegpt", "prompt-completion", "alpaca", "text", "csv", "parquet", "arrow")
TABULAR = ("csv", "tsv", "parquet", "arrow")
RECORD_FORMATS = {
    "chat": CHAT,
    "openai-chat": CHAT,
    "sharegpt": SHAREGPT,
    "prompt-completion": PROMPT_COMPLETION,
    "alpaca": ALPACA,
    "text": TEXT,
}
# Columns that tell the format of a CSV/Parquet/Arrow file without a mapping, and the columns each needs.
REQUIRED_COLUMNS = {
    CHAT: ("messages",),
    SHAREGPT: ("conversations",),
    PROMPT_COMPLETION: ("prompt", "completion"),
    ALPACA: ("instruction", "output"),
    TEXT: ("text",),
}
# The columns read from a Parquet/Arrow file when no mapping names them.
KNOWN_COLUMNS = (
    *("messages", "conversations", "tools", "prompt", "completion", "instruction", "input", "output"),
    *("system", "history", "text", *CONTENT_FIELDS),
)
JSON_CELLS = ("messages", "conversations")  # CSV cells (some Parquet columns too) hold these lists as JSON
RAW_CHARS = 10_000  # a bad row's text kept for the side file: enough to see it, never 10 MB
MAX_LISTED = 50


@dataclass(frozen=True)
class Problem:
    """One located fault in the input: `file:line: [field:] message` (`file: row N:` for Parquet)."""

    source: Source
    message: str
    field: str | None = None
    unit: str = "line"  # "row" for Parquet and Arrow, whose rows have no line numbers

    def __str__(self) -> str:
        where = str(self.source) if self.unit == "line" else f"{self.source.file}: row {self.source.line}"
        what = f" {self.field}:" if self.field else ""
        return f"{where}:{what} {self.message}"


class BadRow(NamedTuple):
    """A row left out: where it was, its text (clipped to RAW_CHARS) and what is wrong with it."""

    source: Source
    raw: str
    problems: list[Problem]


@dataclass
class ReadResult:
    conversations: list[Conversation]
    problems: list[Problem]
    format: str
    bad_rows: list[BadRow] = field(default_factory=list)
    invalid_path: Path | None = None  # set by load_or_fail(skip_invalid=True) when it wrote bad rows
    notices: list[Notice] = field(default_factory=list)  # content read, not trained on (honed.data.notices)


def read_conversations(
    path: str | Path, *, fmt: str = "auto", columns: ColumnMapping | None = None
) -> ReadResult:
    """Read every row of a data file (or folder of shards, or glob) into Conversations; collect every problem.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "train.csv"
    ...     _ = path.write_text("text,category\\nmy card is lost,lost_card\\nrefund please,refund\\n")
    ...     result = read_conversations(path, columns=ColumnMapping("text", "category"))
    >>> result.format, len(result.conversations), result.problems
    ('csv (prompt=text, response=category)', 2, [])
    """
    if fmt not in FORMATS and fmt != "openai-chat":
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    kind = RECORD_FORMATS.get(fmt)
    if kind is not None and columns is not None:
        raise ConfigError(
            f"--format {fmt} and --prompt-col/--response-col exclude each other; pass one of them"
        )
    files = input_files(path)
    parsed = [_read_file(file, fmt, kind, columns) for file in files]
    if not any(p.rows for p in parsed):
        what = "the file (it is" if len(files) == 1 else f"its {len(files)} files (they are"
        raise DataError(f"{path}: no examples in {what} empty or only blank lines); add examples")
    results = [_convert(p, columns=columns) for p in parsed if p.rows]
    return _merged(results, files=len(files))


def _read_file(path: Path, fmt: str, kind: str | None, columns: ColumnMapping | None) -> _Parsed:
    container = _container(path, fmt)
    try:
        if container in ("parquet", "arrow"):
            return _read_table(path, container, kind, columns)
        if container in TABULAR:
            return _read_csv(path, container, kind, columns)
        return _read_json(path, container, kind, columns)
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read the file ({exc.strerror or exc}); check its permissions"
        ) from None


def _merged(results: list[ReadResult], *, files: int) -> ReadResult:
    """One ReadResult for the shards of an input, labelled with its format(s) and how many files."""
    if len(results) == 1 and files == 1:
        return results[0]
    labels = list(dict.fromkeys(r.format for r in results))
    tally: dict[tuple[str, str], Notice] = {}
    for notice in (n for r in results for n in r.notices):
        key = (notice.code, notice.message)
        if key in tally:
            tally[key].count += notice.count
        else:
            tally[key] = Notice(notice.code, notice.count, notice.first, notice.message)
    return ReadResult(
        conversations=[c for r in results for c in r.conversations],
        problems=[p for r in results for p in r.problems],
        format=f"{' + '.join(labels)}, {files} files",
        bad_rows=[b for r in results for b in r.bad_rows],
        notices=list(tally.values()),
    )


@dataclass(frozen=True)
class _Parsed:
    """A file split into rows, and the record format they are in."""

    rows: list[rows_mod.Row]
    kind: str  # CHAT, SHAREGPT, PROMPT_COMPLETION, ALPACA, TEXT or COLUMNS
    label: str  # what ReadResult.format says, e.g. "openai-chat (jsonl)"
    unit: str = "line"  # "row" for Parquet and Arrow
    tabular: bool = False  # CSV/Parquet: a `messages` column may hold JSON text


def _container(path: Path, fmt: str) -> str:
    """How the file is laid out: jsonl, json, csv, tsv, parquet or arrow."""
    if fmt in ("csv", "parquet", "arrow"):
        return fmt
    container = SUFFIXES.get(path.suffix.lower())
    if container is not None:
        return container
    if fmt != "auto":
        return "jsonl"  # an explicit record format on an unknown extension: JSON lines
    hint = "; decompress it first" if path.suffix.lower() in (".gz", ".zip", ".bz2", ".xz", ".zst") else ""
    raise DataError(
        f"{path}: unsupported file type {path.suffix or '(no extension)'!r}{hint}; use .jsonl, .json, "
        f".csv, .tsv, .parquet or .arrow, or pass --format {'|'.join(FORMATS[1:])}"
    )


def _read_json(path: Path, container: str, kind: str | None, columns: ColumnMapping | None) -> _Parsed:
    text = rows_mod.read_text(path)
    rows = (
        rows_mod.json_file_rows(path, text) if container == "json" else rows_mod.json_lines_rows(path, text)
    )
    if columns is not None:
        return _Parsed(rows, COLUMNS, f"{container} ({_mapping_label(columns)})")
    if kind is None:
        kind = _detect_json_kind(path, rows)
    return _Parsed(rows, kind, _kind_label(kind, container))


def _kind_label(kind: str, container: str) -> str:
    if kind == TEXT:  # said wherever the format is shown: nothing is masked, unlike chat data
        return f"text ({container}): plain text, no chat template, every token trained"
    return f"{kind} ({container})"


def _detect_json_kind(path: Path, rows: list[rows_mod.Row]) -> str:
    """The format of the first record with known keys; DataError when no record has any."""
    first_object: rows_mod.Row | None = None
    for row in rows:
        if isinstance(row.value, dict):
            kind = detect_kind(row.value)
            if kind is not None:
                return kind
            first_object = first_object or row
    if first_object is None:
        return CHAT  # no row parsed as an object: each row reports its own fault
    raise DataError(
        f"{first_object.source}: unknown format (keys found: {keys_found(first_object.value)}); "
        f"{closest_format(list(first_object.value))}. Known: 'messages' (OpenAI chat), 'conversations' "
        "(ShareGPT), 'prompt' + 'completion', 'instruction' + 'output' (alpaca), 'text' (plain text)"
    )


def _read_csv(path: Path, container: str, kind: str | None, columns: ColumnMapping | None) -> _Parsed:
    text = rows_mod.read_text(path)
    header, rows = rows_mod.csv_rows(path, text, delimiter="\t" if container == "tsv" else ",")
    if not rows:
        return _Parsed(rows, CHAT, container)  # read_conversations says the file has no examples
    kind, label = _tabular_kind(f"{path}:1", container, header, kind, columns)
    return _Parsed(rows, kind, label, tabular=True)


def _read_table(path: Path, container: str, kind: str | None, columns: ColumnMapping | None) -> _Parsed:
    names = rows_mod.table_columns(path, container)
    kind, label = _tabular_kind(str(path), container, names, kind, columns)
    if kind == COLUMNS:
        assert columns is not None
        wanted = [columns.prompt_col, columns.response_col]
        wanted += [columns.system_col] if columns.system_col else []
    else:
        wanted = [name for name in names if name in KNOWN_COLUMNS]
    rows = rows_mod.table_rows(path, container, list(dict.fromkeys(wanted)))
    return _Parsed(rows, kind, label, unit="row", tabular=True)


def _tabular_kind(
    where: str, container: str, header: list[str], kind: str | None, columns: ColumnMapping | None
) -> tuple[str, str]:
    """Which format a CSV/Parquet file's columns hold; DataError (once) when a needed column is missing."""
    found = ", ".join(clip(name, 40) for name in header) or "none"
    if columns is not None:
        flags = (("--prompt-col", columns.prompt_col), ("--response-col", columns.response_col),
                 ("--system-col", columns.system_col))
        for flag, name in flags:
            if name is not None and name not in header:
                raise DataError(f"{where}: no column {name!r} ({flag}); columns found: {found}")
        return COLUMNS, f"{container} ({_mapping_label(columns)})"
    if kind is not None:
        if all(name in header for name in REQUIRED_COLUMNS[kind]):
            return kind, _kind_label(kind, container)
        needed = " and ".join(repr(n) for n in REQUIRED_COLUMNS[kind])
        raise DataError(f"{where}: --format {kind} needs column {needed}; columns found: {found}")
    for candidate in (CHAT, SHAREGPT, PROMPT_COMPLETION, ALPACA):
        if all(name in header for name in REQUIRED_COLUMNS[candidate]):
            return candidate, _kind_label(candidate, container)
    if "text" in header and set(header) - TEXT_METADATA == {"text"}:
        return TEXT, _kind_label(TEXT, container)
    raise DataError(
        f"{where}: cannot tell which columns hold the prompt and the response (columns found: "
        f"{found}); {closest_format(header)}"
    )


def _mapping_label(columns: ColumnMapping) -> str:
    system = ", system prompt set" if columns.system else ""
    system = f", system={columns.system_col}" if columns.system_col else system
    return f"prompt={columns.prompt_col}, response={columns.response_col}{system}"


def _convert(parsed: _Parsed, *, columns: ColumnMapping | None) -> ReadResult:
    """Rows -> Conversations; a row with faults becomes a BadRow with one Problem per fault."""
    result = ReadResult(conversations=[], problems=[], format=parsed.label)
    tally = Tally()
    for row in parsed.rows:
        canonical, faults = _row_to_chat(row, parsed.kind, columns=columns, messages_json=parsed.tabular)
        if canonical is not None and not faults:
            result.conversations.append(Conversation.from_json(canonical, source=row.source))
            codes = codes_for(row.value, canonical)
            if codes:
                tally.add(row.source, codes)
            continue
        problems = [Problem(row.source, message, name, parsed.unit) for name, message in faults]
        result.problems.extend(problems)
        result.bad_rows.append(BadRow(row.source, _raw_text(row), problems))
    result.notices = tally.notices()
    return result


def _row_to_chat(
    row: rows_mod.Row, kind: str, *, columns: ColumnMapping | None, messages_json: bool
) -> tuple[dict[str, Any] | None, list[Fault]]:
    if row.error is not None:
        return None, [(None, row.error)]
    value = row.value
    # In CSV (and often Parquet) a `messages` or `conversations` column holds the list as JSON text.
    for name in JSON_CELLS if messages_json and kind in (CHAT, SHAREGPT) else ():
        if isinstance(value.get(name), str):
            try:
                value = {**value, name: json.loads(value[name])}
            except json.JSONDecodeError as exc:
                return None, [(name, f"invalid JSON in the cell: {exc.msg} at character {exc.pos + 1}")]
            except RecursionError:
                return None, [(name, "invalid JSON in the cell: nested too deeply")]
    return to_chat(value, kind, columns=columns)


def _raw_text(row: rows_mod.Row) -> str:
    raw = row.raw if row.raw is not None else json.dumps(row.value, ensure_ascii=False, default=str)
    return clip(raw, RAW_CHARS)


# --- for commands: fail clearly, or skip bad rows and say where they went ---------------------------------


def load_or_fail(
    path: str | Path,
    *,
    fmt: str = "auto",
    columns: ColumnMapping | None = None,
    skip_invalid: bool = False,
    strict: bool = False,
) -> ReadResult:
    """Read a data file for a command: raise DataError listing the problems, or skip the bad rows.

    With `skip_invalid`, bad rows and their reasons go to `<input>.invalid.jsonl` (`result.invalid_path`)
    and the good rows are returned; telling the user how many were skipped is the caller's job.
    With `strict`, content read but not trained on (`result.notices`: images, `<image>` placeholders,
    double-encoded tool arguments) is a DataError too.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "train.jsonl"
    ...     _ = path.write_text('{"prompt": "hi", "completion": "hello"}\\n{"prompt": "no answer"}\\n')
    ...     result = load_or_fail(path, skip_invalid=True)
    ...     len(result.conversations), len(result.bad_rows), result.invalid_path.name
    (1, 1, 'train.jsonl.invalid.jsonl')
    """
    result = read_conversations(path, fmt=fmt, columns=columns)
    if strict and result.notices:
        raise DataError(
            f"{path}: holds content honed does not train on (--strict); fix it, or drop --strict to "
            "train on the text alone",
            details=[str(n) for n in result.notices],
        )
    if not result.problems:
        return result
    count = len(result.bad_rows)
    if not skip_invalid:
        # Every problem goes in `details`; the CLI prints the first MAX_LISTED and "... and K more".
        raise DataError(
            f"{count} invalid row{'s' if count != 1 else ''} in {path} "
            f"(first {MAX_LISTED} problems listed); fix them or pass --skip-invalid",
            details=[str(p) for p in result.problems],
        )
    if not result.conversations:
        raise DataError(
            f"all {count} rows in {path} are invalid, nothing left to use; first problem: "
            f"{result.problems[0]}"
        )
    result.invalid_path = invalid_path_for(path)
    try:
        write_invalid(result.invalid_path, result.bad_rows)
    except OSError as exc:  # e.g. the data sits in a read-only folder (a shared dataset)
        raise DataError(
            f"cannot write the {count} invalid rows to {result.invalid_path} ({exc.strerror or exc}); "
            "copy the data file to a folder you can write to, or fix the rows"
        ) from None
    return result


def invalid_path_for(path: str | Path) -> Path:
    """Where --skip-invalid writes the bad rows of `path`: `<input>.invalid.jsonl` beside it.

    A folder's goes beside the folder; a glob's has its wildcards written as `_` (`shards/_.jsonl...`).

    >>> invalid_path_for("shards/*.jsonl")
    PosixPath('shards/_.jsonl.invalid.jsonl')
    """
    text = str(path).rstrip("/") or str(path)
    if not Path(path).exists():
        text = text.translate(str.maketrans({c: "_" for c in "*?[]"}))
    return Path(f"{text}.invalid.jsonl")


def write_invalid(path: str | Path, bad_rows: Iterable[BadRow]) -> Path:
    """Write bad rows with their reasons as JSON lines, atomically.

    Each line: `{"source": "data.jsonl:7", "problems": ["data.jsonl:7: ..."], "raw": "<the row's text>"}`.
    """
    lines = (
        json.dumps(
            {"source": str(row.source), "problems": [str(p) for p in row.problems], "raw": row.raw},
            ensure_ascii=False,
        )
        for row in bad_rows
    )
    return _write_lines_atomic(Path(path), lines)


def write_jsonl(path: str | Path, conversations: Iterable[Conversation]) -> Path:
    """Write Conversations as canonical OpenAI-chat JSON lines, atomically (honed.atomic).

    `read_conversations` reads the file back to equal Conversations.

    >>> import tempfile
    >>> chat = Conversation.from_json({"messages": [{"role": "user", "content": "hi"},
    ...                                             {"role": "assistant", "content": "hello"}]})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_jsonl(Path(folder) / "train.jsonl", [chat])
    ...     path.read_text(), read_conversations(path).conversations[0].messages == chat.messages
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\\n', True)
    """
    lines = (json.dumps(c.to_json(), ensure_ascii=False) for c in conversations)
    return _write_lines_atomic(Path(path), lines)


def _write_lines_atomic(path: Path, lines: Iterable[str]) -> Path:
    """One line per item, written atomically (honed.atomic): a reader never sees half a file."""
    write_text_atomic(path, "".join(f"{line}\n" for line in lines))
    return path


def sha256_file(path: str | Path) -> str:
    """Content hash of a data input, read in 1 MiB blocks (recorded in manifests and run dirs); a folder
    or glob hashes its files in order (honed.data.inputs.content_hash).

    >>> import hashlib, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (Path(folder) / "train.jsonl").write_text("hello\\n")
    ...     sha256_file(Path(folder) / "train.jsonl") == hashlib.sha256(b"hello\\n").hexdigest()
    True
    """
    return content_hash(path)
