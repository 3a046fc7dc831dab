"""Files -> located rows: decode the bytes, split JSONL / JSON arrays / CSV / Parquet into rows, each with
the line (or row number) it came from.

What makes a whole file unreadable (binary, not a JSON array after all, broken CSV quoting, not Parquet)
raises DataError here. What spoils one row (invalid JSON, invalid UTF-8, a CSV row with the wrong number
of fields) is kept on that row as `error`, so every such row gets reported, not only the first.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honed.data.formats import clip
from honed.data.inputs import read_bytes
from honed.data.types import Source
from honed.errors import DataError

UTF8_BOM = b"\xef\xbb\xbf"
SNIFF_BYTES = 8192
# Well-known files that are not text, with the fix for each.
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PAR1", "it is a Parquet file; name it .parquet or pass --format parquet"),
    (b"ARROW1", "it is an Arrow file; name it .arrow or pass --format arrow"),
    (b"\x1f\x8b", "it is gzip-compressed; decompress it first (gunzip)"),
    (b"PK\x03\x04", "it is a zip archive (or an Excel file); unzip it or export it as CSV"),
    (b"\xff\xfe", "it is UTF-16 text; save it as UTF-8"),
    (b"\xfe\xff", "it is UTF-16 text; save it as UTF-8"),
)
_WHITESPACE = re.compile(r"[ \t\r\n]*")


@dataclass
class Row:
    """One record before conversion: where it is, its text, and its parsed value or why it has none.

    `raw` is the row's text as in the file; None for Parquet, where it is rebuilt from `value` only when
    the row turns out bad (building it for every row would cost time for nothing).
    """

    source: Source
    raw: str | None
    value: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Text:
    """A decoded text file: its text and, per 1-based line, why that line was not valid UTF-8."""

    text: str
    bad_lines: dict[int, str]


def read_text(path: Path) -> Text:
    """Decode a file as UTF-8 (BOM optional); refuse binary files; locate invalid UTF-8 by line.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "train.jsonl"
    ...     _ = path.write_bytes(b'{"a": "ok"}\\n{"a": "caf\\xe9"}\\n')
    ...     read_text(path).bad_lines
    {2: 'invalid UTF-8 (byte 0xe9 at byte 11 of the line); save the file as UTF-8 ...'}
    """
    data = read_bytes(path)
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    binary = _binary_reason(data)
    if binary is not None:
        line, reason = binary
        raise DataError(f"{path}:{line}: looks like a binary file, not UTF-8 text: {reason}")
    try:
        return Text(data.decode("utf-8"), {})
    except UnicodeDecodeError:
        pass
    # Slow path, only for files with bad bytes: decode line by line to say which lines they are on.
    lines: list[str] = []
    bad: dict[int, str] = {}
    for number, chunk in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(chunk.decode("utf-8"))
        except UnicodeDecodeError as exc:
            bad[number] = (
                f"invalid UTF-8 (byte 0x{chunk[exc.start]:02x} at byte {exc.start + 1} of the line); "
                "save the file as UTF-8 (it may be Latin-1 or Windows-1252)"
            )
            lines.append(chunk.decode("utf-8", errors="replace"))
    return Text("\n".join(lines), bad)


def _binary_reason(data: bytes) -> tuple[int, str] | None:
    """(line, reason) when the bytes are clearly not a text file, else None."""
    head = data[:SNIFF_BYTES]
    for magic, reason in MAGIC:
        if head.startswith(magic):
            return 1, reason
    nul = data.find(b"\x00")  # memchr: fast even on big files; JSON and CSV text never holds a raw NUL
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        return (
            line,
            f"it contains NUL bytes (first at byte {nul + 1}); pass a JSONL, JSON, CSV or Parquet file",
        )
    sample = head.decode("utf-8", errors="replace")
    if sample and sample.count("\ufffd") > 0.1 * len(sample):
        return 1, "most of its first bytes are not UTF-8 text; pass a JSONL, JSON, CSV or Parquet file"
    return None


# --- JSON ----------------------------------------------------------------------------------------------


class DuplicateKey(ValueError):
    """A JSON object names the same key twice: json keeps only the last value, silently dropping the rest."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        names = [key for key, _ in pairs]
        twice = next(key for key in names if names.count(key) > 1)
        raise DuplicateKey(
            f"the key {clip(twice, 40)!r} appears twice in one object and JSON keeps only the last; "
            "remove or rename one of them"
        )
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)
_LENIENT = json.JSONDecoder()


