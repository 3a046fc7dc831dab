"""One writer per run directory: an exclusive lock held by the process that changes it.

`honed train` (and `--resume`) hold it for the whole run; a second writer is refused with the owner's pid,
host, command and start time. The lock is `fcntl.flock` on RUN/.lock, so the kernel drops it when the
process exits however it dies, and `is_locked` tells a reader whether a run that says "running" still
has its process (`honed runs list` shows "stale" otherwise).

>>> import tempfile
>>> from honed.runs.rundir import RunDir
>>> with tempfile.TemporaryDirectory() as folder:
...     run = RunDir(folder)
...     with run.lock("train"):
...         held = is_locked(run), owner_alive(run), read_owner(run)["command"]
...     held, is_locked(run)
((True, True, 'train'), False)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from honed.errors import ConfigError

class Lockable(Protocol):
    """What the lock needs of a run directory (honed.runs.rundir.RunDir): its folder and its lock file."""

    @property
    def path(self) -> Path: ...

    @property
    def lock_file(self) -> Path: ...


def now_iso() -> str:
    """The current UTC time as ISO 8601 to the second, as every record stores it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


HEARTBEAT_S = 30.0  # how often a writer refreshes its heartbeat
STALE_AFTER_S = 150.0  # a run owned by another host is stale after this long without one (5 missed beats)
RECORD_BYTES = 256  # the owner record is padded to this size, so a rewrite never leaves a longer tail


class RunLock:
    """An exclusive lock on a run directory, held by the process that writes it (train, resume, export).

    The lock is `fcntl.flock` on RUN_DIR/.lock, so the kernel releases it when the process exits, however
    it dies; the file also names the owner (pid, host, command, start time) for the message a second
    writer gets. `is_locked` tells a reader (`runs list`) whether a "running" run still has its process.

    >>> import tempfile
    >>> from honed.runs.rundir import RunDir
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with RunDir(folder).lock("train"):
    ...         RunDir(folder).lock("export").acquire()
    Traceback (most recent call last):
    honed.errors.ConfigError: ... is in use: honed train, pid ... on host ... since ...; wait for it to finish or stop that process, then try again
    """

    def __init__(self, run: Lockable, command: str) -> None:
        self.run, self.command = run, command
        self._fd: int | None = None
        self._owner: dict[str, Any] = {}
        self._guard = threading.Lock()  # the heartbeat thread and release() share the descriptor

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
        self._owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "since": now_iso()}
        os.ftruncate(fd, 0)  # the last owner's record may be longer than ours
        self._fd = fd
        self.beat()

    def beat(self) -> None:
        """Record that the owner is alive now (`heartbeat`), for readers on other hosts, where the pid and
        the flock say nothing. Written in place (one pwrite of a fixed-size, space-padded record): renaming
        a new file over .lock would give it a new inode that nobody holds, letting a second writer in."""
        with self._guard:
            if self._fd is None:
                return
            record = (json.dumps({**self._owner, "heartbeat": now_iso()}) + "\n").encode()
            os.pwrite(self._fd, record.ljust(max(RECORD_BYTES, len(record))), 0)

    def release(self) -> None:
        with self._guard:
            if self._fd is not None:
                os.close(self._fd)  # closing the descriptor drops the flock
                self._fd = None

    @contextlib.contextmanager
    def beating(self, *, every_s: float = HEARTBEAT_S) -> Iterator[None]:
        """Refresh the heartbeat every `every_s` seconds from a daemon thread while the block runs (a thread,
        so a long evaluation or checkpoint save between two steps does not make the run look dead)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                self.beat()

        thread = threading.Thread(target=loop, name="honed-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)


def read_owner(run: Lockable) -> dict[str, Any] | None:
    """The owner record of the lock file (pid, host, command, since, heartbeat), or None if unreadable."""
    try:
        owner = json.loads(run.lock_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def lock_owner(run: Lockable) -> str:
    """Who holds (or last held) the lock, in words: 'honed train, pid 123 on host h since ...'."""
    owner = read_owner(run)
    try:
        return f"honed {owner['command']}, pid {owner['pid']} on host {owner['host']} since {owner['since']}"  # type: ignore[index]
    except (KeyError, TypeError):
        return "another honed process"


def heartbeat_age(owner: dict[str, Any], *, now: datetime | None = None) -> float | None:
    """Seconds since the owner's last heartbeat (None when it recorded none)."""
    try:
        beat = datetime.fromisoformat(str(owner["heartbeat"]))
    except (KeyError, ValueError):
        return None
    return ((now or datetime.now(timezone.utc)) - beat).total_seconds()


def owner_alive(run: Lockable) -> bool:
    """Whether the process that owns the run is still there. On this host the kernel knows (the flock is
    held, or not); for a run owned by another host (a shared file system) only the heartbeat can tell.

    >>> import tempfile
    >>> from honed.runs.rundir import RunDir
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     owner_alive(RunDir(folder))  # no lock file: nobody writes it
    False
    """
    owner = read_owner(run)
    if owner is not None and owner.get("host") not in (None, socket.gethostname()):
        age = heartbeat_age(owner)
        return age is not None and age < STALE_AFTER_S
    return is_locked(run)


def is_locked(run: Lockable) -> bool:
    """True when a live process holds the run's lock (on this host; a lock is per machine)."""
    if not run.lock_file.is_file():
        return False
    try:
        fd = os.open(run.lock_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the probe's own lock when it got one
    return False
