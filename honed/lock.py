"""One writer per run directory: an exclusive lock held by the process that changes it.

`honed train` (and `--resume`) hold it for the whole run; a second writer is refused with the owner's pid,
host, command and start time. The lock is `fcntl.flock` on RUN/.lock, so the kernel drops it when the
process exits however it dies, and `is_locked` tells a reader whether a run that says "running" still
has its process (`honed runs list` shows "stale" otherwise).

>>> with RunDir("runs/a").lock("train"):  # doctest: +SKIP
...     ...
"""

from __future__ import annotations

import fcntl
import json
import os
import socket

from honed.errors import ConfigError
from honed.rundir import RunDir, now_iso


class RunLock:
    """An exclusive lock on a run directory, held by the process that writes it (train, resume, export).

    The lock is `fcntl.flock` on RUN_DIR/.lock, so the kernel releases it when the process exits, however
    it dies; the file also names the owner (pid, host, command, start time) for the message a second
    writer gets. `is_locked` tells a reader (`runs list`) whether a "running" run still has its process.

    >>> with RunDir("runs/a").lock("train"):  # doctest: +SKIP
    ...     ...
    """

    def __init__(self, run: RunDir, command: str) -> None:
        self.run, self.command = run, command
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            self.run.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.run.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"{self.run.path}: cannot write here ({exc.strerror or exc}); "
                              "choose an --out in a folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"{self.run.path} is in use: {lock_owner(self.run)}; wait for it to finish or "
                              "stop that process, then try again") from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "since": now_iso()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def lock_owner(run: RunDir) -> str:
    """Who holds (or last held) the lock, in words: 'honed train, pid 123 on host h since ...'."""
    try:
        owner = json.loads(run.lock_file.read_text(encoding="utf-8"))
        return f"honed {owner['command']}, pid {owner['pid']} on host {owner['host']} since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another honed process"


def is_locked(run: RunDir) -> bool:
    """True when a live process holds the run's lock (on this host; a lock is per machine)."""
    if not run.lock_file.is_file():
        return False
    fd = os.open(run.lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the probe's own lock when it got one
    return False
