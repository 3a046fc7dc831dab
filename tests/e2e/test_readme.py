"""A newcomer's first commands work exactly as README.md writes them.

Each fenced block right after a `<!-- test: run -->` comment in README.md is run line by line through the
installed `honed` (`.venv/bin/honed`), from the repository root, and must exit 0. Only cheap blocks that
need nothing downloaded are marked (help, the model list, the example data's check and preview).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- test: run -->"


def marked_commands(markdown: str) -> list[str]:
    """The command lines of each fenced block right after the marker (`\\` continuations joined)."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    commands: list[str] = []
    for before, block in zip(tokens, tokens[1:]):
        if before.type == "html_block" and before.content.strip() == MARKER and block.type == "fence":
            lines = block.content.replace("\\\n", " ").splitlines()
            commands += [line.strip() for line in lines if line.strip()]
    return commands


def test_marked_blocks_are_found() -> None:
    """Only a fenced block right after the marker counts, continuation lines joined."""
    text = (f"{MARKER}\n```sh\nhoned --help  # all\nhoned data show \\\n  x.jsonl\n```\n"
            "\n```sh\nhoned train\n```\n")
    assert marked_commands(text) == ["honed --help  # all", "honed data show    x.jsonl"]


def honed_executable() -> Path:
    """The installed CLI: .venv/bin/honed (make install), else the one beside the running Python."""
    for candidate in (ROOT / ".venv" / "bin" / "honed", Path(sys.executable).with_name("honed")):
        if candidate.exists():
            return candidate
    pytest.fail("no installed `honed` found (.venv/bin/honed): run `make install`")


COMMANDS = marked_commands((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_marks_its_first_commands() -> None:
    assert len(COMMANDS) >= 3, f"README.md marks {len(COMMANDS)} command lines with {MARKER!r}; expected more"
    assert all(shlex.split(c, comments=True)[0] == "honed" for c in COMMANDS), COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command: str) -> None:
    args = shlex.split(command, comments=True)
    result = subprocess.run([str(honed_executable()), *args[1:]], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, (f"README.md's `{command}` exited {result.returncode}\n"
                                    f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