def json_lines_rows(path: Path, text: Text) -> list[Row]:
    """One row per non-blank line (JSONL). Blank lines, CRLF and a trailing newline are fine."""
    rows: list[Row] = []
    file = str(path)
    for number, line in enumerate(text.text.split("\n"), start=1):
        if not line or line.isspace():
            continue
        if line[-1] == "\r":
            line = line[:-1]
        source = Source(file, number)
        if number in text.bad_lines:
            rows.append(Row(source, line, error=text.bad_lines[number]))
            continue
        try:
            rows.append(Row(source, line, _DECODER.decode(line)))
        except json.JSONDecodeError as exc:
            rows.append(Row(source, line, error=_json_line_error(line, exc, number)))
        except DuplicateKey as exc:
            rows.append(Row(source, line, error=str(exc)))
        except RecursionError:
            rows.append(Row(source, line, error="invalid JSON: nested too deeply"))
    if len(rows) > 1 and all(row.error is not None for row in rows) and not text.bad_lines:
        _refuse_pretty_printed(path, text.text, len(rows))
    return rows


def _one_json_value(text: str) -> Any:
    """The whole text parsed as one JSON value, or None when it is not one."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None


def _refuse_pretty_printed(path: Path, text: str, lines: int) -> None:
    """Every line failed: if the file is one JSON value spread over lines, say that once, not per line."""
    value = _one_json_value(text)
    if isinstance(value, (dict, list)):
        kind = "array" if isinstance(value, list) else "object"
        raise DataError(
            f"{path}:1: the file is one JSON {kind} spread over {lines} lines, not JSON lines; "
            "put one record per line, or name the file .json (a JSON array of records)"
        )


def _json_line_error(line: str, exc: json.JSONDecodeError, number: int) -> str:
    start = max(0, exc.pos - 30)
    near = clip(line[start : exc.pos + 30], 60)
    message = f"invalid JSON: {exc.msg} at column {exc.colno} near {near!r}"
    stripped = line.strip()
    if stripped in ("{", "[") or (number == 1 and stripped.startswith("[")):
        return message + "; a JSONL record must fit on one line (for a JSON array, name the file .json)"
    if "double quotes" in exc.msg and "'" in line:
        return message + "; JSON needs double quotes, not Python's single quotes"
    if exc.pos >= len(line.rstrip()):
        return message + "; the line looks cut off: each line must be one complete JSON object"
    return message + "; each line must be one complete JSON object"


def json_file_rows(path: Path, text: Text) -> list[Row]:
    """A .json file: a JSON array of records (one row per element), or else JSON lines."""
    start = _WHITESPACE.match(text.text).end()
    if not text.text.startswith("[", start):
        single = _one_json_value(text.text)
        if isinstance(single, dict):  # a .json file holding one record
            return [Row(Source(str(path), 1 + text.text.count("\n", 0, start)), text.text.strip(), single)]
        return json_lines_rows(path, text)
    rows = _json_array_rows(path, text.text, start)
    _mark_bad_lines(rows, text.bad_lines)
    return rows


def _json_array_rows(path: Path, text: str, start: int) -> list[Row]:
    """Split a JSON array into its elements, each with the line it starts on.

    One syntax error makes the rest of an array unreadable, so it raises (JSONL keeps errors to a line).
    """
    rows: list[Row] = []
    pos = _WHITESPACE.match(text, start + 1).end()
    line, counted = 1 + text.count("\n", 0, pos), pos
    while not text.startswith("]", pos):
        line, counted = line + text.count("\n", counted, pos), pos
        error = None
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except DuplicateKey as exc:  # the element is valid JSON: find its end, keep the fault on its row
            (value, end), error = _LENIENT.raw_decode(text, pos), str(exc)
        except RecursionError:
            raise DataError(f"{path}:{line}: invalid JSON: nested too deeply") from None
        except json.JSONDecodeError as exc:
            hint = "a trailing comma? " if rows and text.startswith("]", exc.pos) else ""
            raise DataError(
                f"{path}:{exc.lineno}: invalid JSON: {exc.msg} at column {exc.colno} ({hint}"
                "one error makes the whole JSON array unreadable); fix it and check again"
            ) from None
        rows.append(Row(Source(str(path), line), text[pos:end], None if error else value, error))
        pos = _WHITESPACE.match(text, end).end()
        if text.startswith(",", pos):
            comma, pos = pos, _WHITESPACE.match(text, pos + 1).end()
            if text.startswith("]", pos):  # JSON has no trailing commas (JavaScript and Python literals do)
                where = 1 + text.count("\n", 0, comma)
                raise DataError(
                    f"{path}:{where}: invalid JSON: trailing comma before the closing ']'; remove it"
                )
        elif not text.startswith("]", pos):
            where = 1 + text.count("\n", 0, pos)
            raise DataError(
                f"{path}:{where}: invalid JSON: expected ',' or ']' after the array element; "
                "fix it and check again"
            )
    rest = text[pos + 1 :].strip()
    if rest:
        where = 1 + text.count("\n", 0, pos + 1)
        raise DataError(
            f"{path}:{where}: invalid JSON: extra data after the closing ']' "
            f"near {clip(rest, 40)!r}; a .json file holds one array"
        )
    return rows


def _mark_bad_lines(rows: list[Row], bad_lines: dict[int, str]) -> None:
    """Give the row that covers each invalid-UTF-8 line that line's error (rows are in line order)."""
    if not bad_lines or not rows:
        return
    starts = [row.source.line for row in rows]
    for line, message in bad_lines.items():
        index = bisect.bisect_right(starts, line) - 1
        if index >= 0 and rows[index].error is None:
            rows[index].error = f"line {line}: {message}" if line != starts[index] else message


