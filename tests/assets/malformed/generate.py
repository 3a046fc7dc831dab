"""Write the malformed-data cases too big or too binary to commit (10 MB lines, binary files, Parquet).

    python tests/assets/malformed/generate.py OUT_DIR   # writes the files, prints their manifest as JSON

`generate(out_dir)` returns the same shape as manifest.json: {"faults": {name: {...}}, "valid": {name: n}}.
Tests call it with pytest's tmp_path.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

BIG = 10 * 1024 * 1024  # a 10 MB line


def _chat(user: str, assistant: str) -> str:
    return json.dumps(
        {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}
    )


GOOD = "\n".join(_chat(f"Question {i}?", f"Answer {i}.") for i in range(2)) + "\n"


def _parquet(path: Path, columns: dict[str, list[Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)


def generate(out: Path) -> dict[str, dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    faults: dict[str, dict[str, Any]] = {}
    valid: dict[str, Any] = {}  # name -> expected count, or {"count": n, "columns": [...]}

    (out / "binary.jsonl").write_bytes(bytes(range(256)) * 64)
    faults["binary.jsonl"] = {"line": 1, "expect": "binary file", "fatal": True}
    (out / "nul_byte.jsonl").write_bytes(GOOD.encode() + b'{"messages": \x00\x00}\n')
    faults["nul_byte.jsonl"] = {"line": 3, "expect": "NUL bytes", "fatal": True}
    (out / "undecodable.jsonl").write_bytes(bytes(range(128, 256)) * 64)
    faults["undecodable.jsonl"] = {"line": 1, "expect": "binary file", "fatal": True}
    (out / "utf16.jsonl").write_bytes(GOOD.encode("utf-16"))
    faults["utf16.jsonl"] = {"line": 1, "expect": "UTF-16", "fatal": True}
    (out / "data.jsonl.gz").write_bytes(gzip.compress(GOOD.encode()))
    faults["data.jsonl.gz"] = {"line": None, "expect": "decompress it first", "fatal": True}

    garbage = '{"messages": [{"role": "user", "content": "' + "x" * BIG + '"}, oops]}'
    (out / "huge_garbage_line.jsonl").write_text(GOOD + garbage + "\n", encoding="utf-8")
    faults["huge_garbage_line.jsonl"] = {"line": 3, "expect": "invalid JSON"}
    (out / "huge_valid_line.jsonl").write_text(GOOD + _chat("y" * BIG, "long") + "\n", encoding="utf-8")
    valid["huge_valid_line.jsonl"] = 3

    table = {
        "text": ["I lost my card", "Where is my money?", "Hi"],
        "category": ["card_lost", "", "greeting"],
    }
    _parquet(out / "parquet_empty_cell.parquet", table)
    faults["parquet_empty_cell.parquet"] = {
        "line": 2,
        "unit": "row",
        "expect": "category: is empty",
        "columns": ["text", "category"],
    }
    _parquet(out / "parquet_missing_column.parquet", table)
    faults["parquet_missing_column.parquet"] = {
        "line": None,
        "expect": "no column 'label'",
        "fatal": True,
        "columns": ["text", "label"],
    }
    _parquet(out / "parquet_no_mapping.parquet", table)
    faults["parquet_no_mapping.parquet"] = {"line": None, "expect": "--prompt-col", "fatal": True}
    _parquet(out / "parquet_named_jsonl.jsonl", table)
    faults["parquet_named_jsonl.jsonl"] = {"line": 1, "expect": "Parquet file", "fatal": True}
    _parquet(out / "mapped.parquet", {"text": ["a", "b"], "category": [1, 2]})
    valid["mapped.parquet"] = {"count": 2, "columns": ["text", "category"]}  # integer labels become text
    messages = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]]
    _parquet(out / "messages.parquet", {"messages": messages})
    valid["messages.parquet"] = 1
    return {"faults": faults, "valid": valid}


if __name__ == "__main__":
    print(json.dumps(generate(Path(sys.argv[1])), indent=2))
