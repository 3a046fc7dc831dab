"""Progress of labelled passes (one per evaluated system, one per monitor stage) on stderr.

On a terminal: a rich bar per label, cleared when done. Anywhere else (a log file, CI, a pipe): plain
lines, one at a label's first update, then at most every PLAIN_INTERVAL_S seconds and one when it finishes, so
a log shows life at least that often while the passes advance (`honed train` does the same for its steps).
Progress goes to stderr, so `--json` output on stdout stays one JSON document.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from rich.console import Console

from honed.train.metrics_log import PLAIN_INTERVAL_S, clock_text


class PassProgress:
    """An `on_progress(label, done, total)` callback, used as a context manager around the passes.

    >>> import io
    >>> ticks = iter([0.0, 10.0, 40.0, 45.0])
    >>> with PassProgress(Console(file=io.StringIO()), clock=lambda: next(ticks)) as on_progress:
    ...     for done in (32, 64, 100):
    ...         on_progress("tuned", done, 100)
    ...     print(on_progress.console.file.getvalue())
    tuned 32/100  elapsed 0:00:10  eta 0:00:21
    tuned 64/100  elapsed 0:00:40  eta 0:00:22
    tuned 100/100  elapsed 0:00:45  eta 0:00:00
    """

    def __init__(self, console: Console, *, prefix: str = "", interval_s: float = PLAIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.prefix, self.interval_s, self.clock = console, prefix, interval_s, clock
        self.bars: Any = None
        self.tasks: dict[str, Any] = {}
        self.started: dict[str, float] = {}  # label -> when its pass began (the previous one's end)
        self.mark = self.last_line = 0.0

    def __enter__(self) -> PassProgress:
        if self.console.is_terminal:
            from rich.progress import Progress

            self.bars = Progress(console=self.console, transient=True)
            self.bars.start()
        self.mark = self.last_line = self.clock()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.bars is not None:
            if label not in self.tasks:
                self.tasks[label] = self.bars.add_task(self.prefix + label, total=total)
            self.bars.update(self.tasks[label], completed=done)
            return
        now = self.clock()
        first = label not in self.started
        if first:
            self.started[label] = self.mark
        if first or done >= total or now - self.last_line >= self.interval_s:
            self.last_line = now
            self.console.print(self.line(label, done, total, now=now), markup=False, highlight=False, soft_wrap=True)
        if done >= total:
            self.mark = now

    def line(self, label: str, done: int, total: int, *, now: float) -> str:
        """The plain line: label, done/total, time on this label and the estimated time left."""
        elapsed = now - self.started[label]
        eta = elapsed / done * (total - done) if done > 0 else 0.0
        return f"{self.prefix}{label} {done}/{total}  elapsed {clock_text(elapsed)}  eta {clock_text(eta)}"
