"""Heavy per-example passes in chunks over forked worker processes (`data check`'s tokenizing and MinHash).

Workers are forked, so they inherit the items and the functions (a loaded tokenizer) instead of pickling
them; only the small per-chunk results travel back. `concurrent.futures` with the fork context: a worker
that dies raises BrokenProcessPool at once instead of leaving the caller waiting forever (as
`multiprocessing.Pool.imap` does).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from honed.errors import ConfigError

CHUNK = 1000  # items per worker task: large enough to amortise the process hop

_JOBS: list[tuple[Callable[[Sequence[Any]], list[Any]], Sequence[Any]]] = []  # read by forked workers


def _run_chunk(task: tuple[int, int, int]) -> list[Any]:
    job, start, stop = task
    func, items = _JOBS[job]
    return func(items[start:stop])


def _worker_setup() -> None:
    # One worker process per core; the tokenizer's own thread pool would only oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _bounds(count: int) -> list[tuple[int, int]]:
    return [(start, min(start + CHUNK, count)) for start in range(0, count, CHUNK)]


def default_workers() -> int:
    """Worker processes for the heavy passes: the usable cores (HONED_WORKERS overrides)."""
    if "HONED_WORKERS" in os.environ:
        value = os.environ["HONED_WORKERS"]
        if not value.strip().isdigit():
            raise ConfigError(f"HONED_WORKERS must be a whole number of processes, got {value!r}; e.g. 2")
        return max(1, int(value))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class Chunked:
    """Run functions over sequences in chunks of CHUNK on forked worker processes.

    `add` the jobs, `start()` them, do other work in this process meanwhile, then `collect(job)` each
    job's results in order. Workers are forked, so they inherit the items and functions (a loaded
    tokenizer) instead of pickling them; only the small per-chunk results travel back. With one worker,
    little work or no fork (Windows), `collect` runs the job in this process instead.

    >>> with Chunked(workers=2) as pool:
    ...     job = pool.add(lambda words: [len(w) for w in words], ["a", "bb", "ccc"])
    ...     pool.start()
    ...     pool.collect(job)
    [1, 2, 3]
    """

    def __init__(self, *, workers: int) -> None:
        self.workers = workers
        self.jobs: list[tuple[Callable[[Sequence[Any]], list[Any]], Sequence[Any]]] = []
        self.pending: list[Any] = []
        self.pool: Any = None

    def add(self, func: Callable[[Sequence[Any]], list[Any]], items: Sequence[Any]) -> int:
        self.jobs.append((func, items))
        return len(self.jobs) - 1

    def start(self) -> None:
        global _JOBS
        chunks = sum(len(_bounds(len(items))) for _, items in self.jobs)
        if self.workers <= 1 or chunks < 2 or "fork" not in multiprocessing.get_all_start_methods():
            return
        _JOBS = self.jobs  # set before the workers fork: they see it
        self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                        initializer=_worker_setup)
        for job, (_, items) in enumerate(self.jobs):  # queue everything now; workers go through it in order
            self.pending.append(self.pool.map(_run_chunk, [(job, a, b) for a, b in _bounds(len(items))]))

    def collect(self, job: int, advance: Callable[[int], None] = lambda n: None) -> list[Any]:
        func, items = self.jobs[job]
        bounds = _bounds(len(items))
        chunks = self.pending[job] if self.pool is not None else (func(items[a:b]) for a, b in bounds)
        results: list[Any] = []
        for (a, b), chunk in zip(bounds, chunks):
            results.extend(chunk)
            advance(b - a)
        return results

    def __enter__(self) -> Chunked:
        return self

    def __exit__(self, *exc: object) -> None:
        global _JOBS
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)  # every result was collected, or an error is on its way up
        _JOBS = []
