"""Where a run's time goes: wall seconds per phase, kept in run.json (`timings`) and said at the end.

Phases: `start` (process start to the training call: Python, imports, the CLI), `data` (read, split,
config.yaml), `render` (tokenizer and the examples' token ids and masks), `model` (load, LoRA), `steps`
(forward, backward, optimizer), `evaluations` (holdout, before training and on the evaluator's cadence),
`checkpoints` (saves and `final/`), and `total` (process start to the end of training). The next speed
change targets the largest row; the benchmarks read the same numbers.

>>> timings = Timings()
>>> with timings.phase("steps"):
...     pass
>>> sorted(timings.seconds)
['steps']
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PHASES = ("start", "data", "render", "model", "steps", "evaluations", "checkpoints")


def process_started_at() -> float:
    """This process's start as time.time(): from Linux's /proc (field 22 of /proc/self/stat, in clock ticks
    after boot), else when honed was imported (the imports are then counted, the interpreter's start not)."""
    try:
        after_boot = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + after_boot / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        import honed

        return honed.IMPORTED_AT


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)
    began: float = field(default_factory=process_started_at)  # time.time() at process start

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the block's wall time to phase `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def mark_start(self) -> None:
        """The training call begins now: the time since the process started is the `start` phase."""
        self.seconds["start"] = max(0.0, time.time() - self.began)

    def record(self) -> dict[str, float]:
        """run.json's `timings`: every phase measured and the total so far, in seconds (3 decimals)."""
        out = {name: round(self.seconds[name], 3) for name in PHASES if name in self.seconds}
        out["total"] = round(time.time() - self.began, 3)
        return out

    def line(self) -> str:
        """One line for the log: each phase's seconds and share of the total."""
        record = self.record()
        total = max(record["total"], 1e-9)
        parts = [f"{name} {seconds:.1f} s ({100 * seconds / total:.0f}%)" for name, seconds in record.items()
                 if name != "total"]
        return f"time {record['total']:.1f} s: " + ", ".join(parts)
