"""The run registry: one SQLite file, `$HONED_HOME/runs.db` (default `~/.cache/honed/runs.db`).

One row per run directory: its name, status, model, method, times, config, data hashes and best metrics,
copied from the run directory's own files (which stay the source of truth). `honed runs list/show` read it.

>>> import os, tempfile
>>> from unittest import mock
>>> from honed.config import config_to_yaml, load_config
>>> with tempfile.TemporaryDirectory() as home, mock.patch.dict(os.environ, {"HONED_HOME": home}):
...     run = RunDir(Path(home) / "demo")
...     run.write_config(config_to_yaml(load_config(None, overrides=["method=full"])))  # as train saves it
...     record_run(run)
...     [(r["name"], r["method"], r["status"]) for r in list_runs()]
[('demo', 'full', 'unknown')]
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from honed.errors import HonedError
from honed.runs.lock import read_owner
from honed.runs.rundir import RunDir


def honed_home() -> Path:
    """$HONED_HOME, else ~/.cache/honed (tests point HONED_HOME at a temp folder)."""
    return Path(os.environ.get("HONED_HOME", Path.home() / ".cache" / "honed"))


def registry_path() -> Path:
    return honed_home() / "runs.db"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_dir     TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    model       TEXT,
    method      TEXT,
    started_at  TEXT,
    finished_at TEXT,
    config_json TEXT,
    data_json   TEXT,
    best_json   TEXT,
    parent      TEXT
)
"""


def _connect() -> sqlite3.Connection:
    """The registry, created on first use; an unusable one (HONED_HOME a file or read-only, runs.db not a
    database) is one HonedError saying where and what to do."""
    path = registry_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        if "parent" not in columns:  # a registry written before lineage was recorded
            conn.execute("ALTER TABLE runs ADD COLUMN parent TEXT")
    except (OSError, sqlite3.Error) as exc:
        raise registry_error(path, exc) from None
    return conn


def registry_error(path: Path, exc: Exception) -> HonedError:
    """The message for a registry that cannot be opened or written."""
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return HonedError(f"{path}: the run registry is damaged (not an SQLite database); move it aside "
                          "(it is rebuilt as runs are recorded) or set HONED_HOME to another folder")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return HonedError(f"{path}: cannot open the run registry ({reason}); set HONED_HOME to a folder you can "
                      f"write to (now: {honed_home()})")


def check_registry() -> None:
    """Open the registry once, so a train fails on an unusable one before it creates a run directory."""
    with closing(_connect()) as conn, conn:
        conn.execute("CREATE TABLE IF NOT EXISTS _probe (x)")  # a write: a read-only registry fails here
        # IF EXISTS: the ranks of one torchrun job probe the same registry at once, and one may drop first
        conn.execute("DROP TABLE IF EXISTS _probe")


def record_run(run: RunDir) -> None:
    """Insert or update the registry row of a run from the files in its directory."""
    record, config = run.read_run(), run.config()
    row = {
        "run_dir": str(run.path.resolve()),
        "name": record.name or run.name,
        "status": record.status,
        "model": config.model,
        "method": config.method,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "config_json": json.dumps(run.config_fields()),
        "data_json": json.dumps(run.read_data().model_dump(mode="json")),
        "best_json": json.dumps(record.best),
        "parent": record.parent,
    }
    columns = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    updates = ", ".join(f"{k}=excluded.{k}" for k in row if k != "run_dir")
    try:
        with closing(_connect()) as conn, conn:
            conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks}) ON CONFLICT(run_dir) DO UPDATE SET {updates}", row)
    except sqlite3.Error as exc:
        raise registry_error(registry_path(), exc) from None


def forget_run(run_dir: str | Path) -> None:
    """Drop a run's row (a run directory removed because its train failed before it trained anything)."""
    with closing(_connect()) as conn, conn:
        conn.execute("DELETE FROM runs WHERE run_dir = ?", (str(Path(run_dir).resolve()),))


def _row_to_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("config_json", "data_json", "best_json"):
        out[key.removesuffix("_json")] = json.loads(out.pop(key) or "{}")
    out["status"] = live_status(out)
    # who writes (or last wrote) a running or killed run: pid, host, command, since, heartbeat
    out["owner"] = read_owner(RunDir(out["run_dir"])) if out["status"] in ("running", "stale") else None
    return out


def live_status(row: dict[str, Any]) -> str:
    """The recorded status, checked against the disk: `missing` when the run directory is gone, `stale`
    when it says running but no process holds it any more (killed)."""
    run = RunDir(row["run_dir"])
    if not run.path.is_dir():
        return "missing"
    if row["status"] == "running":
        return run.status()
    return str(row["status"])


def list_runs() -> list[dict[str, Any]]:
    """Every registered run, newest first (the module docstring's example lists one)."""
    try:
        with closing(_connect()) as conn:
            rows = conn.execute("SELECT * FROM runs ORDER BY started_at DESC, name").fetchall()
    except sqlite3.Error as exc:
        raise registry_error(registry_path(), exc) from None
    return [_row_to_dict(r) for r in rows]


def get_run(name_or_path: str) -> dict[str, Any]:
    """One registered run by run directory path or by name (the newest with that name)."""
    path = str(Path(name_or_path).resolve())
    with closing(_connect()) as conn:
        row = conn.execute("SELECT * FROM runs WHERE run_dir = ?", (path,)).fetchone()
        if row is None:
            row = conn.execute(
                "SELECT * FROM runs WHERE name = ? ORDER BY started_at DESC LIMIT 1", (name_or_path,)
            ).fetchone()
    if row is None:
        raise HonedError(f"no run named '{name_or_path}' in {registry_path()}; see `honed runs list`")
    return _row_to_dict(row)
