"""The scheduler: one background thread that owns the models and decodes every accepted request.

HTTP handlers never touch a model. They `submit` a `Job` and read its events (`Delta` text, then
`Finished` or `Failed`) through the thread-safe `emit` callback they gave it. The thread loops:

    1. admit waiting jobs while fewer than `max_batch` are decoding (grouped by model and adapter;
       each group is prefilled together and joins that model's running batch: continuous batching);
    2. one decode step for every running batch: choose a token per row, stream its text, drop rows that
       finished (end-of-turn, a `stop` string, `max_tokens`, the context length) or were cancelled.

A job may carry a constraint state (a JSON schema, honed.model.constrain) and sampling settings with
penalties and logit_bias; the running batch applies them per row. A job that asks for log-probabilities
gets each token's `Pick` with the text it starts (`Delta.tokens`), and one that asks for its prompt's
(`/v1/completions` with echo) gets them first (`PromptScores`); `max_tokens` 0 ends it right after.

The waiting queue is bounded: `submit` raises `QueueFull` instead of letting a request wait forever. A
job whose client went away is cancelled and leaves the batch at the next step, freeing its slot. An
exception while decoding fails the jobs of that batch only; the server goes on.

The batches are transformers `RunningBatch`es; another runtime's engine subclasses `Engine` and only says
which batch decodes a model (`new_batch`, e.g. honed.serve.llamacpp's `LlamaBatch`), so the scheduling is one.

    engine = Engine(max_batch=32, max_queue=256); engine.start()
    engine.submit(Job(served=served, prompt_ids=ids, sampling=Sampling(max_tokens=64), emit=print))
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from honed.model.batch import Pick, Row, RunningBatch, Sampling, Scored
from honed.model.constrain import RowState
from honed.serve.limits import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE
from honed.serve.loading import ServedModel
from honed.serve.textstream import TextStream

log = logging.getLogger("honed.serve")


@dataclass(frozen=True)
class Delta:
    """New final text of the answer, and (when the job asks for log-probabilities) the tokens it starts."""

    text: str
    tokens: tuple[Pick, ...] = ()


@dataclass(frozen=True)
class PromptScores:
    """The prompt's tokens and their log-probabilities (asked with `Sampling.prompt_logprobs`)."""

    tokens: tuple[Scored, ...]


@dataclass(frozen=True)
class Finished:
    """The answer is complete. `completion_tokens` counts the end-of-turn token when it ended on one."""

    finish_reason: str  # "stop" or "length"
    text: str
    completion_tokens: int
    mean_logprob: float | None
    ttft_s: float | None


@dataclass(frozen=True)
class Failed:
    """Decoding failed after the job was accepted."""

    message: str


Event = Delta | PromptScores | Finished | Failed


class QueueFull(Exception):
    """Too many requests are waiting; the caller should answer 429."""


class ShuttingDown(QueueFull):
    """The server is stopping and takes no new work; the caller should answer 503."""


@dataclass(eq=False)
class Job:
    """One accepted request as the scheduler sees it."""

    served: ServedModel
    prompt_ids: list[int]
    sampling: Sampling
    emit: Callable[[Event], None]
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    constraint: RowState | None = None  # e.g. a JSON schema's matcher for this answer
    logprobs: bool = False  # send each token's Pick with its Delta
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)
    # decoding state, owned by the scheduler thread
    completion_tokens: int = 0
    logprob_sum: float = 0.0
    first_token_at: float | None = None
    text: TextStream | None = None
    picks: list[Pick] = field(default_factory=list)  # the tokens of the answer, when logprobs is asked
    sent: int = 0  # picks already sent with a Delta

    def cancel(self) -> None:
        """Ask the scheduler to drop this job at its next step (the client went away)."""
        self.cancelled.set()


