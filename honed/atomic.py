"""Atomic writes: a reader (or a process killed mid-write) sees the old file or folder or the whole new one.

Every file or folder honed writes goes through here:

    write_text_atomic(path, text)          temp file in the same folder, fsync, rename over `path`
    write_json_atomic(path, obj)           the same, as indented JSON
    with atomic_folder(target) as tmp:     fill `tmp`; on success it is fsynced and swapped in for `target`
        ...                                (an existing `target` is replaced whole); on error `tmp` is removed

Same-folder temp names keep the rename on one file system, where `os.replace` is atomic.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from honed.errors import DiskError

# The write failures a user fixes outside honed (free space, permissions), as errno -> what to say.
DISK_ERRORS = {
    errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied", errno.EPERM: "permission denied",
}


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the whole new one, never half.

    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_text_atomic(Path(folder) / "note.txt", "hello\\n")
    ...     (Path(folder) / "note.txt").read_text()
    'hello\\n'
    """
    path = Path(path)
    with disk_errors(path):
        _write_text(path, text)


@contextlib.contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Disk full, read-only or permission errors while writing `path` become one DiskError naming it.

    >>> with disk_errors(Path("runs/a/final")):
    ...     raise OSError(errno.ENOSPC, "No space left on device")
    Traceback (most recent call last):
    honed.errors.DiskError: runs/a/final: cannot write (disk full); nothing was half-written; ...
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        raise DiskError(f"{path}: cannot write ({DISK_ERRORS[exc.errno]}); nothing was half-written; "
                        f"free space or fix the permissions of {path.parent}, then run the command again") from None


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600); the file should be like any other
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """`obj` as indented JSON (keys in insertion order), written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def fsync_folder(folder: Path) -> None:
    """Flush every file directly in `folder` to disk (before the folder is renamed into place)."""
    for path in folder.iterdir():
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())


def replace_folder(tmp: Path, target: Path, *, old_prefix: str = ".") -> None:
    """Swap the complete folder `tmp` in for `target` (which may exist: it is moved aside as
    `<old_prefix>old-<name>` and removed only once `tmp` is in place, so a kill never loses both)."""
    old = target.with_name(f"{old_prefix}old-{target.name}")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(target: str | Path, *, prefix: str | None = None) -> Iterator[Path]:
    """A temp folder beside `target` to fill; on success it replaces `target` whole, on error it is removed.

    `prefix` starts the names of the temp folder and of the old `target` while it is being removed
    (default `.`), so a reader that lists `target.parent` can tell complete folders from temp ones.

    >>> with tempfile.TemporaryDirectory() as runs:
    ...     with atomic_folder(Path(runs) / "final") as tmp:
    ...         _ = (tmp / "weights.safetensors").write_bytes(b"...")
    ...     [p.relative_to(runs).as_posix() for p in Path(runs).rglob("*")]
    ['final', 'final/weights.safetensors']
    """
    target = Path(target)
    with disk_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix or f".{target.name}-", dir=target.parent))
    try:
        with disk_errors(target):
            tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); the folder should be like any other
            yield tmp
            fsync_folder(tmp)
            replace_folder(tmp, target, old_prefix=prefix or ".")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
