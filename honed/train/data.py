"""The run's data: read the train (and holdout) files, split a holdout off when none is given, record
exactly which files were used (data.json), and render the examples once for the loop.

Usage: `data = load_datasets(config, run_dir, write=True, log=print)`; then `len(data.train),
len(data.holdout), data.info.split.holdout_fraction` is e.g. (36, 4, 0.1) (renders with the model's
tokenizer: tests/unit/test_train_loop.py's test_run_directory_follows_the_contract reads data.json).
"""

from __future__ import annotations

import random

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from honed.config import DataSettings, TrainConfig
from honed.data.read import ColumnMapping, load_or_fail, sha256_file, write_jsonl
from honed.data.render import Rendered, render_batch
from honed.data.types import Conversation
from honed.errors import ConfigError, DataError
from honed.runs.rundir import DataRecord, FileEntry, MixRecord, RunDir, SplitRecord
from honed.train.batching import Example
from honed.train.guards import DataSummary, summarise


@dataclass(frozen=True)
class Datasets:
    """The conversations a run trains and evaluates on, and the record of where they came from."""

    train: list[Conversation]
    holdout: list[Conversation]
    info: DataRecord


def _file_entry(path: str | Path, count: int) -> FileEntry:
    return FileEntry(path=str(Path(path).resolve()), sha256=sha256_file(path), count=count)


