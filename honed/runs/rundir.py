"""The run directory contract: every path in a run directory, and its typed records.

    RUN_DIR/
      config.yaml          resolved TrainConfig                      train writes; everyone reads
      data.json            DataRecord: files, sha256, counts, split  train writes; resume, eval, report read
      run.json             RunRecord: status, steps, best, evals     train writes; runs, eval, export read
      template.json        ChatTemplate: the chat template chosen    train writes; eval, export, serve read
      metrics.jsonl        one JSON object per step / evaluation     train writes; report reads
      data/                train.jsonl, holdout.jsonl (when train split the holdout off)
      checkpoints/step-N/  weights + optimizer.pt + trainer_state.json (train.checkpoint)
      final/  merged/      the chosen weights (and base+adapter merged, on request)
      eval/                <system>.jsonl per example, summary.json (EvalSummary)   eval writes
      exports/  report.html  requests.jsonl                          export, report, serve write
      tensorboard/         event files (tracking: tensorboard)       report.trackers writes

Nothing outside this module opens run.json, data.json or summary.json by name: code asks a `RunDir`.
Every record carries a `schema_version`; files written before it existed (version 1, no field) still load.

>>> import tempfile
>>> from honed.config import config_to_yaml, load_config
>>> with tempfile.TemporaryDirectory() as folder:
...     run = RunDir(folder)
...     run.write_config(config_to_yaml(load_config(None, overrides=["lr=0.0002"])))  # as train saves it
...     run.write_run(RunRecord(name="demo", status="completed"))
...     run.config().lr, run.base_model(), run.read_run().status, run.read_data().train
(0.0002, 'smollm2-135m', 'completed', None)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from honed.atomic import write_json_atomic, write_text_atomic
from honed.config import TrainConfig, validate_config
from honed.errors import ConfigError, HonedError
from honed.runs.lock import RunLock, now_iso, owner_alive  # noqa: F401  (now_iso: records stamp times with it)

SCHEMA_VERSION = 2  # 1: the unversioned files of honed 0.1 (same fields, no schema_version)
CHECKPOINT_NAME = re.compile(r"^step-(\d{6,})$")
RunStatus = Literal["running", "completed", "failed", "stopped", "unknown"]


def checkpoint_name(step: int) -> str:
    """`checkpoints/<name>` of the checkpoint saved after optimizer step `step`.

    >>> checkpoint_name(42)
    'step-000042'
    """
    return f"step-{step:06d}"


# ---- records ----------------------------------------------------------------------------------------------


class Record(BaseModel):
    """A JSON file of the run directory. Unknown keys are kept (a newer honed may add some)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION


class FileEntry(BaseModel):
    """A data file the run used: where it was, its sha256, and how many examples it held."""

    path: str
    sha256: str
    count: int


class SplitRecord(BaseModel):
    """How `train` split a holdout off the training file (the split files live in RUN_DIR/data/)."""

    seed: int
    holdout_fraction: float
    source: FileEntry


class MixRecord(BaseModel):
    """Examples of a parent run's training data mixed into a continued run (train --from-run)."""

    source: FileEntry
    count: int
    ratio: float


