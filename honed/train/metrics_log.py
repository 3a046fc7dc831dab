"""What a run tells as it goes: metrics.jsonl (one JSON object per step and evaluation) and the progress
of the optimizer steps on the console.

Progress: a rich bar on a terminal; when the console is not one (a log file, CI), a plain line for the
first step, then at least every `interval_s` seconds (30 by default), and for the last step:

    step 12/18  loss 5.9404  953 tok/s  elapsed 0:00:11  eta 0:00:05

A step, a holdout evaluation or a checkpoint save may itself take longer than that (a large vocabulary on a
busy CPU): a heartbeat thread then says what is going on, so a log never goes quiet for more than
`interval_s` seconds:

    ... still training step 13/57 (elapsed 0:06:40)
    ... still evaluating the holdout (elapsed 0:07:12)

>>> import io, tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     MetricsLog(Path(folder) / "metrics.jsonl", enabled=True).write({"step": 1, "loss": 2.3})
...     (Path(folder) / "metrics.jsonl").read_text()
'{"step": 1, "loss": 2.3}\\n'
>>> out, now = io.StringIO(), [0.0]  # a file, not a terminal (plain lines), and a clock
>>> progress = TrainProgress(Console(file=out), total=18, start_step=0, clock=lambda: now[0],
...                          heartbeat_s=None)  # no heartbeat thread
>>> with progress:
...     now[0] = 2.0
...     progress.update(1, loss=2.3, tokens_per_s=950.0)
>>> print(out.getvalue(), end="")
step 1/18  loss 2.3000  950 tok/s  elapsed 0:00:02  eta 0:00:34
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from honed.atomic import write_text_atomic

PLAIN_INTERVAL_S = 30.0


class MetricsLog:
    """metrics.jsonl: one JSON object per line, flushed as written (rank 0 only)."""

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` (written by a run killed after its last checkpoint) and torn lines."""
        if not self.enabled or not self.path.is_file():
            return
        kept: list[str] = []
        for line in self.path.read_text(encoding="utf-8").split("\n"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        write_text_atomic(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def clock_text(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(seconds)))


class TrainProgress:
    """Progress of the optimizer steps `start_step + 1 .. total`: a rich bar on a terminal, else plain
    lines (first step, every `interval_s` seconds, last step, and a heartbeat line whenever `interval_s`
    passes without one: `phase` says what the run is doing then). Silent when not `enabled` (ranks > 0).
    `heartbeat_s`: how often the heartbeat thread looks (None: no thread; tests call `beat`)."""

    def __init__(
        self,
        console: Console,
        *,
        total: int,
        start_step: int,
        enabled: bool = True,
        interval_s: float = PLAIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_s: float | None = 1.0,
    ) -> None:
        self.console, self.total, self.start_step = console, total, start_step
        self.enabled, self.interval_s, self.clock, self.heartbeat_s = enabled, interval_s, clock, heartbeat_s
        self.started = self.last_line = clock()
        self.bar: Any = None
        self.task: Any = None
        self.step = start_step  # the last finished step
        self.doing = "training"  # what the heartbeat says the run is doing (see `phase`)
        self._lock = threading.Lock()  # the heartbeat thread and the loop both print
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TrainProgress:
        if self.enabled and self.console.is_terminal:
            self.bar = self._rich_bar()
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.total, completed=self.start_step, loss="-", tps="-")
        self.started = self.last_line = self.clock()
        if self.enabled and self.bar is None and self.heartbeat_s is not None:
            self._thread = threading.Thread(target=self._heartbeat, name="honed-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.bar is not None:
            self.bar.stop()

    def start_clock(self) -> None:
        """Count elapsed time and the eta from now (after the evaluation before training)."""
        with self._lock:
            self.started = self.last_line = self.clock()

    @contextlib.contextmanager
    def phase(self, doing: str) -> Iterator[None]:
        """Name what the run does inside the block ("evaluating the holdout") for the heartbeat lines."""
        before, self.doing = self.doing, doing
        try:
            yield
        finally:
            self.doing = before

    def _heartbeat(self) -> None:
        assert self.heartbeat_s is not None
        while not self._stop.wait(self.heartbeat_s):
            self.beat()

    def beat(self) -> None:
        """Print a heartbeat line if `interval_s` passed since the last line (plain mode only)."""
        if not self.enabled or self.bar is not None:
            return
        with self._lock:
            now = self.clock()
            if now - self.last_line < self.interval_s:
                return
            self.last_line = now
            doing = f"{self.doing} step {self.step + 1}/{self.total}" if self.doing == "training" else self.doing
            self.console.print(f"... still {doing} (elapsed {clock_text(now - self.started)})", markup=False,
                               highlight=False)

    def _rich_bar(self) -> Any:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (
            TextColumn("step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        return Progress(*columns, console=self.console)

    def update(self, step: int, *, loss: float, tokens_per_s: float) -> None:
        """Step `step` is done, with this loss and throughput."""
        if not self.enabled:
            return
        self.step = step
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", tps=f"{tokens_per_s:.0f}")
            return
        with self._lock:
            now = self.clock()
            if step == self.start_step + 1 or step == self.total or now - self.last_line >= self.interval_s:
                self.last_line = now
                self.console.print(self.line(step, loss=loss, tokens_per_s=tokens_per_s, now=now), markup=False,
                                   highlight=False)

    def line(self, step: int, *, loss: float, tokens_per_s: float, now: float) -> str:
        """The plain progress line: step, loss, tokens/s, elapsed and the estimated time left."""
        elapsed = now - self.started
        done = step - self.start_step
        eta = elapsed / done * (self.total - step) if done > 0 else 0.0
        return (
            f"step {step}/{self.total}  loss {loss:.4f}  {tokens_per_s:.0f} tok/s  "
            f"elapsed {clock_text(elapsed)}  eta {clock_text(eta)}"
        )
