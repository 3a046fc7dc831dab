"""Constants and helpers the tests share: `from tests.helpers import TINY`.

(Fixtures live in tests/conftest.py; a constant is here because module-level helpers and module-scoped
fixtures need it too, and pytest advises against importing from conftest.py.)
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The tiny randomly initialised Llama-architecture model and its tokenizer, committed for tests (no download).
TINY = str(ROOT / "tests" / "assets" / "tiny-llama")
# The example data and the quick settings of the shared `trained_run` (tests/conftest.py); a test that
# trains its own run with other settings adds to these rather than restating them.
DATA = str(ROOT / "examples" / "support_triage.jsonl")
FAST = ["--set", "num_threads=1", "--set", "batch_size=8", "--set", "max_length=256", "--max-steps", "2"]


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


def copy_run(source: str | Path, dest: str | Path) -> Path:
    """A private copy of the finished run `source` at `dest`, as if it had been trained there.

    The run records its own files by absolute path (data.json's train and holdout, eval/summary.json's
    holdout) and its name in run.json; the copy's records point at the copy, so a test that evaluates,
    exports, serves or resumes it never reads or writes `source`'s files.

    Usage: `run = copy_run(trained_run, tmp_path / "support")` (a run named, and served as, "support").
    """
    source, dest = Path(source), Path(dest)
    shutil.copytree(source, dest)
    for name in ("data.json", "eval/summary.json"):
        if (dest / name).is_file():
            _rewrite_json(dest / name, lambda record: _repoint(record, source, dest))
    _rewrite_json(dest / "run.json", lambda record: {**record, "name": dest.name})
    return dest


def _rewrite_json(path: Path, change: Any) -> None:
    record = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(change(record), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _repoint(value: Any, source: Path, dest: Path) -> Any:
    """`value` with every path string inside `source` moved to the same place inside `dest`."""
    if isinstance(value, dict):
        return {key: _repoint(item, source, dest) for key, item in value.items()}
    if isinstance(value, list):
        return [_repoint(item, source, dest) for item in value]
    if isinstance(value, str):
        for prefix in dict.fromkeys((str(source), str(source.resolve()))):
            if value == prefix or value.startswith(prefix + "/"):
                return str(dest) + value[len(prefix):]
    return value
