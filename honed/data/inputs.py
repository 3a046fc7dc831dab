"""What a data argument names -> the files to read, each checked before a byte of it is parsed.

    files = input_files("data/")                 # a folder of shards: every data file in it, sorted
    files = input_files("shards/train-*.jsonl")  # a glob
    files = input_files("hf_saved/")             # a `datasets.save_to_disk` folder: its .arrow files

Each file must be a regular file (a FIFO, /dev/zero or a socket would hang or never end), at most
`max_bytes()` long (HONED_MAX_DATA_BYTES, default 16 GiB), and not a Git LFS pointer (a 130-byte text
file standing in for data that was never downloaded). Every refusal is a DataError saying which path and
what to do.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from honed.errors import DataError

SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
}
GLOB_CHARS = frozenset("*?[")
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
DEFAULT_MAX_BYTES = 16 << 30
# Files in a data folder that are not data: save_to_disk metadata and honed's own side files.
NOT_DATA = ("dataset_info.json", "state.json", "dataset_dict.json")
SIDE_FILE = ".invalid.jsonl"
SPLIT_NAMES = ("train", "test", "validation", "valid", "val", "dev", "eval", "holdout")


def max_bytes() -> int:
    """The largest data file honed reads (HONED_MAX_DATA_BYTES): a bound for inputs that never end."""
    raw = os.environ.get("HONED_MAX_DATA_BYTES", "")
    if not raw:
        return DEFAULT_MAX_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise DataError(
            f"HONED_MAX_DATA_BYTES={raw!r} is not a positive whole number of bytes; fix or unset it"
        )
    return int(raw)


def input_files(spec: str | Path) -> list[Path]:
    """The data files a path, folder or glob names, sorted; DataError when it names none.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     for name in ("part-1.jsonl", "part-0.jsonl", "dataset_info.json"):
    ...         _ = (Path(folder) / name).write_text("{}\\n")
    ...     [p.name for p in input_files(folder)]
    ['part-0.jsonl', 'part-1.jsonl']
    """
    path = Path(spec)
    if not path.exists() and GLOB_CHARS & set(str(spec)):
        return _glob_files(str(spec))
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        return _folder_files(path)
    check_regular(path)
    return [path]


def _glob_files(pattern: str) -> list[Path]:
    matched = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    files = [p for p in matched if p.is_file() and _is_data(p)]
    if not files:
        found = f" (it matched {len(matched)} paths, none a data file)" if matched else ""
        raise DataError(
            f"{pattern}: the pattern matches no data file{found}; check it (quote it in the shell)"
        )
    for file in files:
        check_regular(file)
    return files


def _folder_files(folder: Path) -> list[Path]:
    """Every data file under a folder; a save_to_disk folder's own list of .arrow files when it is one."""
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise DataError(
            f"{folder}: a saved DatasetDict with splits {', '.join(splits) or '(none)'}; "
            f"pass one split's folder, e.g. {folder / (splits[0] if splits else 'train')}"
        )
    state = folder / "state.json"
    if state.is_file():
        return _saved_dataset_files(folder, state)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _is_data(p) and not _hidden(p, folder))
    if not files:
        raise DataError(
            f"{folder}: a folder with no data files (.jsonl, .json, .csv, .tsv, .parquet, .arrow) "
            "in it; pass a data file, or the folder that holds the shards"
        )
    kinds = {SUFFIXES[p.suffix.lower()] for p in files}
    if len(kinds) > 1:
        raise DataError(
            f"{folder}: holds data files of different types ({', '.join(sorted(kinds))}); "
            f"pass a glob such as '{folder}/*.{sorted(kinds)[0]}' to pick one"
        )
    splits = sorted({_split_of(p, folder) for p in files} - {None})
    if len(splits) > 1:
        raise DataError(
            f"{folder}: holds several splits ({', '.join(splits)}); reading them together would mix "
            f"them, so pass one: e.g. '{folder}/{splits[-1]}*' or its folder"
        )
    for file in files:
        check_regular(file)
    return files


def _split_of(path: Path, root: Path) -> str | None:
    """The split a shard belongs to by Hugging Face naming: `train-00000-of-00002.parquet`, `test/x.jsonl`."""
    for part in path.relative_to(root).parts:
        word = part.lower().replace("_", "-").replace(".", "-").split("-")[0]
        if word in SPLIT_NAMES:
            return word
    return None


def _saved_dataset_files(folder: Path, state: Path) -> list[Path]:
    """The arrow shards a `datasets.save_to_disk` folder lists in its state.json, in order."""
    try:
        names = [entry["filename"] for entry in json.loads(state.read_text(encoding="utf-8"))["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{state}: not a readable datasets state.json ({exc}); save the dataset again"
        ) from None
    files = [folder / name for name in names]
    for file in files:
        if not file.is_file():
            raise DataError(f"{file}: listed in {state} but missing; save the dataset again")
        check_regular(file)
    return files


def _is_data(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES and path.name not in NOT_DATA and not path.name.endswith(SIDE_FILE)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def check_regular(path: Path) -> None:
    """Refuse what is not a regular file (FIFO, device, socket) and Git LFS pointers, before reading."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read the file ({exc.strerror or exc}); check its permissions"
        ) from None
    if not stat.S_ISREG(mode):
        what = (
            "a named pipe (FIFO)"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise DataError(f"{path}: is {what}, not a data file; save the data to a file first and pass that")
    try:
        with open(path, "rb") as f:
            head = f.read(len(LFS_POINTER))
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read the file ({exc.strerror or exc}); check its permissions"
        ) from None
    if head == LFS_POINTER:
        raise DataError(
            f"{path}: this is a Git LFS pointer, not the data; run `git lfs pull` in its repository"
        )


def read_bytes(path: Path) -> bytes:
    """The file's bytes, refusing a file larger than `max_bytes()` (read at most one byte more)."""
    limit = max_bytes()
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DataError(
            f"{path}: larger than {limit:,} bytes (HONED_MAX_DATA_BYTES); split it into shards "
            "in a folder, or raise the limit"
        )
    return data


def content_hash(spec: str | Path) -> str:
    """sha256 of a data input: the file's bytes, or for a folder/glob of each file's path and bytes in order.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (Path(folder) / "train.jsonl").write_text("hello\\n")
    ...     content_hash(Path(folder) / "train.jsonl") == hashlib.sha256(b"hello\\n").hexdigest()
    True
    """
    files = input_files(spec)
    if len(files) == 1 and Path(spec) == files[0]:
        return _file_hash(files[0], hashlib.sha256())
    digest = hashlib.sha256()
    folder = Path(spec) if Path(spec).is_dir() else None
    for file in files:
        # Names relative to the folder (a glob: the file name): a moved or re-resolved input hashes the same.
        name = str(file.relative_to(folder)) if folder is not None else file.name
        digest.update(name.encode("utf-8") + b"\0")
        _file_hash(file, digest)
    return digest.hexdigest()


def _file_hash(path: Path, digest: Any) -> str:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
