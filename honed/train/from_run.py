"""`honed train --from-run RUN --data more.jsonl`: the next version of a model, continued from a run.

The new run starts from the parent's best weights (its LoRA adapter, or its whole model for full
fine-tuning), keeps the parent's settings unless the command line changes them, evaluates on the parent's
holdout by default (so `honed compare PARENT NEW` pairs the same examples), can mix in a share of the
parent's training data against forgetting (`--mix-old 0.5`: half as many old examples as new ones), and
records the parent in run.json (`parent`), config.yaml and the registry (`honed runs list` shows it).

Usage: `load_config(None, base=parent_config(RunDir("runs/support"), mix_ratio=0.5), flags={"data.train":
"more.jsonl"})` (the parent must be a finished run: tests/unit/test_runs.py continues one through
`honed train --from-run`).
"""

from __future__ import annotations

from typing import Any

from honed.errors import ConfigError
from honed.runs.rundir import RunDir

# What a continued run does not inherit: the data, the amount of training, and where the last one started.
NOT_INHERITED = ("epochs", "max_steps", "init_from", "parent_run")


def parent_config(parent: RunDir, *, mix_ratio: float = 0.0, checkpoint: str = "best") -> dict[str, Any]:
    """The parent's resolved config fields as the base of the new one, pointed at the parent's weights; how
    the parent's data files were read (format, columns, system prompt) is not inherited."""
    parent.require_run()
    record = parent.read_run()
    if record.status != "completed":
        raise ConfigError(f"--from-run {parent.path}: the run never finished (status {record.status}); "
                          f"finish it with `honed train --out {parent.path} --resume` first")
    config = {k: v for k, v in parent.config_fields().items() if k not in NOT_INHERITED}
    data = dict(config["data"])
    for key in ("train", "holdout", "mix_from", "mix_ratio", "format", "prompt_col", "response_col", "system",
                "system_col"):
        data.pop(key, None)
    if parent.data_json.is_file() and (parent.read_data().holdout or parent.data_dir.joinpath("holdout.jsonl").is_file()):
        data["holdout"] = str(parent.holdout_file().resolve())
    if mix_ratio > 0:
        old = parent.train_file()
        if old is None:
            raise ConfigError(f"--mix-old: the parent's training file is gone ({parent.data_json}); restore it or drop --mix-old")
        data.update({"mix_from": str(old.resolve()), "mix_ratio": mix_ratio})
    config["data"] = data
    config["init_from"] = str(parent.resolve_checkpoint(checkpoint).resolve())
    config["parent_run"] = str(parent.path.resolve())
    return config
