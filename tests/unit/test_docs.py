"""The documentation a clone holds is whole: the CLI reference matches the CLI, every link lands on a file
(and heading) of the repository, none leaves it, and README.md stays a landing page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 15_500


def links(page: Path) -> list[str]:
    """Every link and image target in `page`'s Markdown (code blocks and code spans hold none)."""
    found = []
    for token in MarkdownIt("commonmark").parse(page.read_text(encoding="utf-8")):
        for child in token.children or []:
            if child.type == "link_open":
                found.append(str(child.attrGet("href")))
            elif child.type == "image":
                found.append(str(child.attrGet("src")))
    return found


def bare_urls(page: Path) -> list[str]:
    """Web addresses written in plain text, which GitHub turns into links (code is left out)."""
    found = []
    for token in MarkdownIt("commonmark").parse(page.read_text(encoding="utf-8")):
        for child in token.children or []:
            if child.type == "text":
                found += re.findall(r"https?://\S+|www\.\S+", child.content)
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.

    >>> slug("Learning curve, machine, continued runs")
    'learning-curve-machine-continued-runs'
    """
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of `page`'s headings (a repeated heading gets -1, -2, ... as on GitHub)."""
    tokens = MarkdownIt("commonmark").parse(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open":
            text = "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))
            base = slug(text)
            seen[base] = seen.get(base, -1) + 1
            seen[base if seen[base] == 0 else f"{base}-{seen[base]}"] = 0
    return set(seen)


def broken(page: Path, target: str) -> str | None:
    """Why `target`, linked from `page`, fails a reader of a clone; None when it lands."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return "leaves the repository (a clone must be readable offline: link a page of the repository)"
    path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
    if not path.is_relative_to(ROOT):
        return "points outside the repository (a user's clone does not have it)"
    if not path.exists():
        return "points at a file that does not exist"
    if parts.fragment and path.suffix == ".md" and parts.fragment not in anchors(path):
        return f"names no heading of {path.relative_to(ROOT)}"
    return None


def test_cli_reference_is_current() -> None:
    """docs/cli.md is the CLI's --help today (its own process: the script turns typer's rich help off)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "cli_reference.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, ("docs/cli.md is stale: run `.venv/bin/python scripts/cli_reference.py` "
                                    f"and commit it\n{result.stderr}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_lands_in_the_repository(page: Path) -> None:
    problems = [f"{target}: {why}" for target in links(page) if (why := broken(page, target))]
    problems += [f"{url}: a bare web address leaves the repository" for url in bare_urls(page)]
    assert not problems, f"{page.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_a_link_outside_is_caught() -> None:
    """The checks above can fail: the links a clone cannot follow are each named."""
    page = ROOT / "docs" / "architecture.md"
    assert broken(page, "../../shared/DESIGN.md") is not None
    assert broken(page, "https://example.com/x") is not None
    assert broken(page, "missing.md") is not None
    assert broken(page, "train.md#no-such-heading") is not None
    assert broken(page, "train.md#threads-on-a-shared-machine") is None
    assert broken(page, "#module-map-one-line-per-module") is None


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    linked = {(ROOT / urlsplit(t).path).resolve() for t in links(ROOT / "README.md") if urlsplit(t).path}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"README.md's 'Where to go next' does not link {', '.join(unlinked)}"


def test_readme_is_a_landing_page() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, (f"README.md is {size:,} bytes (at most {README_MAX_BYTES:,}): move "
                                      "the detail into the docs/ page of its stage and link it")