# --- CSV / TSV -----------------------------------------------------------------------------------------


def csv_rows(path: Path, text: Text, *, delimiter: str = ",") -> tuple[list[str], list[Row]]:
    """(header, rows) of a CSV/TSV file; each row's value is {column: text}, numbered by its first line.

    Quoted fields may span lines: the csv module's `line_num` gives each record's first and last line.
    """
    csv.field_size_limit(2**31 - 1)  # the default (128 KiB per field) would reject long but valid texts
    lines = text.text.split("\n")
    reader = csv.reader(io.StringIO(text.text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[Row] = []
    previous = 0
    try:
        for cells in reader:
            first, last = previous + 1, reader.line_num
            previous = last
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            if header is None:
                header = _header(path, first, cells)
                continue
            raw = "\n".join(
                lines[first - 1 : last]
            )  # a slice: safe even where csv counts a bare \r as a line
            rows.append(_csv_row(Source(str(path), first), raw.rstrip("\r"), header, cells, last))
    except csv.Error as exc:
        raise DataError(
            f"{path}:{reader.line_num}: unreadable CSV ({exc}); check the quoting on that line"
        ) from None
    _mark_bad_lines(rows, text.bad_lines)
    return header or [], rows


def _header(path: Path, line: int, cells: list[str]) -> list[str]:
    """The column names; a name used twice would silently lose one column's values, so it is refused."""
    header = [name.strip() for name in cells]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        names = ", ".join(map(repr, twice))
        raise DataError(
            f"{path}:{line}: the header names column {names} more than once; "
            "rename the duplicates so every column has its own name"
        )
    return header


def _csv_row(source: Source, raw: str, header: list[str], cells: list[str], last: int) -> Row:
    if len(cells) == len(header):
        return Row(source, raw, dict(zip(header, cells, strict=True)))
    message = f"expected {len(header)} fields ({', '.join(header)}), found {len(cells)}"
    if last > source.line + 1:
        message += f'; an unclosed quote (") may have swallowed lines {source.line}-{last}'
    else:
        message += "; quote fields that contain the delimiter"
    return Row(source, raw, error=message)


# --- Parquet and Arrow ----------------------------------------------------------------------------------


def table_columns(path: Path, container: str) -> list[str]:
    """The column names of a Parquet file (read from its footer) or an Arrow file."""
    if container == "arrow":
        return list(_arrow_table(path).schema.names)
    import pyarrow.parquet as pq  # imported here: pyarrow takes a moment to import and JSONL doesn't need it

    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError ... for a file that is not Parquet
        raise DataError(
            f"{path}: not a readable Parquet file ({clip(str(exc), 200)}); "
            "check the file or pass --format for its real format"
        ) from None


def table_rows(path: Path, container: str, columns: list[str]) -> list[Row]:
    """Rows of the given columns, numbered from 1 ("row N"); values as Python objects."""
    if container == "arrow":
        table = _arrow_table(path).select(columns)
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=columns)
        except Exception as exc:
            raise DataError(f"{path}: not a readable Parquet file ({clip(str(exc), 200)})") from None
    values = {name: table.column(name).to_pylist() for name in columns}
    file = str(path)
    return [
        Row(Source(file, i + 1), None, {name: values[name][i] for name in columns})
        for i in range(table.num_rows)
    ]


def _arrow_table(path: Path) -> Any:
    """An Arrow IPC file, in the stream layout `datasets` writes or the file (Feather v2) layout."""
    import pyarrow as pa
    from pyarrow import ipc

    try:
        with pa.memory_map(str(path)) as source:
            try:
                return ipc.open_file(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                return ipc.open_stream(source).read_all()
    except Exception as exc:  # ArrowInvalid, OSError ... for a file that is not Arrow
        raise DataError(
            f"{path}: not a readable Arrow file ({clip(str(exc), 200)}); check the file"
        ) from None
