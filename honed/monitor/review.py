"""`honed data review new.jsonl`: accept, edit or reject each draft answer; nothing is lost on interruption.

The drafts file (written by `honed data from-traffic`) keeps every row with its review status
(`honed.review`: unreviewed, accepted, edited, rejected); the reviewed file (default
`<drafts>.reviewed.jsonl`) holds the accepted and edited rows: ordinary training data. Both are rewritten
atomically after every decision, so quitting (or a kill) at any point keeps every decision made so far.

Usage: `review_file("new.jsonl", out="reviewed.jsonl", decide=terminal_decider())` returns the counts
(accepted, edited, rejected, left); tests/unit/test_monitor_loop.py's review test decides from a script.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honed.atomic import write_text_atomic
from honed.errors import ConfigError, DataError

ACCEPTED, EDITED, REJECTED, UNREVIEWED = "accepted", "edited", "rejected", "unreviewed"
Decision = tuple[str, str | None]  # (accept|edit|reject|skip|quit, the edited answer for edit)
Decide = Callable[[dict[str, Any], int, int], Decision]


@dataclass
class ReviewResult:
    accepted: int
    edited: int
    rejected: int
    left: int
    out: Path


def read_drafts(path: Path) -> list[dict[str, Any]]:
    """The drafts file's rows; each must be a chat example ending in the assistant's draft."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; make drafts with `honed data from-traffic LOG --out {path}`")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}); fix the line") from exc
        messages = row.get("messages") if isinstance(row, dict) else None
        if not messages or not isinstance(messages, list) or messages[-1].get("role") != "assistant":
            raise DataError(f"{path}:{number}: not a draft (a chat example ending in an assistant answer)")
        row.setdefault("honed", {}).setdefault("review", UNREVIEWED)
        rows.append(row)
    return rows


def review_file(path: str | Path, *, out: str | Path | None = None, decide: Decide) -> ReviewResult:
    """Ask `decide` about every unreviewed row, saving both files after each decision."""
    path = Path(path)
    out = Path(out) if out else path.with_name(path.name.removesuffix(".jsonl") + ".reviewed.jsonl")
    rows = read_drafts(path)
    pending = [i for i, r in enumerate(rows) if r["honed"]["review"] == UNREVIEWED]
    for done, index in enumerate(pending):
        action, edited = decide(rows[index], done + 1, len(pending))
        if action == "quit":
            break
        if action == "skip":
            continue
        apply_decision(rows[index], action, edited)
        save(path, out, rows)
    save(path, out, rows)
    counts = {s: sum(r["honed"]["review"] == s for r in rows) for s in (ACCEPTED, EDITED, REJECTED, UNREVIEWED)}
    return ReviewResult(counts[ACCEPTED], counts[EDITED], counts[REJECTED], counts[UNREVIEWED], out)


def apply_decision(row: dict[str, Any], action: str, edited: str | None) -> None:
    if action == "accept":
        row["honed"]["review"] = ACCEPTED
    elif action == "reject":
        row["honed"]["review"] = REJECTED
    elif action == "edit":
        row["honed"]["review"] = EDITED
        row["honed"].setdefault("draft", row["messages"][-1]["content"])
        row["messages"][-1]["content"] = edited or ""
    else:
        raise ValueError(f"unknown review action {action!r}")


def save(path: Path, out: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, _jsonl(rows))
    write_text_atomic(out, _jsonl([r for r in rows if r["honed"]["review"] in (ACCEPTED, EDITED)]))


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def edit_in_editor(text: str) -> str | None:
    """Open `text` in $VISUAL / $EDITOR (default vi); the saved text, or None when the editor failed."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    fd, tmp = tempfile.mkstemp(prefix="honed-review-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            status = subprocess.run([*shlex.split(editor), tmp], check=False).returncode
        except FileNotFoundError as exc:
            raise ConfigError(f"editor {editor!r} not found; set EDITOR to an editor on your PATH") from exc
        return Path(tmp).read_text(encoding="utf-8").rstrip("\n") if status == 0 else None
    finally:
        Path(tmp).unlink(missing_ok=True)


def terminal_decider(console: Any, ask: Callable[[str], str] = input) -> Decide:
    """Show each draft with its prompt and read a key: a(ccept) e(dit) r(eject) s(kip) q(uit)."""
    keys = {"a": "accept", "e": "edit", "r": "reject", "s": "skip", "q": "quit"}

    def decide(row: dict[str, Any], number: int, total: int) -> Decision:
        console.rule(f"draft {number} of {total}")
        for m in row["messages"][:-1]:
            console.print(f"{m.get('role')}: {m.get('content')}", markup=False, soft_wrap=True)
        console.print(f"draft answer: {row['messages'][-1]['content']}", markup=False, soft_wrap=True)
        while True:
            try:
                key = ask("[a]ccept  [e]dit  [r]eject  [s]kip  [q]uit > ").strip().lower()[:1]
            except EOFError:  # input closed: stop here, every decision so far is saved
                return "quit", None
            if key not in keys:
                continue
            if keys[key] != "edit":
                return keys[key], None
            edited = edit_in_editor(row["messages"][-1]["content"])
            if edited is not None:
                return "edit", edited
            console.print("the editor exited with an error; the draft is unchanged")

    return decide