class Engine:
    """The background decoding thread and its bounded queue of waiting jobs."""

    name = "torch"  # which request parameters it implements: honed.serve.schemas.ENGINE_PARAMS

    def __init__(self, *, max_batch: int = DEFAULT_MAX_BATCH, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._waiting: deque[Job] = deque()
        self._wake = threading.Condition()
        self._batches: dict[tuple[int, str | None], RunningBatch] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.running = 0  # jobs decoding now (read by metrics; written by the scheduler thread only)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="honed-engine", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop the thread; jobs still waiting or decoding get `Failed` (the HTTP server drains first)."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue a job, or raise QueueFull when `max_queue` jobs are already waiting."""
        with self._wake:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            self._waiting.append(job)
            self._wake.notify()

    # ---- the scheduler thread ------------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while self._wait_for_work():
                self._admit()
                for batch in list(self._batches.values()):
                    if batch.rows:
                        self._step(batch)
                self.running = sum(len(b) for b in self._batches.values())
        self._fail_everything("the server is shutting down")

    def _wait_for_work(self) -> bool:
        """Block until there is something to do; False when stopping."""
        with self._wake:
            while not self._stopping and not self._waiting and not self.running:
                self._wake.wait()
            return not self._stopping

    def _take(self) -> list[Job]:
        with self._wake:
            taken: list[Job] = []
            while self._waiting and self.running + len(taken) < self.max_batch:
                job = self._waiting.popleft()
                if not job.cancelled.is_set():
                    taken.append(job)
            return taken

    def new_batch(self, served: ServedModel) -> RunningBatch:
        """The empty running batch that decodes `served`'s model (a subclass gives its runtime's batch)."""
        return RunningBatch(served.model, pad_id=served.pad_id)

    def _admit(self) -> None:
        groups: dict[tuple[int, str | None], list[Job]] = {}
        for job in self._take():
            groups.setdefault((id(job.served.model), job.served.adapter), []).append(job)
        for key, jobs in groups.items():
            if key not in self._batches:
                self._batches[key] = self.new_batch(jobs[0].served)
            batch = self._batches[key]
            if not batch.can_join():  # a cache layout that cannot grow a batch: wait until it is empty
                with self._wake:
                    self._waiting.extendleft(reversed(jobs))
                continue
            for job in jobs:
                # An end of turn of several tokens is a stop string (honed.model.stops), matched on the text.
                turn_end = [] if job.ignore_eos else list(job.served.stops.strings)
                job.text = TextStream(job.served.tokenizer, stop=[*job.stop, *turn_end])
            self._select(jobs[0].served)
            rows = [Row(prompt_ids=job.prompt_ids, sampling=job.sampling, payload=job, constraint=job.constraint)
                    for job in jobs]
            try:
                batch.admit(rows)
            except Exception as exc:  # e.g. out of memory on a long prompt: those jobs fail, others go on
                log.exception("prefill failed on the %s engine", self.name)
                for job in jobs:
                    job.emit(Failed(f"generation failed: {type(exc).__name__}: {exc}"))
                continue
            self.running += len(jobs)
            self._after_prefill(batch, rows)

    def _after_prefill(self, batch: RunningBatch, rows: list[Row]) -> None:
        """Send prompt scores where asked; a job with max_tokens 0 (scoring only) is done right here."""
        for row in rows:
            if row.prompt_scores is not None:
                row.payload.emit(PromptScores(tuple(row.prompt_scores)))
        if any(row.sampling.max_tokens == 0 for row in rows):
            keep = [row.sampling.max_tokens > 0 or self._finish(row.payload, "length") for row in batch.rows]
            batch.keep(keep)

    @staticmethod
    def _select(served: ServedModel) -> None:
        if served.adapter is not None:
            served.model.set_adapter(served.adapter)

    def _step(self, batch: RunningBatch) -> None:
        """One token for every row of `batch`; finished and cancelled rows leave it."""
        self._select(batch.rows[0].payload.served)
        try:
            picks = batch.choose()
            keep = [self._accept(row.payload, pick) for row, pick in zip(batch.rows, picks)]
            batch.keep(keep)
            if batch.rows:
                batch.advance()
        except Exception as exc:
            log.exception("decode step failed")
            for row in batch.rows:
                row.payload.emit(Failed(f"generation failed: {type(exc).__name__}: {exc}"))
            batch.keep([False] * len(batch.rows))

    def _accept(self, job: Job, pick: Pick) -> bool:
        """Record one chosen token of `job`; False when the job is done (or cancelled)."""
        token, logprob = pick.token, pick.logprob
        if job.cancelled.is_set():
            return False
        assert job.text is not None
        job.completion_tokens += 1
        job.logprob_sum += logprob
        if job.first_token_at is None:
            job.first_token_at = time.perf_counter()
        if token in job.served.stop_ids and not job.ignore_eos:
            return self._finish(job, "stop")
        if job.logprobs:
            job.picks.append(pick)
        delta, hit_stop = job.text.push(token)
        if hit_stop:
            return self._finish(job, "stop", delta=delta)
        tokens = self._release(job, job.text.released())
        if delta or tokens:
            job.emit(Delta(delta, tokens))
        total = len(job.prompt_ids) + job.completion_tokens
        if job.completion_tokens >= job.sampling.max_tokens or total >= job.served.context_length:
            return self._finish(job, "length")
        return True

    @staticmethod
    def _release(job: Job, upto: int) -> tuple[Pick, ...]:
        """The picks up to `upto` not sent yet (marked sent)."""
        if upto <= job.sent:
            return ()
        tokens, job.sent = tuple(job.picks[job.sent:upto]), upto
        return tokens

    def _finish(self, job: Job, reason: str, *, delta: str = "") -> bool:
        """Send the rest of the answer and `Finished`. Cut by a stop string, the tokens whose text starts
        at or after the cut are not part of the answer; otherwise every token is."""
        assert job.text is not None
        rest = delta + job.text.flush()
        tokens = self._release(job, job.text.released() if job.text.stopped else len(job.picks))
        if rest or tokens:
            job.emit(Delta(rest, tokens))
        mean = job.logprob_sum / job.completion_tokens if job.completion_tokens else None
        ttft = job.first_token_at - job.submitted_at if job.first_token_at is not None else None
        job.emit(Finished(reason, job.text.text, job.completion_tokens, mean, ttft))
        return False

    def _fail_everything(self, message: str) -> None:
        with self._wake:
            waiting, self._waiting = list(self._waiting), deque()
        for job in waiting:
            job.emit(Failed(message))
        for batch in self._batches.values():
            for row in batch.rows:
                row.payload.emit(Failed(message))
        self._batches.clear()
        self.running = 0
