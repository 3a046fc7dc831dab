"""Write docs/cli.md, the command-line reference, from the real CLI's `--help` texts; or check it is current.

    .venv/bin/python scripts/cli_reference.py           # rewrite docs/cli.md
    .venv/bin/python scripts/cli_reference.py --check   # exit 1 (and say so) when docs/cli.md is stale

Every command and sub-command of `honed` is asked for its help through the CLI's own (click) context, at a
fixed width and in click's plain format (no rich boxes, no colour), so the page is the same on every machine
and changes only when the CLI does. tests/unit/test_docs.py runs `--check`.
"""

from __future__ import annotations

import os

# Before typer is imported: typer reads this once, and without it draws rich panels whose look depends on
# the terminal (colour, width, CI variables). Plain click help is stable and reads well in Markdown.
os.environ["TYPER_USE_RICH"] = "0"

import argparse  # noqa: E402
import difflib  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import typer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "cli.md"
WIDTH = 100
REGENERATE = ".venv/bin/python scripts/cli_reference.py"

HEADER = f"""# Command-line reference

Every `honed` command's `--help`, as the installed CLI prints it (plain, {WIDTH} columns). Generated from
the code, do not edit it by hand (tests/unit/test_docs.py fails when it is stale); regenerate it with

    {REGENERATE}

What each stage does, with examples and measured figures: [the README's list of pages](../README.md#where-to-go-next).
"""


def context(command: Any, name: str, parent: Any = None) -> Any:
    """A help context for `command` at the fixed width (typer's own context class: typer vendors click)."""
    return command.context_class(command, info_name=name, parent=parent, terminal_width=WIDTH,
                                 max_content_width=WIDTH)


def walk(command: Any, ctx: Any) -> Iterator[tuple[str, str]]:
    """(command path, help text) for `command` and, depth first in `--help` order, every sub-command."""
    yield ctx.command_path, command.get_help(ctx)
    for name in command.list_commands(ctx) if hasattr(command, "list_commands") else []:
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            yield from walk(sub, context(sub, name, ctx))


def reference() -> str:
    """docs/cli.md's text: a list of the commands, then one section per command with its `--help`."""
    sys.path.insert(0, str(ROOT))  # the checkout's honed, also when the script runs from elsewhere
    from honed.cli import app

    group = typer.main.get_command(app)
    pages = list(walk(group, context(group, "honed")))
    index = "\n".join(f"- [`{path}`](#{path.replace(' ', '-')})" for path, _ in pages)
    sections = "\n".join(f"## {path}\n\n```text\n{text.rstrip()}\n```\n" for path, text in pages)
    return f"{HEADER}\n{index}\n\n{sections}"


def main(argv: list[str] | None = None) -> int:
    """Write docs/cli.md, or with --check compare it with the CLI: 0 current, 1 stale or missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/cli.md differs; write nothing")
    args = parser.parse_args(argv)
    text = reference()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(current.splitlines(), text.splitlines(), "docs/cli.md", "the CLI now",
                                    lineterm="", n=1)
        print("\n".join(list(diff)[:60]), file=sys.stderr)
        print(f"{OUTPUT.relative_to(ROOT)} is stale: the CLI's --help changed; regenerate it with "
              f"`{REGENERATE}`", file=sys.stderr)
        return 1
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
