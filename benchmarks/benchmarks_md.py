"""Write one benchmark's section of BENCHMARKS.md, leaving every other section as it is.

Each script owns the text between its two HTML-comment markers; running one benchmark never touches the
figures of another. Written to a temporary file and renamed, so an interrupted run leaves the old file.

    from benchmarks_md import write_section   # the scripts run as `python benchmarks/NAME.py`
    write_section(ROOT / "BENCHMARKS.md", text, start="<!-- x:start -->", end="<!-- x:end -->")
"""

from __future__ import annotations

import os
from pathlib import Path


def write_section(path: Path, section: str, *, start: str, end: str) -> None:
    """Replace the text between `start` and `end` in `path` with `section` (append it when absent)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{section.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
