"""Constants the tests share: `from tests.helpers import TINY`.

(Fixtures live in tests/conftest.py; a constant is here because module-level helpers and module-scoped
fixtures need it too, and pytest advises against importing from conftest.py.)
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The tiny randomly initialised Llama-architecture model and its tokenizer, committed for tests (no download).
TINY = str(ROOT / "tests" / "assets" / "tiny-llama")


def cli(*args: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> Any:
    """`honed ARGS` run in this process by Typer's CliRunner: a Result with exit_code, stdout, stderr, output."""
    from typer.testing import CliRunner

    from honed.cli import app

    return CliRunner().invoke(app, list(args), input=stdin, env=env)


@contextlib.contextmanager
def lock_held_elsewhere(run_dir: str | Path) -> Iterator[subprocess.Popen]:
    """Another process holding `run_dir`'s lock as `honed train` would (killed on exit, so the lock drops)."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from honed.runs.rundir import RunDir; "
        f"lock = RunDir({str(run_dir)!r}).lock('train'); lock.acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()
