"""Write one benchmark's section of BENCHMARKS.md, leaving every other section as it is.

Each script owns the text between its two HTML-comment markers; running one benchmark never touches the
figures of another. Written to a temporary file and renamed, so an interrupted run leaves the old file.

    from benchmarks_md import write_section   # the scripts run as `python benchmarks/NAME.py`
    write_section(ROOT / "BENCHMARKS.md", text, start="<!-- x:start -->", end="<!-- x:end -->")
"""

from __future__ import annotations

import os
import platform
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


def cpu_flags() -> str:
    """torch's CPU capability and the vector/matrix extensions in /proc/cpuinfo (AVX2, AVX-512, AMX)."""
    import torch

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{torch.backends.cpu.get_cpu_capability()} ({', '.join(wanted) or 'flags unknown'})"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
