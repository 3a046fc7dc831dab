"""Read training data in any supported format into Conversations, with every problem located.

    result = read_conversations("train.jsonl")          # format detected from extension + first record
    result.conversations   # list[Conversation], the valid rows
    result.problems        # list[Problem]; str(p) == "train.jsonl:7: messages[2].role: unknown role ..."
    result.format          # "openai-chat (jsonl)"

Supported: JSONL or a JSON array of OpenAI-chat, prompt/completion or alpaca records; CSV, TSV and
Parquet with a column mapping (`ColumnMapping`, the CLI's `--prompt-col/--response-col/--system`) or
with obvious columns (prompt/completion, instruction/output, or a `messages` column holding JSON).
UTF-8 with or without BOM, LF or CRLF, blank lines anywhere: all accepted silently.

`read_conversations` collects every row problem and returns them; a fault that spoils the whole file
(missing, a directory, unsupported extension, binary, empty, unknown format, a mapped column that is
not there) raises DataError. Commands call `load_or_fail`, which raises on row problems too, or with
`skip_invalid=True` writes the bad rows and their reasons to `<input>.invalid.jsonl` and goes on.
"""

from __future__ import annotations

import hashlib
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
    ColumnMapping,
    Fault,
    clip,
    detect_kind,
    keys_found,
    to_chat,
)
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

FORMATS = ("auto", "chat", "prompt-completion", "alpaca", "csv", "parquet")
SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
TABULAR = ("csv", "tsv", "parquet")
RECORD_FORMATS = {"chat": CHAT, "openai-chat": CHAT, "prompt-completion": PROMPT_COMPLETION, "alpaca": ALPACA}
# Columns that tell the format of a CSV/Parquet file without a mapping, and the columns each needs.
REQUIRED_COLUMNS = {
    CHAT: ("messages",),
    PROMPT_COMPLETION: ("prompt", "completion"),
    ALPACA: ("instruction", "output"),
}
RAW_CHARS = 10_000  # a bad row's text kept for the side file: enough to see it, never 10 MB
MAX_LISTED = 50
COLUMN_FLAGS = "pass --prompt-col NAME --response-col NAME (and optionally --system TEXT)"


@dataclass(frozen=True)
class Problem:
    """One located fault in the input: `file:line: [field:] message` (`file: row N:` for Parquet)."""

    source: Source
    message: str
    field: str | None = None
    unit: str = "line"  # "row" for Parquet, whose rows have no line numbers

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


def read_conversations(
    path: str | Path, *, fmt: str = "auto", columns: ColumnMapping | None = None
) -> ReadResult:
    """Read every row of a data file into Conversations and collect every row problem.

    >>> mapping = ColumnMapping("text", "category")
    >>> result = read_conversations("banking77/train.csv", columns=mapping)  # doctest: +SKIP
    >>> result.format, len(result.conversations), result.problems  # doctest: +SKIP
    ('csv (prompt=text, response=category)', 10003, [])
    """
    path = Path(path)
    container = _container(path, fmt)
    kind = RECORD_FORMATS.get(fmt)
    if kind is not None and columns is not None:
        raise ConfigError(
            f"--format {fmt} and --prompt-col/--response-col exclude each other; pass one of them"
        )
    try:
        if container == "parquet":
            parsed = _read_parquet(path, kind, columns)
        elif container in TABULAR:
            parsed = _read_csv(path, container, kind, columns)
        else:
            parsed = _read_json(path, container, kind, columns)
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read the file ({exc.strerror or exc}); check its permissions"
        ) from None
    if not parsed.rows:
        raise DataError(f"{path}: no examples in the file (it is empty or only blank lines); add examples")
    return _convert(parsed, columns=columns)


@dataclass(frozen=True)
class _Parsed:
    """A file split into rows, and the record format they are in."""

    rows: list[rows_mod.Row]
    kind: str  # CHAT, PROMPT_COMPLETION, ALPACA or COLUMNS
    label: str  # what ReadResult.format says, e.g. "openai-chat (jsonl)"
    unit: str = "line"  # "row" for Parquet
    tabular: bool = False  # CSV/Parquet: a `messages` column may hold JSON text


def _container(path: Path, fmt: str) -> str:
    """How the file is laid out: jsonl, json, csv, tsv or parquet."""
    if fmt not in FORMATS and fmt != "openai-chat":
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; pass a data file (.jsonl, .json, .csv, .tsv or .parquet)")
    if fmt in ("csv", "parquet"):
        return fmt
    container = SUFFIXES.get(path.suffix.lower())
    if container is not None:
        return container
    if fmt != "auto":
        return "jsonl"  # an explicit record format on an unknown extension: JSON lines
    hint = "; decompress it first" if path.suffix.lower() in (".gz", ".zip", ".bz2", ".xz", ".zst") else ""
    raise DataError(
        f"{path}: unsupported file type {path.suffix or '(no extension)'!r}{hint}; use .jsonl, .json, "
        f".csv, .tsv or .parquet, or pass --format {'|'.join(FORMATS[1:])}"
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
    return _Parsed(rows, kind, f"{kind} ({container})")


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
        f"{first_object.source}: unknown format: no record has known keys (keys found: "
        f"{keys_found(first_object.value)}); expected 'messages' (OpenAI chat), 'prompt' + 'completion', "
        f"or 'instruction' + 'output' (alpaca); or {COLUMN_FLAGS}"
    )


def _read_csv(path: Path, container: str, kind: str | None, columns: ColumnMapping | None) -> _Parsed:
    text = rows_mod.read_text(path)
    header, rows = rows_mod.csv_rows(path, text, delimiter="\t" if container == "tsv" else ",")
    if not rows:
        return _Parsed(rows, CHAT, container)  # read_conversations says the file has no examples
    kind, label = _tabular_kind(f"{path}:1", container, header, kind, columns)
    return _Parsed(rows, kind, label, tabular=True)