class DataRecord(Record):
    """data.json: the exact data the run trained and evaluated on."""

    train: FileEntry | None = None
    holdout: FileEntry | None = None
    split: SplitRecord | None = None
    mixed: MixRecord | None = None
    tool_call_examples: int = 0  # training examples with a trained assistant tool call (serve takes `tools`)

    @field_validator("train", "holdout", "split", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == {} else value  # honed 0.1 wrote {} for "not recorded"


class RunRecord(Record):
    """run.json: the run's life cycle and outcome."""

    name: str
    status: RunStatus = "unknown"
    model: str | None = None
    method: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    steps: int | None = None
    stopped_early: bool | None = None
    best_checkpoint: str | None = None  # "checkpoints/step-N", relative to the run directory
    best: dict[str, Any] = Field(default_factory=dict)  # {"step": N, "holdout_loss": ..., ...}
    selected_by: str | None = None
    first_eval: dict[str, float] = Field(default_factory=dict)
    last_eval: dict[str, float] = Field(default_factory=dict)
    parent: str | None = None  # the run this one continued from (train --from-run)
    machine: dict[str, Any] | None = None  # honed.machine.machine_info at the (last) train start
    timings: dict[str, float] | None = None  # wall seconds per phase (honed.train.timings), when completed


class Interval(BaseModel):
    """A value and its 95% bootstrap interval."""

    value: float
    low: float
    high: float


class SystemSummary(BaseModel):
    """One evaluated system (tuned, base, few-shot-5, ...) in summary.json."""

    model_config = ConfigDict(extra="allow")

    metrics: dict[str, Interval]
    memorised: float = 0.0
    unfinished: int = 0
    generation: dict[str, float] = Field(default_factory=dict)


class EvalSummary(Record):
    """eval/summary.json: every system's metrics with intervals, paired differences, the verdict."""

    n: int
    main_metric: str
    metrics: list[str]
    systems: dict[str, SystemSummary]
    differences: dict[str, dict[str, Interval]] = Field(default_factory=dict)  # "tuned - base" -> metric
    verdict: str = ""
    resamples: int = 0
    run: str | None = None
    checkpoint: str | None = None
    holdout: FileEntry | None = None
    decoding: dict[str, Any] = Field(default_factory=dict)
    few_shot_seed: int | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """The summary as summary.json holds it (plain JSON types)."""
        return _dump(self)


def _dump(record: BaseModel) -> dict[str, Any]:
    return record.model_dump(mode="json", by_alias=True)


# ---- reading JSON safely ----------------------------------------------------------------------------------


def _read_record(path: Path, kind: type[Record], *, what: str) -> Any:
    """Parse `path` as `kind`; a torn or hand-broken file is one ConfigError naming it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {what} is not valid JSON ({exc}); the run directory is damaged: "
                          "restore the file or start a new run with another --out") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {what} should be a JSON object; the run directory is damaged")
    raw.setdefault("schema_version", 1)
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {what} field {field}: {first['msg']}; the run directory is damaged") from exc


# ---- the run directory -------------------------------------------------------------------------------------


LOCK_NAME = ".lock"


class RunDir:
    """One run directory: its paths, and typed reads and atomic writes of its records.

    >>> run = RunDir("runs/demo")
    >>> run.summary_json.as_posix()
    'runs/demo/eval/summary.json'
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._config: TrainConfig | None = None  # config.yaml, validated on first use (config())

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # -- paths
    @property
    def config_yaml(self) -> Path:
        return self.path / "config.yaml"

    @property
    def data_json(self) -> Path:
        return self.path / "data.json"

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def template_json(self) -> Path:
        """The chat template train chose and every later stage uses (honed.model.template.ChatTemplate)."""
        return self.path / "template.json"

    @property
    def metrics_jsonl(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def data_dir(self) -> Path:
        """Where train writes the split it made (train.jsonl, holdout.jsonl)."""
        return self.path / "data"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def merged(self) -> Path:
        return self.path / "merged"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def summary_json(self) -> Path:
        return self.eval_dir / "summary.json"

    @property
    def exports(self) -> Path:
        return self.path / "exports"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    @property
    def tensorboard_dir(self) -> Path:
        """TensorBoard event files (`tracking: tensorboard`); `tensorboard --logdir runs/` finds every run's."""
        return self.path / "tensorboard"

    @property
    def requests_log(self) -> Path:
        """The request log `honed serve` appends to (format: docs/request-log.md)."""
        return self.path / "requests.jsonl"

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_NAME

    def eval_rows_path(self, system: str) -> Path:
        """eval/<system>.jsonl: one line per holdout example for one evaluated system."""
        return self.eval_dir / f"{system}.jsonl"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_name(step)

    def lock(self, command: str) -> RunLock:
        """The exclusive lock a writer holds while it changes this run directory (honed.runs.lock.RunLock)."""
        return RunLock(self, command)

    def status(self) -> str:
        """run.json's status, or `stale` for a run that says "running" but whose process is gone."""
        status = self.read_run().status
        return "stale" if status == "running" and not owner_alive(self) else status

    # -- what is there
    def is_empty(self) -> bool:
        """True when the folder is missing or holds nothing but its lock file."""
        return not self.path.exists() or all(p.name == LOCK_NAME for p in self.path.iterdir())

    def is_run(self) -> bool:
        """True when `honed train` started here (config.yaml exists)."""
        return self.config_yaml.is_file()

    def require_run(self) -> RunDir:
        """Self, or a ConfigError when this is not a run directory."""
        if not self.is_run():
            raise ConfigError(f"{self.path} is not a honed run directory (no config.yaml); "
                              "pass the --out of `honed train`")
        return self

    def has_summary(self) -> bool:
        return self.summary_json.is_file()

    def checkpoint_dirs(self) -> list[Path]:
        """Complete checkpoints, oldest first. Temp folders (not named step-N) are never listed."""
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.iterdir() if p.is_dir() and CHECKPOINT_NAME.match(p.name)]
        return sorted(found, key=lambda p: int(CHECKPOINT_NAME.match(p.name).group(1)))  # type: ignore[union-attr]

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoint_dirs()
        return found[-1] if found else None

    # -- config.yaml
    def config(self) -> TrainConfig:
        """The resolved TrainConfig train saved as config.yaml, validated once and kept on this RunDir.

        A config.yaml that is not YAML, not a mapping or not a valid config is a ConfigError naming it.
        Usage: `RunDir("runs/demo").config().model` (tests/unit/test_rundir.py reads a real run's).
        """
        if self._config is None:
            self._config = validate_config(self._config_mapping(), origin=str(self.config_yaml))
        return self._config

    def config_fields(self) -> dict[str, Any]:
        """The resolved config as nested plain fields (JSON types), every field there: what `honed compare`
        diffs, `train --from-run` inherits and the trackers log. Derived from `config()`."""
        return self.config().model_dump(mode="json")

    def base_model(self) -> str:
        """The model spec the run was trained from (config.yaml's `model`)."""
        return self.config().model

    def write_config(self, yaml_text: str) -> None:
        write_text_atomic(self.config_yaml, yaml_text)
        self._config = None  # read it again from the file now written

    def _config_mapping(self) -> dict[str, Any]:
        """config.yaml parsed; a file that is not a YAML mapping is one ConfigError naming it."""
        import yaml

        self.require_run()
        try:
            config = yaml.safe_load(self.config_yaml.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # PyYAML's text spans lines
            raise ConfigError(f"{self.config_yaml}: not valid YAML ({detail}); the run directory is damaged: "
                              "restore the file or start again with --force") from exc
        if not isinstance(config, dict):
            raise ConfigError(f"{self.config_yaml}: should be a mapping of config fields; the run directory is damaged")
        return config

    # -- run.json
    def read_run(self) -> RunRecord:
        """run.json, or a record saying 'unknown' when the run has not written one yet."""
        if not self.run_json.is_file():
            return RunRecord(name=self.name)
        return _read_record(self.run_json, RunRecord, what="run.json")

    def write_run(self, record: RunRecord) -> None:
        write_json_atomic(self.run_json, _dump(record))

    # -- data.json
    def read_data(self) -> DataRecord:
        """data.json, or an empty record when the run has not written one."""
        if not self.data_json.is_file():
            return DataRecord()
        return _read_record(self.data_json, DataRecord, what="data.json")

    def write_data(self, record: DataRecord) -> None:
        write_json_atomic(self.data_json, _dump(record))

    # -- eval/
    def read_summary(self) -> EvalSummary:
        if not self.has_summary():
            raise ConfigError(f"{self.path}: no evaluation yet ({self.summary_json} is missing); "
                              f"run `honed eval {self.path}` first")
        return _read_record(self.summary_json, EvalSummary, what="eval summary")

    def write_summary(self, summary: EvalSummary) -> None:
        write_json_atomic(self.summary_json, summary.to_json())

    def read_eval_rows(self, system: str) -> list[dict[str, Any]]:
        """eval/<system>.jsonl as a list of {id, source, prompt, reference, output, stopped, scores}."""
        path = self.eval_rows_path(system)
        if not path.is_file():
            raise ConfigError(f"{path} is missing; run `honed eval {self.path}` again")
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg}); run `honed eval` again") from exc
        return rows

    def write_eval_rows(self, system: str, rows: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        write_text_atomic(self.eval_rows_path(system), text)

    # -- metrics.jsonl
    def read_metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl, skipping a torn last line (a run killed mid-write)."""
        if not self.metrics_jsonl.is_file():
            return []
        records = []
        for line in self.metrics_jsonl.read_text(encoding="utf-8").split("\n"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    # -- data the run used
    def holdout_file(self, given: str | Path | None = None) -> Path:
        """--data if given, else the holdout the run split off, else the holdout file data.json names."""
        if given:
            return Path(given)
        data = self.read_data()
        if data.holdout is not None and data.holdout.count == 0:  # trained with holdout_fraction 0
            raise ConfigError(f"{self.path}: the run was trained without a holdout; pass one with --data HOLDOUT.jsonl")
        if (self.data_dir / "holdout.jsonl").is_file():
            return self.data_dir / "holdout.jsonl"
        if data.holdout is not None:
            return Path(data.holdout.path)
        raise ConfigError(f"{self.path}: the run recorded no holdout; pass one with --data HOLDOUT.jsonl")

    def train_file(self) -> Path | None:
        """The examples the run trained on (few-shot examples, the memorisation check), if still there."""
        if (self.data_dir / "train.jsonl").is_file():
            return self.data_dir / "train.jsonl"
        data = self.read_data()
        if data.train is not None and Path(data.train.path).is_file():
            return Path(data.train.path)
        return None

    # -- weights
    def resolve_checkpoint(self, checkpoint: str = "best") -> Path:
        """Map "best" | "final" | "last" | "checkpoints/step-N" to a folder of weights inside the run.

        "best" falls back to final/ and then the newest checkpoint when no best was recorded.
        """
        self.require_run()
        candidates: list[Path] = []
        if checkpoint == "best":
            best = self.read_run().best_checkpoint
            if best:
                candidates.append(self.path / best)
            candidates.append(self.final)
            candidates.extend(reversed(self.checkpoint_dirs()))
        elif checkpoint == "final":
            candidates.append(self.final)
        elif checkpoint == "last":
            candidates.extend(reversed(self.checkpoint_dirs()))
        else:
            candidates.append(self._inside(checkpoint))
        for candidate in candidates:
            if has_weights(candidate):
                return candidate
        looked = ", ".join(str(c.relative_to(self.path)) for c in candidates) or "nothing"
        raise HonedError(f"{self.path}: no weights for checkpoint '{checkpoint}' (looked in {looked}); "
                         "train first, or pass --checkpoint final / last / checkpoints/step-N")

    def _inside(self, relative: str) -> Path:
        """`relative` under the run directory; a path that leaves it is refused."""
        candidate = (self.path / relative).resolve()
        if not candidate.is_relative_to(self.path.resolve()):
            raise ConfigError(f"--checkpoint {relative}: must be inside {self.path}; "
                              "use best, final, last or checkpoints/step-N")
        return self.path / relative


def has_weights(folder: Path) -> bool:
    """True when `folder` holds safetensors weights (a LoRA adapter or a whole model)."""
    return (folder / "adapter_model.safetensors").is_file() or (folder / "model.safetensors").is_file() or any(
        folder.glob("model-*.safetensors")
    )