def split_holdout(
    conversations: Sequence[Conversation], *, fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """The same deterministic, leak-free split as `honed data split` (near duplicates stay on one side,
    label-like data is stratified). `fraction` 0 means no holdout."""
    from honed.data.split import split_conversations

    if fraction <= 0:
        return list(conversations), []
    result = split_conversations(conversations, holdout_fraction=fraction, seed=seed)
    return result.train, result.holdout


def read_data(path: str, settings: DataSettings, *, log: Callable[[str], None]) -> list[Conversation]:
    """Read one data file as `honed data check` does; with skip_invalid, bad rows are set aside and counted."""
    columns = None
    if settings.prompt_col and settings.response_col:
        columns = ColumnMapping(settings.prompt_col, settings.response_col, system=settings.system,
                                system_col=settings.system_col)
    result = load_or_fail(path, fmt=settings.format, columns=columns, skip_invalid=settings.skip_invalid,
                          strict=settings.strict)
    if result.bad_rows:
        log(f"skipped {len(result.bad_rows)} invalid row(s) of {path}; they are in {result.invalid_path}")
    for notice in result.notices:
        log(f"warning: {path}: {notice}")
    if not result.conversations:
        raise DataError(f"{path}: no examples found; the file is empty")
    return result.conversations


def load_datasets(config: TrainConfig, run_dir: Path, *, write: bool, log: Callable[[str], None]) -> Datasets:
    """Read train (and holdout) data; split a holdout off train when none is given and say so.
    `write`: save the split to RUN_DIR/data/ (rank 0 only)."""
    if not config.data.train:
        raise ConfigError("data.train: no training data given; pass --data TRAIN.jsonl")
    train = read_data(config.data.train, config.data, log=log)
    if config.data.holdout:
        holdout = read_data(config.data.holdout, config.data, log=log)
        info = DataRecord(
            train=_file_entry(config.data.train, len(train)), holdout=_file_entry(config.data.holdout, len(holdout))
        )
        datasets = Datasets(train, holdout, info)
    else:
        datasets = _split_off_holdout(config, train, run_dir=run_dir, write=write, log=log)
    if config.data.mix_from and config.data.mix_ratio > 0:
        datasets = _mix_in(config, datasets, run_dir=run_dir, write=write, log=log)
    return datasets


def _mix_in(config: TrainConfig, datasets: Datasets, *, run_dir: Path, write: bool, log: Callable[[str], None]) -> Datasets:
    """Add `mix_ratio` x len(train) examples drawn (seeded) from `mix_from`; the combined training set is
    written to RUN_DIR/data/train.jsonl and recorded, so --resume reads exactly it."""
    settings = config.data
    old = read_data(str(settings.mix_from), settings.model_copy(update={"format": "auto", "prompt_col": None,
                                                                         "response_col": None}), log=log)
    count = min(len(old), round(settings.mix_ratio * len(datasets.train)))
    drawn = random.Random(settings.split_seed).sample(old, count)
    train = datasets.train + drawn
    log(f"mixed in {count} of the {len(old)} examples of {settings.mix_from} (ratio {settings.mix_ratio:g})")
    path = RunDir(run_dir).data_dir / "train.jsonl"
    if write:
        write_jsonl(path, train)
    info = datasets.info.model_copy(update={
        "train": _file_entry(path, len(train)) if write else None,
        "mixed": MixRecord(source=_file_entry(str(settings.mix_from), len(old)), count=count, ratio=settings.mix_ratio),
    })
    return Datasets(train, datasets.holdout, info)


def _split_off_holdout(
    config: TrainConfig, train: list[Conversation], *, run_dir: Path, write: bool, log: Callable[[str], None]
) -> Datasets:
    fraction, seed = config.data.holdout_fraction, config.data.split_seed
    train_part, holdout_part = split_holdout(train, fraction=fraction, seed=seed)
    data_dir = RunDir(run_dir).data_dir
    if holdout_part:
        log(
            f"no --holdout given: split {len(holdout_part)} of {len(train)} examples off as holdout "
            f"(fraction {fraction}, seed {seed}; written to {data_dir})"
        )
    else:
        log("no holdout (data.holdout_fraction is 0): no evaluation, no early stopping; final/ = the last weights")
    train_path, holdout_path = data_dir / "train.jsonl", data_dir / "holdout.jsonl"
    if write:
        write_jsonl(train_path, train_part)
        write_jsonl(holdout_path, holdout_part)
    info = DataRecord(
        train=_file_entry(train_path, len(train_part)) if write else None,
        holdout=_file_entry(holdout_path, len(holdout_part)) if write else None,
        split=SplitRecord(seed=seed, holdout_fraction=fraction, source=_file_entry(config.data.train, len(train))),
    )
    return Datasets(train_part, holdout_part, info)


def load_run_datasets(run_dir: Path, settings: DataSettings) -> Datasets:
    """On resume: read exactly the files recorded in data.json and check they have not changed."""
    run = RunDir(run_dir)
    if not run.data_json.is_file():
        raise DataError(f"{run.data_json} is missing: resume needs the data the run recorded there; restore the "
                        "file, or start the run again from scratch with --force (same --data)")
    info = run.read_data()
    parts: dict[str, list[Conversation]] = {}
    for name, entry in (("train", info.train), ("holdout", info.holdout)):
        if entry is None or entry.count == 0:  # holdout_fraction 0 writes an empty holdout file
            parts[name] = []
            continue
        if not Path(entry.path).is_file():
            raise DataError(
                f"{entry.path}: the run's {name} file is gone (recorded in data.json); resume needs the same "
                "data: restore the file or start a new run with another --out"
            )
        if sha256_file(entry.path) != entry.sha256:
            raise DataError(
                f"{entry.path} changed since the run started (sha256 differs from data.json); "
                "resume needs the same data: restore the file or start a new run with another --out"
            )
        parts[name] = read_data(entry.path, settings, log=lambda message: None)
    return Datasets(parts["train"], parts["holdout"], info)


def to_examples(
    conversations: Sequence[Conversation], tokenizer: Any, *, max_length: int
) -> tuple[list[Example], DataSummary, list[Rendered]]:
    """Render once; keep the examples with at least one target (indexed 0..n-1 in that order)."""
    rendered = render_batch(conversations, tokenizer, max_length=max_length)
    kept = [r for r in rendered if sum(r.loss_mask[1:]) > 0]
    examples = [Example(index=k, input_ids=r.input_ids, loss_mask=r.loss_mask) for k, r in enumerate(kept)]
    return examples, summarise(rendered), rendered