def _read_parquet(path: Path, kind: str | None, columns: ColumnMapping | None) -> _Parsed:
    names = rows_mod.parquet_columns(path)
    kind, label = _tabular_kind(str(path), "parquet", names, kind, columns)
    if kind == COLUMNS:
        assert columns is not None
        wanted = [columns.prompt_col, columns.response_col]
    else:
        wanted = [
            name
            for name in names
            if name
            in ("messages", "tools", "prompt", "completion", "instruction", "input", "output", "system")
        ]
    rows = rows_mod.parquet_rows(path, list(dict.fromkeys(wanted)))
    return _Parsed(rows, kind, label, unit="row", tabular=True)


def _tabular_kind(
    where: str, container: str, header: list[str], kind: str | None, columns: ColumnMapping | None
) -> tuple[str, str]:
    """Which format a CSV/Parquet file's columns hold; DataError (once) when a needed column is missing."""
    found = ", ".join(clip(name, 40) for name in header) or "none"
    if columns is not None:
        for flag, name in (("--prompt-col", columns.prompt_col), ("--response-col", columns.response_col)):
            if name not in header:
                raise DataError(f"{where}: no column {name!r} ({flag}); columns found: {found}")
        return COLUMNS, f"{container} ({_mapping_label(columns)})"
    candidates = [kind] if kind is not None else list(REQUIRED_COLUMNS)
    for candidate in candidates:
        if all(name in header for name in REQUIRED_COLUMNS[candidate]):
            return candidate, f"{candidate} ({container})"
    if kind is not None:
        needed = " and ".join(repr(n) for n in REQUIRED_COLUMNS[kind])
        raise DataError(f"{where}: --format {kind} needs column {needed}; columns found: {found}")
    raise DataError(
        f"{where}: cannot tell which columns hold the prompt and the response (columns found: "
        f"{found}); {COLUMN_FLAGS}"
    )


def _mapping_label(columns: ColumnMapping) -> str:
    system = ", system prompt set" if columns.system else ""
    return f"prompt={columns.prompt_col}, response={columns.response_col}{system}"


def _convert(parsed: _Parsed, *, columns: ColumnMapping | None) -> ReadResult:
    """Rows -> Conversations; a row with faults becomes a BadRow with one Problem per fault."""
    result = ReadResult(conversations=[], problems=[], format=parsed.label)
    for row in parsed.rows:
        canonical, faults = _row_to_chat(row, parsed.kind, columns=columns, messages_json=parsed.tabular)
        if canonical is not None and not faults:
            result.conversations.append(Conversation.from_json(canonical, source=row.source))
            continue
        problems = [Problem(row.source, message, name, parsed.unit) for name, message in faults]
        result.problems.extend(problems)
        result.bad_rows.append(BadRow(row.source, _raw_text(row), problems))
    return result


def _row_to_chat(
    row: rows_mod.Row, kind: str, *, columns: ColumnMapping | None, messages_json: bool
) -> tuple[dict[str, Any] | None, list[Fault]]:
    if row.error is not None:
        return None, [(None, row.error)]
    value = row.value
    # In CSV (and often Parquet) a `messages` column holds the list as JSON text.
    if messages_json and kind == CHAT and isinstance(value.get("messages"), str):
        try:
            value = {**value, "messages": json.loads(value["messages"])}
        except json.JSONDecodeError as exc:
            return None, [("messages", f"invalid JSON in the cell: {exc.msg} at character {exc.pos + 1}")]
        except RecursionError:
            return None, [("messages", "invalid JSON in the cell: nested too deeply")]
    return to_chat(value, kind, columns=columns)


def _raw_text(row: rows_mod.Row) -> str:
    raw = row.raw if row.raw is not None else json.dumps(row.value, ensure_ascii=False, default=str)
    return clip(raw, RAW_CHARS)


# --- for commands: fail clearly, or skip bad rows and say where they went ---------------------------------


def load_or_fail(
    path: str | Path, *, fmt: str = "auto", columns: ColumnMapping | None = None, skip_invalid: bool = False
) -> ReadResult:
    """Read a data file for a command: raise DataError listing the problems, or skip the bad rows.

    With `skip_invalid`, bad rows and their reasons go to `<input>.invalid.jsonl` (`result.invalid_path`)
    and the good rows are returned; telling the user how many were skipped is the caller's job.

    >>> result = load_or_fail("train.jsonl", skip_invalid=True)  # doctest: +SKIP
    >>> len(result.bad_rows), result.invalid_path  # doctest: +SKIP
    (3, PosixPath('train.jsonl.invalid.jsonl'))
    """
    result = read_conversations(path, fmt=fmt, columns=columns)
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
    """Where --skip-invalid writes the bad rows of `path`: `<input>.invalid.jsonl` beside it."""
    return Path(f"{path}.invalid.jsonl")


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

    >>> write_jsonl("out/train.jsonl", result.conversations)  # doctest: +SKIP
    PosixPath('out/train.jsonl')
    """
    lines = (json.dumps(c.to_json(), ensure_ascii=False) for c in conversations)
    return _write_lines_atomic(Path(path), lines)


def _write_lines_atomic(path: Path, lines: Iterable[str]) -> Path:
    """One line per item, written atomically (honed.atomic): a reader never sees half a file."""
    write_text_atomic(path, "".join(f"{line}\n" for line in lines))
    return path


def sha256_file(path: str | Path) -> str:
    """Content hash of a file, read in 1 MiB blocks (recorded in manifests and run dirs).

    >>> sha256_file("examples/support_triage.jsonl")  # doctest: +SKIP
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
