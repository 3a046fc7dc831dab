"""Run directories and the run registry.

A run directory is self-describing (see the run-directory contract in the README):

    RUN_DIR/config.yaml  data.json  metrics.jsonl  run.json  checkpoints/step-000100/  final/  [merged/]

`load_run(run_dir)` reads it back; `load_trained_model(run_dir)` gives a ready-to-generate model.
The registry is one SQLite file, `$HONED_HOME/runs.db` (default `~/.cache/honed/runs.db`), with one row
per run directory: its config, data hashes, status and best metrics. `honed runs list/show` read it.

>>> info = load_run("runs/demo")  # doctest: +SKIP
>>> model, tokenizer = load_trained_model("runs/demo", checkpoint="best")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import tempfile
import warnings
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from honed.errors import ConfigError, HonedError

CHECKPOINT_NAME = re.compile(r"^step-(\d{6,})$")


# ---------------------------------------------------------------------------------------------------
# Small file helpers (atomic: temp file in the same folder, then rename)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first. Temp folders (not named step-N) are never listed."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------------
# Reading a run


@dataclass(frozen=True)
class RunInfo:
    """A parsed run directory: run.json, the resolved config (as a mapping) and data.json."""

    path: Path
    run: dict[str, Any]
    config: dict[str, Any]
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.run.get("name") or self.path.name)

    @property
    def model(self) -> str:
        return str(self.config.get("model") or self.run.get("model"))

    @property
    def method(self) -> str:
        return str(self.config.get("method") or self.run.get("method") or "lora")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def load_run(run_dir: str | Path) -> RunInfo:
    """Read a run directory written by `honed train`.

    >>> load_run("runs/demo").run["status"]  # doctest: +SKIP
    'completed'
    """
    import yaml

    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{path} is not a honed run directory (no config.yaml); pass the --out of `honed train`")
    config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    return RunInfo(path=path, run=_read_json(path / "run.json"), config=config, data=_read_json(path / "data.json"))


def resolve_checkpoint(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """Map "best" | "final" | "last" | "checkpoints/step-N" to a folder of weights inside the run.

    "best" falls back to final/ and then the newest checkpoint when no best was recorded.
    """
    info = load_run(run_dir)
    root = info.path
    candidates: list[Path] = []
    if checkpoint == "best":
        best = info.run.get("best_checkpoint")
        if best:
            candidates.append(root / best)
        candidates.append(root / "final")
        candidates.extend(reversed(checkpoint_dirs(root)))
    elif checkpoint == "final":
        candidates.append(root / "final")
    elif checkpoint == "last":
        candidates.extend(reversed(checkpoint_dirs(root)))
    else:
        candidates.append(root / checkpoint)
    for candidate in candidates:
        if _has_weights(candidate):
            return candidate
    raise HonedError(
        f"{root}: no weights for checkpoint '{checkpoint}' (looked in "
        f"{', '.join(str(c.relative_to(root)) for c in candidates) or 'nothing'}); "
        "train first, or pass checkpoint='final' / 'checkpoints/step-N'"
    )


def _has_weights(folder: Path) -> bool:
    return (folder / "adapter_model.safetensors").is_file() or (folder / "model.safetensors").is_file() or any(
        folder.glob("model-*.safetensors")
    )


def load_trained_model(run_dir: str | Path, *, checkpoint: str = "best", device: str = "cpu") -> tuple[Any, Any]:
    """The model and tokenizer of a training run, ready for generation (LoRA merged in).

    LoRA folders are loaded onto the run's base model through peft and merged for fast inference;
    full fine-tuning folders are complete models. Weights come from safetensors only.

    >>> model, tokenizer = load_trained_model("runs/demo", checkpoint="best")  # doctest: +SKIP
    """
    from honed.data.render import ensure_chat_template
    from honed.models import load_model, load_tokenizer

    info = load_run(run_dir)
    folder = resolve_checkpoint(run_dir, checkpoint)
    tokenizer_source = str(folder) if (folder / "tokenizer_config.json").is_file() else info.model
    tokenizer = ensure_chat_template(load_tokenizer(tokenizer_source))
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_model(info.model, device=device)
        with warnings.catch_warnings():  # peft reads a deprecated transformers attribute
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    else:
        model = load_model(str(folder), device=device)
    model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------------------
# Registry (SQLite)


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
    best_json   TEXT
)
"""


def _connect() -> sqlite3.Connection:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute(_SCHEMA)
    return conn


def record_run(run_dir: str | Path) -> None:
    """Insert or update the registry row of a run from the files in its directory."""
    info = load_run(run_dir)
    row = {
        "run_dir": str(Path(run_dir).resolve()),
        "name": info.name,
        "status": info.run.get("status", "unknown"),
        "model": info.model,
        "method": info.method,
        "started_at": info.run.get("started_at"),
        "finished_at": info.run.get("finished_at"),
        "config_json": json.dumps(info.config),
        "data_json": json.dumps(info.data),
        "best_json": json.dumps(info.run.get("best") or {}),
    }
    columns = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    updates = ", ".join(f"{k}=excluded.{k}" for k in row if k != "run_dir")
    with closing(_connect()) as conn, conn:
        conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks}) ON CONFLICT(run_dir) DO UPDATE SET {updates}", row)


def _row_to_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("config_json", "data_json", "best_json"):
        out[key.removesuffix("_json")] = json.loads(out.pop(key) or "{}")
    return out


def list_runs() -> list[dict[str, Any]]:
    """Every registered run, newest first.

    >>> [r["name"] for r in list_runs()]  # doctest: +SKIP
    ['demo']
    """
    with closing(_connect()) as conn:
        rows = conn.execute("SELECT * FROM runs ORDER BY started_at DESC, name").fetchall()
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
